"""What leaves this operator for another one: one `OutboundMessage` per remote domain.

Called by `mss.delivery` inside a delivery (and by `Delivery.send_report` for DSNs), before
the queue entry is written in the transaction that answers `250`. Three steps, in this order:

1. **End to end when possible.** When the local directory knows an encryption certificate
   for *every* recipient of that domain (`LocalDirectory.encryption_certificates`, the
   remote professionals' certificates imported from the national directory), the protected
   payload (built once per delivery, `mss.sealing.Sealable`) is encrypted to all of them:
   the peer receives S/MIME it stores as it came, and nobody between the sender's client and
   the recipient's key reads it (`end_to_end=True`). A message that came already encrypted
   leaves as it came. Otherwise the message leaves in clear over mutual TLS and the peer
   encrypts it at its ingest (`end_to_end=False`; the queue encrypts it at rest meanwhile).
   One recipient without a known certificate makes the whole domain's copy clear: a single
   copy per domain is sent, and it must be readable by each of its recipients.
2. **DKIM** (RFC 6376) with every key of the signing domain under `[dkim] directory`
   (`mss dkim keygen`: RSA and/or Ed25519, RFC 8463 suggests both), *after* sealing: the
   signature covers the bytes that are sent.
3. **Received** (RFC 5321 4.4) for the hop the message came to us by (the submission).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from annuaire.local import LocalDirectory
from crypto import dkim as dkim_keys
from mss.config import Settings
from mss.message import ParsedMessage
from mss.policy import domain_of
from mss.queue import OutboundMessage, OutboundRecipient
from mss.records import MailDsn, TraceInfo
from mss.sealing import Sealable, Sealer
from mss.trace import new_id, received_field

__all__ = ["clear_key_cache", "prepare", "signing_keys"]

log = logging.getLogger("mss.outbound")

#: Loaded DKIM keys per (key directory, domain), with the directory's state when read: a
#: key added by `mss dkim keygen` on a running node is picked up at the next message.
_KEYS: dict[tuple[Path, str], tuple[tuple[float, ...], tuple[dkim_keys.DkimKey, ...]]] = {}
#: Domains already warned about (no key): once per process, not once per message.
_WARNED: set[str] = set()


def clear_key_cache() -> None:
    _KEYS.clear()
    _WARNED.clear()


def signing_keys(settings: Settings, domain: str) -> tuple[dkim_keys.DkimKey, ...]:
    """Every DKIM key of `domain`: ``<[dkim] directory>/<domain>/<selector>.key``, the
    selector being the file name. Read once and cached (re-read when the folder changes)."""
    folder = settings.path(settings.dkim.directory) / domain
    try:
        paths = sorted(folder.glob("*.key"))
        stamp = tuple(p.stat().st_mtime for p in paths)
    except OSError:
        paths, stamp = [], ()
    cached = _KEYS.get((folder, domain))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    keys: list[dkim_keys.DkimKey] = []
    for path in paths:
        try:
            keys.append(dkim_keys.load(path, domain, path.stem))
        except (OSError, ValueError) as exc:
            log.error("DKIM key %s cannot be used: %s", path, exc)
    if not keys and domain not in _WARNED:
        _WARNED.add(domain)
        log.warning(
            "no DKIM key for %s under %s: mail to other operators leaves unsigned (run `mss dkim keygen %s`)",
            domain,
            folder,
            domain,
        )
    _KEYS[(folder, domain)] = (stamp, tuple(keys))
    return tuple(keys)


def _sign(content: bytes, keys: Sequence[dkim_keys.DkimKey]) -> bytes:
    """The DKIM-Signature fields of every key, on top of `content` (each signature covers
    the message without the others: RFC 6376 5.4 signs the header fields it names)."""
    signatures = b""
    for key in keys:
        try:
            signatures += dkim_keys.sign(content, key)
        except Exception as exc:  # noqa: BLE001 - one bad key must not stop the mail
            log.error("DKIM signing with %s failed: %s", key.record_name, exc)
    return signatures + content


async def _remote_certificates(sessions: async_sessionmaker[AsyncSession], addresses: Sequence[str]) -> list | None:
    """The certificates of every address, or None when one of them has none.

    Another operator's professional is no mailbox here: its certificates are the directory's
    `remote_certificate` rows (the national directory publishes them), valid now (an expired
    key never receives new mail)."""
    now = datetime.now(UTC)
    certs = []
    async with sessions() as s:
        directory = LocalDirectory(s)
        for address in addresses:
            found = await directory.encryption_certificates(address)
            if not found:
                found = await directory.remote_certificates(address, at=now)
            if not found:
                return None
            certs += found
    return certs


async def prepare(
    *,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    sealer: Sealer,
    domain: str,
    mail_from: str,
    recipients: Sequence[OutboundRecipient],
    message: ParsedMessage,
    sealable: Sealable | None = None,
    trace: TraceInfo | None = None,
    dsn: MailDsn | None = None,
    arrival: datetime | None = None,
    queue_id: str | None = None,
) -> OutboundMessage:
    """The copy of `message` for `recipients`, all at `domain` (see the module docstring).

    `sealable` is the delivery's prepared message (`Sealer.prepare`), reused so that header
    protection happens once per delivery; `trace` the hop it came by (None for a message
    made here, e.g. a DSN); `queue_id` the id written in the `Received:` field and the log.
    """
    addresses = [r.address for r in recipients]
    if message.encrypted:  # encrypted by its sender's client: it leaves as it came
        content, end_to_end = message.raw, True
    else:
        certs = await _remote_certificates(sessions, addresses)
        if certs:
            sealable = sealable or await sealer.prepare(message)
            content, _ = await sealer.seal(domain, sealable, certs)
            end_to_end = True
        else:
            content, end_to_end = message.raw, False
    signer = domain_of(message.from_addresses[0]) if message.from_addresses else settings.domain
    keys = signing_keys(settings, signer)
    if keys:
        content = await asyncio.to_thread(_sign, content, keys)
    received = received_field(
        trace,
        by=settings.domain,
        recipient=addresses[0] if len(addresses) == 1 else None,
        id=queue_id or new_id(),
    )
    log.info(
        "outbound prepared domain=%s rcpts=%d end_to_end=%s dkim=%s",
        domain,
        len(addresses),
        end_to_end,
        ",".join(k.selector for k in keys) or "none",
    )
    return OutboundMessage(
        domain=domain,
        mail_from=mail_from,
        recipients=tuple(recipients),
        content=received + content,
        end_to_end=end_to_end,
        dsn=dsn,
        arrival=arrival or datetime.now(UTC),
    )
