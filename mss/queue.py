"""The relay queue: mail for other operators of the trust space, durable in the database.

A delivery with recipients at another operator's domain writes one `queue_message` row per
remote domain (with its `queue_recipient` rows) in the SAME transaction as its local copies
(`enqueue` never commits: it runs inside `Store.write(..., then=...)`), so a message that
got `250` is in the queue even if the process is killed right after.

The relay worker (mss.relay) then leases due entries: a lease names its owner (a node) and
lasts `[relay] lease_s`; an entry leased by a node that died comes back when the lease runs
out. On PostgreSQL the lease is `UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP
LOCKED)`, so several nodes share the queue without waiting on each other's rows; SQLite has
one writer at a time and the same conditional UPDATE is atomic there. Either way two leases
never hand out the same entry.

Every entry's content is encrypted at rest with the queue key (mss.queue_key): the clear
message (`end_to_end=False`: no certificate of the remote recipients was known) and S/MIME
content alike, whose outer header would otherwise show its Subject and `X-` fields in a dump.
Each lease carries a random token; only the attempt holding it may record its outcome.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import defer

from crypto.dates import as_utc
from mss.config import Settings
from mss.db.models import QueueMessage, QueueRecipient
from mss.queue_key import QueueKey
from mss.records import MailDsn, RcptDsn

log = logging.getLogger("mss.queue")

__all__ = [
    "OutboundMessage",
    "OutboundRecipient",
    "QueueBusy",
    "QueueEntry",
    "QueuedRecipient",
    "RecipientResult",
    "RelayQueue",
]

#: Content above this size is encrypted and decrypted off the event loop.
_OFFLOAD = 256 * 1024
#: Longest reply / error text kept (a peer's multi-line reply can be long).
_MAX_TEXT = 2000


@dataclass(frozen=True)
class OutboundRecipient:
    address: str
    dsn: RcptDsn | None = None


@dataclass(frozen=True)
class OutboundMessage:
    """One message for one remote domain of one delivery, as `mss.outbound.prepare` made it."""

    domain: str  # IDNA lower-case
    mail_from: str  # "" for a DSN (null reverse-path)
    recipients: tuple[OutboundRecipient, ...]
    content: bytes  # exactly the bytes to send (Received, DKIM-Signature on top)
    #: True: content is S/MIME to the remote recipients' certificates; False: a clear
    #: message, encrypted at rest by the queue.
    end_to_end: bool
    dsn: MailDsn | None = None
    arrival: datetime | None = None  # when this operator accepted it (DSN Arrival-Date)


@dataclass(frozen=True)
class QueuedRecipient:
    id: int
    address: str
    orcpt: str | None
    notify: frozenset[str] | None  # None: NOTIFY not given; empty: NOTIFY=NEVER
    state: Literal["pending", "sent", "failed"]
    last_reply: str | None


@dataclass(frozen=True)
class QueueEntry:
    id: int
    created_at: datetime
    mail_from: str
    domain: str
    envid: str | None
    ret: str | None
    size: int
    end_to_end: bool
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    delay_notified: bool
    lease_owner: str | None
    lease_until: datetime | None
    recipients: tuple[QueuedRecipient, ...]
    #: When this operator accepted the message (DSN Arrival-Date); None for rows without it.
    arrival: datetime | None = None
    #: The token of the lease this entry was handed out under (`lease`), for `finish_attempt`.
    lease_token: str | None = None


@dataclass(frozen=True)
class RecipientResult:
    state: Literal["sent", "failed", "pending"]
    reply: str  # "250 2.0.0 Ok" / "550 5.1.1 ..." / "connection refused"


# -- helpers --------------------------------------------------------------------------------


def _utc(dt: datetime | None) -> datetime:
    """An aware UTC datetime: SQLite keeps no offset and compares the stored text, so every
    value written is UTC and every value read (naive on SQLite) is UTC."""
    return as_utc(dt).astimezone(UTC) if dt is not None else datetime.now(UTC)


def _opt_utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else as_utc(dt).astimezone(UTC)


def encode_notify(notify: frozenset[str] | None) -> str | None:
    """RFC 3461 4.1 NOTIFY as the column keeps it: NULL (not given), "NEVER", or a comma list."""
    if notify is None:
        return None
    if not notify:
        return "NEVER"
    return ",".join(sorted(n.upper() for n in notify))


def decode_notify(value: str | None) -> frozenset[str] | None:
    if value is None:
        return None
    if value.upper() == "NEVER":
        return frozenset()
    return frozenset(v.strip().upper() for v in value.split(",") if v.strip())


def _clip(text: str | None) -> str | None:
    return None if text is None else text[:_MAX_TEXT]


def _entry(row: QueueMessage, recipients: Sequence[QueueRecipient]) -> QueueEntry:
    return QueueEntry(
        id=row.id,
        created_at=_utc(row.created_at),
        mail_from=row.mail_from,
        domain=row.domain,
        envid=row.envid,
        ret=row.ret,
        size=row.size,
        end_to_end=row.end_to_end,
        attempts=row.attempts,
        next_attempt_at=_utc(row.next_attempt_at),
        last_error=row.last_error,
        delay_notified=row.delay_notified,
        lease_owner=row.lease_owner,
        lease_until=_opt_utc(row.lease_until),
        recipients=tuple(
            QueuedRecipient(
                id=r.id,
                address=r.address,
                orcpt=r.orcpt,
                notify=decode_notify(r.notify),
                state=r.state,  # type: ignore[arg-type]
                last_reply=r.last_reply,
            )
            for r in sorted(recipients, key=lambda r: r.id)
        ),
        arrival=_opt_utc(row.arrival),
        lease_token=row.lease_token,
    )


async def _entries(s: AsyncSession, ids: Sequence[int] | None = None) -> list[QueueEntry]:
    """The entries with these ids (all when None), in queue order (next attempt, then id)."""
    # Never the content: listing a large backlog must not read every message into memory.
    q = (
        select(QueueMessage)
        .options(defer(QueueMessage.content))
        .order_by(QueueMessage.next_attempt_at, QueueMessage.id)
    )
    if ids is not None:
        if not ids:
            return []
        q = q.where(QueueMessage.id.in_(ids))
    rows = list((await s.execute(q)).scalars().all())
    if not rows:
        return []
    rq = select(QueueRecipient).where(QueueRecipient.message_id.in_([r.id for r in rows]))
    by_message: dict[int, list[QueueRecipient]] = {}
    for rc in (await s.execute(rq)).scalars().all():
        by_message.setdefault(rc.message_id, []).append(rc)
    return [_entry(r, by_message.get(r.id, [])) for r in rows]


# -- the queue ------------------------------------------------------------------------------


class QueueBusy(Exception):
    """The entry is leased by a relay worker that may be sending it right now."""


class RelayQueue:
    """The relay queue over the database (see the module doc)."""

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.sessions = sessions
        #: Set by whoever committed new entries (Delivery, after its commit): wakes the worker.
        self.wakeup = asyncio.Event()
        self._key: QueueKey | None = None

    # -- the key ---------------------------------------------------------------------------

    def key(self) -> QueueKey:
        """The queue key, read (or made, 0600) on first use."""
        if self._key is None:
            self._key = QueueKey.load_or_create(self.settings.path(self.settings.relay.queue_key))
        return self._key

    async def _seal(self, clear: bytes) -> bytes:
        key = self.key()
        if len(clear) > _OFFLOAD:
            return await asyncio.to_thread(key.seal, clear)
        return key.seal(clear)

    async def _open(self, blob: bytes) -> bytes:
        key = self.key()
        if len(blob) > _OFFLOAD:
            return await asyncio.to_thread(key.open, blob)
        return key.open(blob)

    # -- writing -----------------------------------------------------------------------------

    async def enqueue(
        self, s: AsyncSession, messages: Sequence[OutboundMessage], *, now: datetime | None = None
    ) -> builtins.list[int]:
        """Add `messages` inside the caller's open transaction (never commits: the entries
        exist exactly when the caller's delivery does). Returns the new entry ids. The caller
        sets `wakeup` after its commit."""
        now = _utc(now)
        ids: builtins.list[int] = []
        for m in messages:
            if not m.recipients:
                raise ValueError(f"queue entry for {m.domain} without recipients")
            content = await self._seal(m.content)
            row = QueueMessage(
                created_at=now,
                mail_from=m.mail_from,
                domain=m.domain.lower(),
                envid=m.dsn.envid if m.dsn else None,
                ret=m.dsn.ret if m.dsn else None,
                content=content,
                end_to_end=m.end_to_end,
                size=len(m.content),
                attempts=0,
                next_attempt_at=now,
                lease_owner=None,
                lease_until=None,
                last_error=None,
                delay_notified=False,
                arrival=_utc(m.arrival) if m.arrival is not None else now,
            )
            s.add(row)
            await s.flush()
            s.add_all(
                QueueRecipient(
                    message_id=row.id,
                    address=r.address,
                    orcpt=r.dsn.orcpt if r.dsn else None,
                    notify=encode_notify(r.dsn.notify) if r.dsn else None,
                    state="pending",
                    last_reply=None,
                )
                for r in m.recipients
            )
            ids.append(row.id)
        if messages:
            await s.flush()
        return ids

    async def lease(self, owner: str, limit: int, *, now: datetime | None = None) -> builtins.list[QueueEntry]:
        """Take up to `limit` due entries for `owner` until now + `[relay] lease_s`.

        Due: `next_attempt_at <= now` and not leased, or its lease ran out. One statement
        picks and marks the rows; on PostgreSQL the picking subquery is `FOR UPDATE SKIP
        LOCKED` (rows another node is leasing right now are passed over, not waited for),
        and the outer condition is checked again on the locked rows."""
        if limit <= 0:
            return []
        now = _utc(now)
        until = now + timedelta(seconds=self.settings.relay.lease_s)
        due = (QueueMessage.next_attempt_at <= now) & or_(
            QueueMessage.lease_until.is_(None), QueueMessage.lease_until < now
        )
        async with self.sessions() as s, s.begin():
            pick = (
                select(QueueMessage.id).where(due).order_by(QueueMessage.next_attempt_at, QueueMessage.id).limit(limit)
            )
            if s.get_bind().dialect.name == "postgresql":
                pick = pick.with_for_update(skip_locked=True)
            stmt = (
                update(QueueMessage)
                .where(QueueMessage.id.in_(pick.scalar_subquery()), due)
                .values(lease_owner=owner, lease_until=until, lease_token=secrets.token_hex(16))
                .returning(QueueMessage.id)
                .execution_options(synchronize_session=False)
            )
            ids = list((await s.execute(stmt)).scalars().all())
            entries = await _entries(s, ids)
        if entries:
            log.debug("leased %d queue entries for %s until %s", len(entries), owner, until.isoformat())
        return entries

    async def release(self, owner: str) -> int:
        """Give back every lease `owner` holds: a node that restarts (after a crash, kill -9
        included) takes its entries up again at once instead of waiting for `[relay] lease_s`.
        Safe because one node runs one serving process (`mss serve` holds a pid-file lock)."""
        async with self.sessions() as s, s.begin():
            result = await s.execute(
                update(QueueMessage)
                .where(QueueMessage.lease_owner == owner)
                .values(lease_owner=None, lease_until=None, lease_token=None)
                .execution_options(synchronize_session=False)
            )
        released = int(getattr(result, "rowcount", 0) or 0)
        if released:
            log.info("released %d queue leases of %s (left by an earlier run of this node)", released, owner)
        return released

    async def content(self, entry_id: int) -> bytes:
        """The bytes to send for an entry (decrypted when stored encrypted at rest);
        `LookupError` when the entry is gone."""
        async with self.sessions() as s:
            row = (
                await s.execute(
                    select(QueueMessage.content, QueueMessage.end_to_end).where(QueueMessage.id == entry_id)
                )
            ).one_or_none()
        if row is None:
            raise LookupError(f"no queue entry {entry_id}")
        blob, _ = row
        return await self._open(bytes(blob))

    async def finish_attempt(
        self,
        entry_id: int,
        owner: str,
        results: Mapping[int, RecipientResult],
        *,
        retry_at: datetime | None,
        error: str | None = None,
        delay_notified: bool | None = None,
        token: str | None = None,
    ) -> QueueEntry | None:
        """Record one attempt of `owner` on the entry it leased: each recipient's outcome
        (by `QueuedRecipient.id`), attempts + 1, the next attempt at `retry_at`, the lease
        released. The entry is removed when no recipient is pending any more.

        Returns the entry as it is now; None when it was removed, or when `owner` does not
        hold its lease (another node took it after this one's lease ran out, or an operator
        deleted it): nothing is changed then."""
        async with self.sessions() as s, s.begin():
            q = select(QueueMessage).options(defer(QueueMessage.content))
            q = q.where(QueueMessage.id == entry_id, QueueMessage.lease_owner == owner)
            if token is not None:
                q = q.where(QueueMessage.lease_token == token)
            if s.get_bind().dialect.name == "postgresql":
                q = q.with_for_update()
            row = (await s.execute(q)).scalar_one_or_none()
            if row is None:
                log.info("queue entry %s: attempt of %s not recorded (lease lost or entry gone)", entry_id, owner)
                return None
            recipients = list(
                (await s.execute(select(QueueRecipient).where(QueueRecipient.message_id == entry_id))).scalars().all()
            )
            for rc in recipients:
                res = results.get(rc.id)
                if res is not None:
                    rc.state = res.state
                    rc.last_reply = _clip(res.reply)
            row.attempts += 1
            row.lease_owner = None
            row.lease_until = None
            row.lease_token = None
            row.last_error = _clip(error)
            if delay_notified is not None:
                row.delay_notified = delay_notified
            if retry_at is not None:
                row.next_attempt_at = _utc(retry_at)
            if not any(rc.state == "pending" for rc in recipients):
                await s.execute(delete(QueueRecipient).where(QueueRecipient.message_id == entry_id))
                await s.execute(delete(QueueMessage).where(QueueMessage.id == entry_id))
                return None
            await s.flush()
            return _entry(row, recipients)

    # -- the operator's commands (mss queue ...) ---------------------------------------------

    async def list(self) -> builtins.list[QueueEntry]:
        """Every entry, in queue order."""
        async with self.sessions() as s:
            return await _entries(s)

    async def get(self, entry_id: int) -> QueueEntry | None:
        async with self.sessions() as s:
            found = await _entries(s, [entry_id])
        return found[0] if found else None

    async def retry(self, entry_id: int | None = None, *, now: datetime | None = None) -> int:
        """Make an entry (None: every entry) due now; returns how many were. A leased entry
        keeps its lease (its worker's outcome decides what comes next)."""
        now = _utc(now)
        async with self.sessions() as s, s.begin():
            stmt = update(QueueMessage).values(next_attempt_at=now)
            if entry_id is not None:
                stmt = stmt.where(QueueMessage.id == entry_id)
            result = await s.execute(stmt.execution_options(synchronize_session=False))
            count = result.rowcount or 0
        if count:
            self.wakeup.set()
        return count

    async def delete(self, entry_id: int, *, force: bool = False, now: datetime | None = None) -> QueueEntry | None:
        """Remove an entry and return it as it was (None: no such entry). The caller sends
        the sender its failure DSN (`mss queue delete`); fetch `content` first.

        An entry a relay worker is sending right now (its lease runs) is refused with
        `QueueBusy` unless `force`: its sender would be told "failed" for recipients the peer
        may be accepting at this moment."""
        now = _utc(now)
        async with self.sessions() as s, s.begin():
            found = await _entries(s, [entry_id])
            if not found:
                return None
            leased = found[0].lease_until
            if not force and leased is not None and leased >= now:
                raise QueueBusy(f"queue entry {entry_id} is being relayed by {found[0].lease_owner} right now")
            await s.execute(delete(QueueRecipient).where(QueueRecipient.message_id == entry_id))
            await s.execute(delete(QueueMessage).where(QueueMessage.id == entry_id))
        log.info("queue entry %s deleted", entry_id)
        return found[0]

    async def stats(self, *, now: datetime | None = None) -> dict[str, int | float | None]:
        """Counts for `mss queue stats` and monitoring: entries, recipients still pending,
        entries leased right now, due now, deferred (tried at least once), end-to-end
        encrypted, bytes queued, and the age in seconds of the oldest entry."""
        now = _utc(now)
        async with self.sessions() as s:
            m = QueueMessage
            row = (
                await s.execute(
                    select(
                        func.count(m.id),
                        func.coalesce(func.sum(m.size), 0),
                        func.min(m.created_at),
                        func.count(m.id).filter(m.lease_until.is_not(None), m.lease_until >= now),
                        func.count(m.id).filter(
                            m.next_attempt_at <= now, or_(m.lease_until.is_(None), m.lease_until < now)
                        ),
                        func.count(m.id).filter(m.attempts > 0),
                        func.count(m.id).filter(m.end_to_end.is_(True)),
                    )
                )
            ).one()
            pending = (
                await s.execute(select(func.count(QueueRecipient.id)).where(QueueRecipient.state == "pending"))
            ).scalar_one()
        entries, size, oldest, leased, due, deferred, e2e = row
        return {
            "entries": int(entries),
            "recipients": int(pending),
            "leased": int(leased),
            "due": int(due),
            "deferred": int(deferred),
            "end_to_end": int(e2e),
            "bytes": int(size),
            "oldest_age_s": (now - _utc(oldest)).total_seconds() if oldest is not None else None,
        }
