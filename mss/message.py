"""A message on its way in, parsed once: every check the core makes of the raw bytes, in one pass.

DESIGN.md: "A message is parsed once on its way in (a linear-time, bounded header scan, off the
event loop when large)". `parse_message` is that one pass: size, line ends, the header section
through the one scanner (`crypto.rfc5322`), the author fields, the clear values kept beside the
ciphertext and whether the message is already S/MIME-encrypted. What it returns,
`ParsedMessage`, is handed on — to `check_header_senders`, to sealing — so that nothing splits
the message again and every later step sees the same fields.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import format_datetime, getaddresses

from crypto.rfc5322 import Field, HeaderSection, TooManyFields, has_bare_cr_or_lf, scan
from crypto.smime import is_enveloped
from mss.policy import domain_of
from mss.principal import Principal
from mss.records import OuterHeaders
from mss.refusals import Reason, Refusal

__all__ = [
    "MAX_HEADER_FIELDS",
    "PARSE_IN_THREAD_THRESHOLD",
    "ParsedMessage",
    "check_header_senders",
    "complete_submission",
    "outer_headers",
    "parse_message",
    "parse_message_async",
]

#: At most this many header fields in a submitted message. The bound is on memory: a field
#: costs a few hundred bytes of bookkeeping, so 25 MiB of four-octet fields would cost gigabytes.
#: Real messages carry tens; a long relay chain a few hundred.
MAX_HEADER_FIELDS = 1_000  # real messages carry dozens; every stored header is parsed again at FETCH

#: Messages larger than this are parsed in a worker thread: the scan is linear, but a few
#: megabytes still take milliseconds that the listeners sharing the event loop should not wait.
PARSE_IN_THREAD_THRESHOLD = 64 * 1024


@dataclass(frozen=True)
class ParsedMessage:
    """A submitted message that passed the core's syntax checks, and what they found.

    ``raw`` is the message as received: it is CRLF throughout (bare CR and LF were refused),
    so it is also the canonical form that encryption needs. ``fields`` are slices of ``raw``.
    """

    raw: bytes
    fields: tuple[Field, ...]
    body_offset: int
    outer: OuterHeaders  # the clear values as submitted (stored beside an as-is message)
    from_addresses: tuple[str, ...]
    sender_addresses: tuple[str, ...]
    encrypted: bool  # already S/MIME enveloped: stored as it came (DESIGN.md)

    @property
    def body(self) -> bytes:
        return self.raw[self.body_offset :]


def parse_message(
    raw: bytes, *, max_size: int, max_fields: int = MAX_HEADER_FIELDS, require_from: bool = True
) -> ParsedMessage:
    """Check ``raw`` and scan it once; raise `Refusal` for the first rule it breaks.

    The size comes first: it costs nothing and bounds everything after it. Then bare CR or
    LF (the raw material of SMTP smuggling, DESIGN.md "Bad input"), NUL (RFC 5322 allows it
    nowhere; C clients and parsers downstream truncate at it), the header section, a
    From field (RFC 5322 §3.6; a missing Date is let through: RFC 6409 §8.3 lets submission
    complete it, and clients always send one), and an address in every From and Sender.
    `require_from` is off for IMAP APPEND, where a draft may have no author yet.
    """
    if len(raw) > max_size:
        raise Refusal(Reason.TOO_BIG, "Message exceeds the maximum size")
    if has_bare_cr_or_lf(raw):
        raise Refusal(Reason.MALFORMED_MESSAGE, "Message contains a bare CR or LF; lines must end with CRLF")
    if b"\x00" in raw:  # RFC 5322 2.2 / 3.5: no NUL in a header field nor in a body line
        raise Refusal(Reason.MALFORMED_MESSAGE, "Message contains a NUL character (not allowed by RFC 5322 2.2, 3.5)")
    try:
        section = scan(raw, max_fields=max_fields)
    except TooManyFields as exc:
        raise Refusal(
            Reason.MALFORMED_MESSAGE,
            f"Message header has more than {exc.limit} fields",
            log=f"header fields > {exc.limit}",
        ) from exc
    from_fields = section.get_all("From")
    if not from_fields and require_from:
        raise Refusal(Reason.MALFORMED_MESSAGE, "Message has no From header field (RFC 5322 3.6)")
    from_addresses = _addresses("From", from_fields)
    sender_addresses = _addresses("Sender", section.get_all("Sender"))
    body = section.body
    return ParsedMessage(
        raw=raw,
        fields=section.fields,
        body_offset=section.body_offset,
        outer=_outer(section),
        from_addresses=from_addresses,
        sender_addresses=sender_addresses,
        encrypted=is_enveloped(section.fields, body),
    )


async def parse_message_async(
    raw: bytes,
    *,
    max_size: int,
    threshold: int = PARSE_IN_THREAD_THRESHOLD,
    max_fields: int = MAX_HEADER_FIELDS,
    require_from: bool = True,
) -> ParsedMessage:
    """`parse_message`, in a worker thread when ``raw`` is larger than ``threshold`` so that
    a large message never stalls the event loop (small ones are cheaper parsed in place)."""
    if len(raw) > threshold and len(raw) <= max_size:
        return await asyncio.to_thread(
            parse_message, raw, max_size=max_size, max_fields=max_fields, require_from=require_from
        )
    return parse_message(raw, max_size=max_size, max_fields=max_fields, require_from=require_from)


def _addresses(name: str, fields: tuple[Field, ...]) -> tuple[str, ...]:
    """Every address of the ``name`` fields; a field that names none is refused."""
    found: list[str] = []
    for f in fields:
        try:
            addresses = [a for _, a in getaddresses([f.unfolded]) if a]
        except (RecursionError, ValueError, IndexError):  # e.g. comments nested thousands deep
            raise Refusal(Reason.MALFORMED_MESSAGE, f"{name} header field cannot be parsed") from None
        if not addresses:
            raise Refusal(Reason.MALFORMED_MESSAGE, f"{name} header field has no address")
        found += addresses
    return tuple(found)


def check_header_senders(principal: Principal, message: ParsedMessage) -> None:
    """The author fields must name the authenticated user's own mailboxes (RFC 6409 §8.1
    lets a submission server enforce this): every From address, and Sender when present.

    MAIL FROM alone is not enough: the recipient's client shows From, and in a health
    trust space a message must never appear to come from a colleague who did not send it.

    Another operator's relayed mail (a SERV principal) is checked by domain: every author
    is in a domain its certificate speaks for (`Principal.domains`), a DSN's
    ``MAILER-DAEMON@<its domain>`` included. It cannot put words in the mouth of this
    operator's users nor of a third operator's.
    """
    for name, addresses in (("From", message.from_addresses), ("Sender", message.sender_addresses)):
        for address in addresses:
            if principal.kind == "SERV":
                domain = domain_of(address)
                if domain not in principal.domains:
                    raise Refusal(
                        Reason.NOT_ALLOWED,
                        f"{name} <{address}> is not in a domain your certificate speaks for",
                        f"operator {principal.identifier} sent {name} {address}",
                    )
                continue
            if not principal.may_use(address):
                raise Refusal(Reason.NOT_ALLOWED, f"{name} <{address}> is not a mailbox of the authenticated user")


def complete_submission(message: ParsedMessage, *, domain: str, now: datetime | None = None) -> ParsedMessage:
    """The message with a Date and a Message-ID field added where it has none: RFC 6409 §8.3
    (the submission server MAY add a missing Date) and §8.4 (a missing Message-ID).

    Clients nearly always send both; practice software sometimes does not, and without a
    Message-ID a reply cannot be threaded nor a receipt matched. The new fields go on top of
    the header section (RFC 5322 §3.6 prescribes no order); fields that exist are never
    touched, whatever they hold. The Date is RFC 5322 §3.3 ("Wed, 02 Dec 2026 14:29:13
    +0000"), the Message-ID 128 random bits at this operator's domain (§3.6.4). Only the
    header section is scanned again; the checks of `parse_message` still hold (nothing it
    looked at changed), and the body is not copied more than once.
    """
    added: list[bytes] = []
    if not any(f.key == "date" for f in message.fields):
        when = (now or datetime.now(UTC)).replace(microsecond=0)
        added.append(b"Date: " + format_datetime(when).encode("ascii") + b"\r\n")
    if not any(f.key == "message-id" for f in message.fields):
        added.append(f"Message-ID: <{secrets.token_hex(16)}@{domain}>\r\n".encode())  # RFC 6532: UTF-8
    if not added:
        return message
    raw = b"".join(added) + message.raw
    section = scan(raw)
    return replace(message, raw=raw, fields=section.fields, body_offset=section.body_offset, outer=_outer(section))


def _outer(section: HeaderSection) -> OuterHeaders:
    def value(name: str) -> str:
        f = section.get(name)
        return f.unfolded if f is not None else ""

    return OuterHeaders(
        from_=value("From"),
        to=value("To"),
        cc=value("Cc"),
        subject=value("Subject"),
        date=value("Date"),
        message_id=value("Message-ID"),
    )


def outer_headers(raw: bytes) -> OuterHeaders:
    """The clear header values kept beside the ciphertext (routing and threading only).

    Header bytes are read as UTF-8 (RFC 6532 allows it in header values); encoded words
    (RFC 2047) are kept as they are, for IMAP ENVELOPE to return unchanged. Only the header
    section is scanned: on a stored message the ciphertext after it is never looked at.
    """
    return _outer(scan(raw))
