"""Modified UTF-7 mailbox names (RFC 3501 5.1.3), and the choice between them and UTF-8.

IMAP4rev1 sends mailbox names in 7-bit: printable ASCII stands for itself (`&` as `&-`),
anything else is UTF-16 in a modified base64 (`,` for `/`, no padding) between `&` and `-`.
Once the client has enabled UTF8=ACCEPT (RFC 6855 3), or IMAP4rev2 (RFC 9051 5.1), names go
both ways as UTF-8 instead. The core keeps names as Unicode strings; this module is where the
front end converts at the edge.
"""

from __future__ import annotations

import binascii
import re

_RUN = re.compile(r"&|[^\x20-\x7e]+")
_ENCODED = re.compile(rb"&([^-]*)-")
_B64 = re.compile(rb"[A-Za-z0-9+,]*")


class Mutf7Error(ValueError):
    """A name that is not valid modified UTF-7 (answered BAD)."""


def encode(name: str) -> str:
    """`name` in modified UTF-7 (RFC 3501 5.1.3), pure ASCII."""

    def run(m: re.Match[str]) -> str:
        if m.group(0) == "&":
            return "&-"
        utf16 = m.group(0).encode("utf-16-be", "surrogatepass")
        return "&" + binascii.b2a_base64(utf16, newline=False).decode("ascii").rstrip("=").replace("/", ",") + "-"

    return _RUN.sub(run, name)


def decode(wire: str) -> str:
    """The name a modified UTF-7 string stands for. Raises Mutf7Error when it is not the
    one encoding of a name: printable ASCII outside `&...-`, base64 of UTF-16 inside, no
    empty or needless shift (`&-` is `&`), no printable ASCII encoded."""
    if not wire.isascii() or re.search(r"[^\x20-\x7e]", wire):
        raise Mutf7Error("Mailbox name is not 7-bit printable ASCII")
    raw = wire.encode("ascii")
    out: list[str] = []
    pos = 0
    for m in _ENCODED.finditer(raw):
        out.append(raw[pos : m.start()].decode("ascii"))
        pos = m.end()
        b64 = m.group(1)
        if not b64:
            out.append("&")
            continue
        if not _B64.fullmatch(b64) or len(b64) % 4 == 1:
            raise Mutf7Error("Invalid modified UTF-7 in mailbox name")
        try:
            utf16 = binascii.a2b_base64(b64.replace(b",", b"/") + b"=" * (-len(b64) % 4), strict_mode=True)
            text = utf16.decode("utf-16-be")
        except (binascii.Error, UnicodeDecodeError):
            raise Mutf7Error("Invalid modified UTF-7 in mailbox name") from None
        if not text or any("\x20" <= c <= "\x7e" for c in text):
            raise Mutf7Error("Modified UTF-7 encodes printable ASCII")
        out.append(text)
    rest = raw[pos:]
    if b"&" in rest:
        raise Mutf7Error("Unterminated & in mailbox name (write & as &-, RFC 3501 5.1.3)")
    out.append(rest.decode("ascii"))
    name = "".join(out)
    if encode(name) != wire:
        # Two adjacent shifts, or bits left over in the last base64 character.
        raise Mutf7Error("Mailbox name is not in canonical modified UTF-7")
    return name
