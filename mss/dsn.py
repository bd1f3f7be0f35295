"""Delivery status notifications: the RFC 3464 report a sender gets back (pure, no I/O).

`build_report` makes the whole message: a `multipart/report; report-type=delivery-status`
(RFC 6522) with a human-readable text part, the machine-readable `message/delivery-status`
part (RFC 3464 2.2 per-message and 2.3 per-recipient fields) and the original message, whole
(`message/rfc822`) when the sender asked RET=FULL and something failed, else its header
section only (`text/rfc822-headers`; RFC 3461 4.3: a report of no failure carries headers
only). It is `From: MAILER-DAEMON@<domain>`, `Auto-Submitted: auto-replied` (RFC 3834 5),
and is sent with the null reverse-path by the caller (RFC 3461 6.2), so no report answers it.

Every value that comes from outside (a peer's reply text, addresses, the ENVID) has its
control characters (CR and LF among them) replaced by spaces before it is written, so a
crafted reply cannot add fields or parts; long values are folded, and no line exceeds the
998 octets of RFC 5322 2.1.1.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Literal

__all__ = ["RecipientOutcome", "build_report"]

Action = Literal["failed", "delayed", "delivered", "relayed", "expanded"]
_ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})
#: RFC 3463 2: class.subject.detail.
_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_CRLF = b"\r\n"
_MAX_LINE = 998
_FOLD_AT = 78
_MAX_PIECE = 900


@dataclass(frozen=True)
class RecipientOutcome:
    """What became of one recipient (one per-recipient block of RFC 3464 2.3)."""

    final_recipient: str  # address
    original_recipient: str | None  # ORCPT ("rfc822;addr") when given
    action: Action
    status: str  # "5.1.1", "2.0.0", "4.4.1"
    remote_mta: str | None = None  # host name
    diagnostic: str | None = None  # the remote reply text, e.g. "550 5.1.1 no such user"
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None


# -- text hygiene ---------------------------------------------------------------------------


def _clean(value: str) -> str:
    """One line of text: control characters (CR, LF, NUL, TAB...) become single spaces."""
    return _CONTROL.sub(" ", value).strip()


def _fold(name: str, value: str) -> str:
    """`Name: value` folded at white space near 78 characters (RFC 5322 2.2.3), each line
    at most 998 octets: a word longer than 900 octets is cut (a space is then inserted, the
    one change folding makes to a value that has no white space left to fold at)."""
    pieces: list[str] = []
    for word in _clean(value).split(" "):
        while len(word.encode()) > _MAX_PIECE:
            head, word = _cut(word, _MAX_PIECE)
            pieces.append(head)
        if word:
            pieces.append(word)
    lines: list[str] = []
    line = f"{name}:"
    fresh = True  # nothing after the field name yet: never fold there
    for piece in pieces:
        if not fresh and len((line + " " + piece).encode()) > _FOLD_AT:
            lines.append(line)
            line = ""
        line = f"{line} {piece}"
        fresh = False
    lines.append(line)
    return "\r\n".join(lines)


def _cut(word: str, room: int) -> tuple[str, str]:
    """The longest prefix of `word` that fits in `room` octets (UTF-8, never mid-character)."""
    out = ""
    for ch in word:
        if len((out + ch).encode()) > room:
            break
        out += ch
    return out, word[len(out) :]


def _host(value: str) -> str:
    """A host name (RFC 3464 2.3.5 Remote-MTA "dns;"): its first word, nothing after it."""
    return (_clean(value).split(" ") or [""])[0]


def _date(dt: datetime) -> str:
    """RFC 5322 3.3 date-time, in UTC (a naive value is UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return format_datetime(dt.astimezone(UTC))


def _address_type(value: str) -> str:
    """`addr-type;address` (RFC 3464 2.3.1/2.3.2): a bare address is rfc822."""
    value = _clean(value)
    kind, sep, addr = value.partition(";")
    if sep and kind.strip() and re.fullmatch(r"[A-Za-z0-9-]+", kind.strip()):
        return f"{kind.strip()};{addr.strip()}"
    return f"rfc822;{value}"


def _envid(value: str) -> str:
    """The ENVID for Original-Envelope-Id (RFC 3464 2.2.1): printable ASCII as given,
    anything else xtext-encoded (RFC 3461 4)."""
    return "".join(ch if 0x21 <= ord(ch) <= 0x7E and ch not in "+=" else _xtext(ch) for ch in value)


def _xtext(ch: str) -> str:
    return "".join(f"+{b:02X}" for b in ch.encode())


def _normalise(raw: bytes) -> bytes:
    """Line ends as CRLF, whatever the original used."""
    return re.sub(rb"\r\n|\r|\n", _CRLF, raw)


def _short_lines(data: bytes) -> bytes:
    """Lines cut to 998 octets (only the headers part can need it: a message with longer
    lines is never returned whole, see `_returned`)."""
    return _CRLF.join(line[:_MAX_LINE] for line in data.split(_CRLF))


def _headers_of(original: bytes) -> bytes:
    end = original.find(b"\r\n\r\n")
    return original if end < 0 else original[: end + 2]


def _returned(original: bytes, full: bool) -> tuple[str, bytes]:
    """The third part: (content type, body). The whole message only when it fits the line
    limit as it is (a `message/rfc822` part may not be re-encoded, RFC 2046 5.2.1)."""
    original = _normalise(original)
    if full and all(len(line) <= _MAX_LINE for line in original.split(_CRLF)):
        body = original if original.endswith(_CRLF) else original + _CRLF
        return "message/rfc822", body
    headers = _short_lines(_headers_of(original))
    if not headers.endswith(_CRLF):
        headers += _CRLF
    return "text/rfc822-headers", headers


def _kind(outcomes: Sequence[RecipientOutcome]) -> str:
    actions = {o.action for o in outcomes}
    if "failed" in actions:
        return "Failure"
    if "delayed" in actions:
        return "Delay"
    return "Success"


_INTRO = {
    "Failure": "Your message could not be delivered to one or more recipients. It will not be tried again for them.",
    "Delay": "Your message has not been delivered yet to one or more recipients. "
    "Delivery will be tried again; you do not need to send it again.",
    "Success": "Your message was delivered or handed on as you asked to be told.",
}


# -- the report -----------------------------------------------------------------------------


def build_report(
    *,
    reporting_mta: str,
    domain: str,
    to: str,
    original: bytes,
    outcomes: Sequence[RecipientOutcome],
    envid: str | None = None,
    ret: str | None = None,
    arrival: datetime | None = None,
    now: datetime | None = None,
    explanation: str | None = None,
) -> bytes:
    """The DSN message for `to` about `original` (see the module doc). `explanation`
    (optional) is one more sentence for the human part, e.g. why an operator removed it."""
    if not outcomes:
        raise ValueError("a delivery status notification needs at least one recipient")
    for o in outcomes:
        if o.action not in _ACTIONS:
            raise ValueError(f"unknown DSN action {o.action!r}")
        if not _STATUS.match(o.status):
            raise ValueError(f"not an RFC 3463 status code: {o.status!r}")
    now = now or datetime.now(UTC)
    domain = _clean(domain).lower()
    reporting_mta = _host(reporting_mta)
    kind = _kind(outcomes)
    full = (ret or "").upper() == "FULL" and kind == "Failure"
    returned_type, returned = _returned(original, full)

    boundary = f"=_mss_dsn_{secrets.token_hex(12)}"
    while boundary.encode() in returned:  # pragma: no cover - 96 random bits
        boundary = f"=_mss_dsn_{secrets.token_hex(12)}"

    headers = [
        f"From: Mail Delivery System <MAILER-DAEMON@{domain}>",
        _fold("To", f"<{_clean(to)}>"),
        f"Date: {_date(now)}",
        f"Message-ID: <dsn.{secrets.token_hex(16)}@{domain}>",
        f"Subject: Delivery Status Notification ({kind})",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n boundary="{boundary}"',
    ]

    # Human part (RFC 6522 3: the first part, for people).
    text = [f"This is the mail system at {reporting_mta}.", "", _INTRO[kind]]
    if explanation:
        text += ["", _clean(explanation)]
    text.append("")
    for o in outcomes:
        line = f"<{_clean(o.final_recipient)}>: {o.action} ({o.status})"
        if o.diagnostic:
            said = f"{_host(o.remote_mta)} said: " if o.remote_mta else ""
            line += f", {said}{_clean(o.diagnostic)}"
        text.append(line)
    human = "\r\n".join(_fold_text(t) for t in text) + "\r\n"
    human_cte = "7bit" if human.isascii() else "8bit"

    # Machine part (RFC 3464 2.1: per-message fields, then a block per recipient).
    per_message = [_fold("Reporting-MTA", f"dns; {reporting_mta}")]
    if envid:
        per_message.append(_fold("Original-Envelope-Id", _envid(_clean(envid))))
    if arrival is not None:
        per_message.append(f"Arrival-Date: {_date(arrival)}")
    blocks = ["\r\n".join(per_message)]
    for o in outcomes:
        fields = []
        if o.original_recipient:
            fields.append(_fold("Original-Recipient", _address_type(o.original_recipient)))
        fields.append(_fold("Final-Recipient", _address_type(o.final_recipient)))
        fields.append(f"Action: {o.action}")
        fields.append(f"Status: {o.status}")
        if o.remote_mta:
            fields.append(_fold("Remote-MTA", f"dns; {_host(o.remote_mta)}"))
        if o.diagnostic:
            fields.append(_fold("Diagnostic-Code", f"smtp; {o.diagnostic}"))
        if o.last_attempt is not None:
            fields.append(f"Last-Attempt-Date: {_date(o.last_attempt)}")
        if o.will_retry_until is not None and o.action == "delayed":
            fields.append(f"Will-Retry-Until: {_date(o.will_retry_until)}")
        blocks.append("\r\n".join(fields))
    status = "\r\n\r\n".join(blocks) + "\r\n"
    status_cte = "7bit" if status.isascii() else "8bit"

    returned_cte = "7bit" if returned.isascii() else "8bit"
    description = "Undelivered message" if returned_type == "message/rfc822" else "Message headers"

    out = bytearray()
    out += ("\r\n".join(headers) + "\r\n\r\n").encode()
    out += b"This is a MIME-encapsulated delivery status notification (RFC 3464).\r\n\r\n"
    out += (
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Description: Notification\r\n"
        f"Content-Transfer-Encoding: {human_cte}\r\n\r\n"
    ).encode()
    out += human.encode()
    out += (
        f"\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\nContent-Description: Delivery report\r\n"
        f"Content-Transfer-Encoding: {status_cte}\r\n\r\n"
    ).encode()
    out += status.encode()
    out += (
        f"\r\n--{boundary}\r\nContent-Type: {returned_type}\r\nContent-Description: {description}\r\n"
        f"Content-Transfer-Encoding: {returned_cte}\r\n\r\n"
    ).encode()
    out += returned
    out += f"\r\n--{boundary}--\r\n".encode()
    return bytes(out)


def _fold_text(line: str) -> str:
    """A line of the human part wrapped at 78 characters (no line over 998 octets)."""
    if len(line) <= _FOLD_AT:
        return line
    out: list[str] = []
    cur = ""
    for word in line.split(" "):
        while len(word.encode()) > _MAX_LINE - 2:
            head, word = _cut(word, _MAX_LINE - 2)
            if cur:
                out.append(cur)
                cur = ""
            out.append(head)
        if cur and len(cur) + 1 + len(word) > _FOLD_AT:
            out.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    if cur:
        out.append(cur)
    return "\r\n".join(out)
