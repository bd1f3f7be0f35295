"""Message content lines as DATA reads them: bare LF made CRLF, or noted for a refusal.

aiosmtpd reads DATA in pieces that end at CRLF (RFC 5321 2.3.8: only CRLF ends a line, and
only <CRLF>.<CRLF> ends DATA); that stays exactly so, it is the SMTP smuggling protection.
A piece may hold bare LFs, though: practice software that writes its lines with LF alone.
`DataLines.feed` sees each piece before aiosmtpd does and, with ``normalize`` (the default,
as Postfix's `smtpd_forbid_bare_newline = normalize`), returns it with every bare LF made
CRLF and the lines that started after one un-dot-stuffed (RFC 5321 4.5.2; aiosmtpd does that
for the first line of a piece only). With ``reject`` the piece is kept as it is and the
handler refuses the message with 550 5.5.2.

Either way two things are noted for the handler, whatever the mode:

* a lone "." line next to a bare LF (``\\n.\\n``, ``\\r\\n.\\n``, ``\\n.\\r\\n``): the SMTP smuggling
  signature (a fake end of data that another server might honour). It never ends DATA here,
  and the message is refused whole rather than stored with a line boundary that another
  reader may see elsewhere;
* a line longer than RFC 5321 4.5.3.1.6 allows, counting a bare LF as a line end (aiosmtpd
  would count the whole piece as one line, so its own check is lifted during DATA).

Sans-IO: bytes in, bytes out, no socket; `smtp.server` calls it from its stream reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["DataLines"]

BareNewline = Literal["normalize", "reject"]


@dataclass
class DataLines:
    """The audit of one DATA phase; `feed` every piece (ending in CRLF) in order."""

    mode: BareNewline = "normalize"
    #: aiosmtpd's `line_length_limit` (1001): RFC 5321 4.5.3.1.6's 1000 octets including the
    #: CRLF, plus the leading dot duplicated for transparency, which the RFC does not count.
    #: A line's text (CRLF and stuffing dot taken off) may be `line_limit - 3` = 998 octets.
    line_limit: int = 1001
    bare_lf: bool = False
    lone_dot: bool = False
    too_long: bool = False

    def feed(self, piece: bytes) -> bytes:
        """``piece`` as aiosmtpd should see it (normalised, or as it came)."""
        if b"\n" not in piece[:-1]:  # the usual case: one CRLF line
            self._check_length(piece[:-2])
            return piece
        self.bare_lf = True
        lines = piece.split(b"\n")  # the last element is b"" (the piece ends in LF)
        lines.pop()
        out: list[bytes] = []
        for i, line in enumerate(lines):
            text = line[:-1] if line.endswith(b"\r") else line  # only the last one has CR
            if text == b".":
                self.lone_dot = True  # \n.\n, \r\n.\n (i == 0) or \n.\r\n
            self._check_length(text)
            if i > 0 and text.startswith(b"."):
                text = text[1:]  # RFC 5321 4.5.2 transparency, for a line after a bare LF
            out.append(text)
        if self.mode == "reject":
            return piece
        return b"\r\n".join(out) + b"\r\n"

    def _check_length(self, text: bytes) -> None:
        """`text`: one line as sent, without its line end (a leading dot is the stuffing one)."""
        length = len(text) - (1 if text.startswith(b".") else 0)
        if length > self.line_limit - 3:
            self.too_long = True
