# Frozen copy of mss/message.py as of commit 9e5f333, before the one-scanner rewrite.
# Kept verbatim so tests and bench/parse_bench.py can compare the new code with the old
# algorithm byte for byte. Never import this from production code; never edit it.
"""What the core needs to know of a raw message before encrypting it: one header parse."""
from __future__ import annotations

import re
from email.utils import getaddresses
from email.parser import BytesHeaderParser, HeaderParser
from email.policy import compat32

from mss.refusals import Reason, Refusal
from mss.principal import Principal
from mss.records import OuterHeaders

_BARE_LF = re.compile(rb"(?<!\r)\n")
_BARE_CR = re.compile(rb"\r(?!\n)")


def check_line_endings(raw: bytes) -> None:
    """Refuse bare CR or LF: they are the raw material of SMTP smuggling (DESIGN.md)."""
    if _BARE_LF.search(raw) or _BARE_CR.search(raw):
        raise Refusal(Reason.MALFORMED_MESSAGE, "Message contains a bare CR or LF; lines must end with CRLF")


def header_block(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    return raw if end < 0 else raw[: end + 2]


def outer_headers(raw: bytes) -> OuterHeaders:
    """The clear header values kept beside the ciphertext (routing and threading only).

    Header bytes are read as UTF-8 (RFC 6532 allows it in header values); encoded words
    (RFC 2047) are kept as they are, for IMAP ENVELOPE to return unchanged.
    """
    msg = HeaderParser(policy=compat32).parsestr(header_block(raw).decode("utf-8", errors="replace"))

    def get(name: str) -> str:
        v = msg.get(name)
        return " ".join(str(v).split()) if v is not None else ""

    return OuterHeaders(
        from_=get("From"),
        to=get("To"),
        cc=get("Cc"),
        subject=get("Subject"),
        date=get("Date"),
        message_id=get("Message-ID"),
    )


def check_headers(raw: bytes) -> None:
    """A submitted message needs a From field (RFC 5322 3.6). A missing Date is let
    through: RFC 6409 8.3 lets submission complete it, and clients always send one."""
    msg = BytesHeaderParser(policy=compat32).parsebytes(header_block(raw))
    if msg.get("From") is None:
        raise Refusal(Reason.MALFORMED_MESSAGE, "Message has no From header field (RFC 5322 3.6)")


def check_header_senders(principal: Principal, raw: bytes) -> None:
    """The author fields must name the authenticated user's own mailboxes (RFC 6409 8.1
    lets a submission server enforce this): every From address, and Sender when present.

    MAIL FROM alone is not enough: the recipient's client shows From, and in a health
    trust space a message must never appear to come from a colleague who did not send it.
    """
    msg = BytesHeaderParser(policy=compat32).parsebytes(header_block(raw))
    fields = [("From", v) for v in msg.get_all("From") or []] + [("Sender", v) for v in msg.get_all("Sender") or []]
    for name, value in fields:
        addresses = [a for _, a in getaddresses([str(value)]) if a]
        if not addresses:
            raise Refusal(Reason.MALFORMED_MESSAGE, f"{name} header field has no address")
        for address in addresses:
            if not principal.may_use(address):
                raise Refusal(Reason.NOT_ALLOWED, f"{name} <{address}> is not a mailbox of the authenticated user")
