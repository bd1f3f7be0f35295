"""Mail another operator relays to this one (a SERV principal on the `mta` listener), before
it is stored like any mail: loop detection, DKIM verification, the result recorded.

`accept` is called by `mss.delivery.Delivery.deliver` first for a SERV principal:

- **Loop** (RFC 5321 6.3): a message with `[relay] max_hops` `Received:` fields or more is
  refused (`554 5.4.6`, RFC 3463 3.5), before anything else costs anything.
- **DKIM** (RFC 6376 6) every DKIM-Signature is verified (dkimpy; `crypto.dkim` makes the
  keys). Peer public keys come from `[relay] dkim_keys` (tests, the demo, closed networks),
  else from DNS TXT at ``<s>._domainkey.<d>`` (dnspython). Hashing a large message and
  asking DNS both block, so the whole verification runs in a worker thread.
- **Authentication-Results** (RFC 8601): fields that claim this operator's authserv-id
  (`settings.domain`) already are forgeries and are removed (RFC 8601 5); ours is prepended
  with the results: ``dkim=pass|fail|none|permerror|temperror`` and, per signature,
  ``header.d`` / ``header.s`` / ``header.b`` (RFC 8601 2.7.1, RFC 6008 for header.b).
- **Received** (RFC 5321 4.4) for this hop.
- `[relay] refuse_dkim_fail`: a message with signatures none of which passes
  (`fail`, or `permerror`: an unusable signature or key) is refused `550 5.7.20`
  (RFC 7372 3.1, "no passing DKIM signature found"). An unsigned message (`dkim=none`) and
  a DNS failure (`temperror`) are delivered with their result recorded: refusing them would
  refuse every operator that does not sign yet, or every message during a DNS outage.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dkim

from crypto.rfc5322 import TooManyFields, scan
from mss.config import Settings
from mss.principal import Principal
from mss.records import TraceInfo
from mss.refusals import Reason, Refusal
from mss.trace import hop_count, new_id, received_field

__all__ = ["DkimResult", "accept", "authentication_results", "dkim_results", "strip_forged_results"]

log = logging.getLogger("mss.inbound")

#: dkimpy logs every failed verification at ERROR; ours is the one line of `accept`.
_DKIMPY_LOG = logging.getLogger("mss.inbound.dkimpy")
_DKIMPY_LOG.setLevel(logging.CRITICAL)

#: dnspython's lifetime for one TXT query (dkimpy passes its own timeout, 5 s by default).
DNS_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class DkimResult:
    """One signature's verdict (RFC 8601 2.7.1)."""

    result: str  # pass, fail, permerror, temperror (none: no signature, no DkimResult)
    domain: str = ""
    selector: str = ""
    b: str = ""  # the first characters of the signature, to tell signatures apart (RFC 6008)
    reason: str = ""


class _Keys:
    """dkimpy's `dnsfunc`: the configured table (`[relay] dkim_keys`) when there is one,
    and then only it (a closed network, the tests: no DNS query leaves), else DNS TXT.
    Remembers whether DNS failed (temperror) as opposed to the key being absent (permerror)."""

    def __init__(self, table: dict[str, str]) -> None:
        self._table = {k.strip().lower().rstrip("."): v for k, v in table.items()}
        self.dns_failed = False

    def __call__(self, name: bytes | str, timeout: float = DNS_TIMEOUT_S) -> bytes | None:
        text = (name.decode("ascii", "replace") if isinstance(name, bytes) else name).lower().rstrip(".")
        if self._table:
            value = self._table.get(text)
            return value.encode() if value is not None else None
        return self._dns(text, timeout)

    def _dns(self, name: str, timeout: float) -> bytes | None:
        import dns.exception
        import dns.resolver

        try:
            answer = dns.resolver.resolve(name, "TXT", lifetime=timeout or DNS_TIMEOUT_S)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.exception.DNSException as exc:
            log.warning("DKIM key %s: DNS lookup failed: %s", name, exc)
            self.dns_failed = True
            return None
        for rr in answer:  # RFC 6376 3.6.2.2: the strings of one record are concatenated
            return b"".join(rr.strings)
        return None


#: Messages larger than this have their header scanned in a worker thread.
_IN_THREAD = 256 * 1024

#: Signatures verified per message (RFC 6376 6.1 lets a verifier bound them).
MAX_SIGNATURES = 5


def dkim_results(raw: bytes, dnsfunc: Callable[..., bytes | None]) -> list[DkimResult]:
    """Verify every DKIM-Signature of `raw` (blocking: hashing and DNS). Empty: unsigned.

    `dnsfunc(name, timeout=...)` returns a key record's TXT value (dkimpy's contract); a
    `_Keys` also tells a DNS failure (temperror) from a missing key (permerror)."""
    count = sum(1 for f in scan(raw).fields if f.key == "dkim-signature")
    results: list[DkimResult] = []
    # RFC 6376 6.1: a verifier MAY limit the signatures it checks. Each one re-hashes the
    # whole message (and may cost a DNS look-up): without a bound, one message with a
    # thousand signatures would hold a worker thread for minutes.
    for idx in range(min(count, MAX_SIGNATURES)):
        if isinstance(dnsfunc, _Keys):
            dnsfunc.dns_failed = False
        d = dkim.DKIM(raw, logger=_DKIMPY_LOG)
        try:
            ok = d.verify(idx=idx, dnsfunc=dnsfunc)
        except Exception as exc:  # noqa: BLE001 - dkimpy and its crypto back ends (nacl) alike
            if not isinstance(exc, dkim.DKIMException):
                ids = _ids(d.signature_fields or {})
                results.append(DkimResult("permerror", *ids, reason=f"unverifiable signature ({type(exc).__name__})"))
                continue
            ids = _ids(d.signature_fields or {})
            if "body hash mismatch" in str(exc):  # RFC 6376 6.1.3: the body changed
                results.append(DkimResult("fail", *ids, reason="body hash did not verify"))
            else:  # an unparseable, expired or incomplete signature (RFC 6376 6.1.1)
                results.append(DkimResult("permerror", *ids, reason=_reason(exc)))
            continue
        ids = _ids(d.signature_fields or {})
        algorithm = (d.signature_fields or {}).get(b"a", b"")
        if ok and algorithm == b"rsa-sha1":  # RFC 8301 3.1: not to be considered valid
            results.append(DkimResult("fail", *ids, reason="rsa-sha1 is not accepted"))
        elif ok:
            results.append(DkimResult("pass", *ids))
        elif isinstance(dnsfunc, _Keys) and dnsfunc.dns_failed:
            results.append(DkimResult("temperror", *ids, reason="key lookup failed"))
        elif getattr(d, "pk", None) is None:
            results.append(DkimResult("permerror", *ids, reason="no key for the signature"))
        else:
            results.append(DkimResult("fail", *ids, reason="signature did not verify"))
    return results


def _reason(exc: Exception) -> str:
    """The first words of dkimpy's message, printable, for the A-R comment."""
    return re.sub(r"[^ -~]", "", str(exc).split(" got ")[0])[:80]


def _ids(sig: dict) -> tuple[str, str, str]:
    def text(key: bytes) -> str:
        v = sig.get(key, b"")
        return re.sub(rb"[^A-Za-z0-9._+/=-]", b"", v).decode("ascii") if isinstance(v, bytes) else ""

    return text(b"d").lower(), text(b"s"), text(b"b")[:12]


def authentication_results(authserv_id: str, results: Sequence[DkimResult]) -> bytes:
    """``Authentication-Results: <authserv-id>; dkim=...`` CRLF (RFC 8601 2.2), one
    resinfo per signature, folded one per line."""
    if not results:
        parts = ["dkim=none"]
    else:
        parts = []
        for r in results:
            text = f"dkim={r.result}"
            if r.reason:
                text += " (" + re.sub(r"[()\\\r\n]", "", r.reason) + ")"
            props = [f"header.d={r.domain}" if r.domain else "", f"header.s={r.selector}" if r.selector else ""]
            props.append(f"header.b={r.b}" if r.b else "")
            text += "".join(f" {p}" for p in props if p)
            parts.append(text)
    return (f"Authentication-Results: {authserv_id};\r\n\t" + ";\r\n\t".join(parts) + "\r\n").encode()


def _authserv_id(value: bytes) -> bytes:
    """The authserv-id of an Authentication-Results value: its first value, comments
    (nested ones too, RFC 5322 3.2.2) and white space skipped, a quoted-string unquoted
    (RFC 8601 2.2: authserv-id is a value, i.e. a token or a quoted-string, then ";")."""
    out = bytearray()
    depth = 0
    quoted = escaped = False
    for c in value.replace(b"\r\n", b" "):
        ch = bytes((c,))
        if escaped:
            escaped = False
            if depth == 0:
                out += ch
            continue
        if ch == b"\\":
            escaped = True
            continue
        if quoted:
            if ch == b'"':
                quoted = False
            else:
                out += ch
            continue
        if depth:
            depth += ch == b"("
            depth -= ch == b")"
            continue
        if ch == b"(":
            depth = 1
        elif ch == b'"':
            quoted = True
        elif ch == b";" or (ch.isspace() and out):
            break
        elif not ch.isspace():
            out += ch
    return bytes(out).strip().lower().rstrip(b".")


def strip_forged_results(raw: bytes, authserv_id: str) -> tuple[bytes, int]:
    """`raw` without the Authentication-Results fields that claim `authserv_id` (RFC 8601
    5: a receiver MUST remove such fields that arrived from outside, or a sender could
    claim results this operator never found); returns the message and how many went."""
    section = scan(raw)
    ours = authserv_id.lower().encode()
    forged = [
        f for f in section.fields if f.key == "authentication-results" and _authserv_id(f.raw.split(b":", 1)[1]) == ours
    ]
    if not forged:
        return raw, 0
    drop = {f.start for f in forged}
    head = b"".join(f.terminated for f in section.fields if f.start not in drop)
    return head + b"\r\n" + section.body, len(forged)


async def accept(
    raw: bytes,
    *,
    settings: Settings,
    principal: Principal,
    trace: TraceInfo | None,
    recipients: Sequence[str] = (),
) -> bytes:
    """The message another operator relays, with this hop's trace and DKIM results on top;
    raises `Refusal` (MAIL_LOOP, DKIM_FAILED). See the module docstring."""
    big = len(raw) > _IN_THREAD  # header scans of a large message run off the event loop
    try:
        hops = await asyncio.to_thread(hop_count, raw) if big else hop_count(raw)
    except TooManyFields as exc:
        raise Refusal(Reason.MALFORMED_MESSAGE, f"Message header has more than {exc.limit} fields") from exc
    if hops >= settings.relay.max_hops:
        raise Refusal(
            Reason.MAIL_LOOP,
            f"Too many hops ({hops} Received fields): mail loop detected",
            f"operator {principal.identifier}: {hops} hops >= {settings.relay.max_hops}",
        )
    keys = _Keys(settings.relay.dkim_keys)
    results = await asyncio.to_thread(dkim_results, raw, keys)
    verdict = ",".join(f"{r.result}:{r.domain}" for r in results) or "none"
    passed = any(r.result == "pass" for r in results)
    failed = any(r.result in ("fail", "permerror") for r in results)
    if settings.relay.refuse_dkim_fail and failed and not passed:
        raise Refusal(
            Reason.DKIM_FAILED, "No passing DKIM signature found", f"operator {principal.identifier}: dkim {verdict}"
        )
    if big:
        cleaned, forged = await asyncio.to_thread(strip_forged_results, raw, settings.domain)
    else:
        cleaned, forged = strip_forged_results(raw, settings.domain)
    if forged:
        log.warning("removed %d forged Authentication-Results from operator %s", forged, principal.identifier)
    qid = new_id()
    log.info("inbound from operator=%s id=%s hops=%d dkim=%s", principal.identifier, qid, hops, verdict)
    received = received_field(
        trace, by=settings.domain, recipient=recipients[0] if len(recipients) == 1 else None, id=qid
    )
    return received + authentication_results(settings.domain, results) + cleaned
