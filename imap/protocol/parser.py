"""Bytes to commands (RFC 9051 2.2, 4 and 9; RFC 7888 LITERAL+), sans-IO.

`Parser` frames the input: it collects one command's lines and literals, says when a
synchronising literal needs a continuation request, and enforces the limits (line length,
literal size, whole command size) before anything is buffered beyond them.
`parse_command` then reads one complete command: the tag and the name here, the arguments
by the name's rule in the one registry of commands (`imap.protocol.grammar.COMMANDS`), with
the recursive-descent `Reader` that follows the ABNF and enforces the nesting limit.

Every problem surfaces as a `ParseError` event (never another exception): `fatal` says
the stream cannot be resynchronised (a non-synchronising literal we refuse to read), so
the connection must close after the BAD.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from imap.protocol.commands import Command
from imap.protocol.grammar import COMMAND_NAMES, COMMANDS, Head
from imap.protocol.reader import ASTRING_CHARS, ATOM_CHARS, Limits, ParseError, Reader

__all__ = [
    "COMMAND_NAMES",
    "Command",
    "ContinuationNeeded",
    "Limits",
    "ParseError",
    "Parser",
    "ParserEvent",
    "RawLine",
    "parse_command",
]


# -- events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContinuationNeeded:
    """Send `+ ...` now: the client waits for it before sending a synchronising literal."""

    size: int


@dataclass(frozen=True)
class RawLine:
    """A line read in raw mode (AUTHENTICATE responses, IDLE's DONE), without its CRLF."""

    line: bytes


#: What `Parser.next_event` hands the session.
ParserEvent = Command | ContinuationNeeded | RawLine | ParseError


_LITERAL_AT_END = re.compile(rb"~?\{(\d{1,20})(\+?)\}\r?\n\Z")
_TAG = re.compile(rb"[\x21-\x7e]+")


def _guess_tag(data: bytes) -> str | None:
    """The tag of a command we could not parse, when it looks like one (for a tagged BAD)."""
    m = _TAG.match(data)
    if not m:
        return None
    tag = m.group().decode("ascii")
    if any(c in tag for c in '(){%*"\\+') or len(tag) > 64:
        return None
    return tag


class Parser:
    """Frames and parses client input. Feed bytes, then pull events until None."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._buf = bytearray()
        self._cmd = bytearray()  # the command so far: its lines and literals as received
        self._literal_left = 0
        self._discarding = False  # dropping an over-long line up to its LF
        self._discard_tag: str | None = None
        self._raw_line = False

    # -- I/O side ------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self._buf += data

    def clear(self) -> None:
        """Forget buffered input (after STARTTLS: nothing sent in clear may be acted on)."""
        self._buf.clear()
        self._cmd.clear()
        self._literal_left = 0
        self._discarding = False
        self._raw_line = False

    def expect_line(self) -> None:
        """The next line is returned as a `RawLine` instead of being parsed as a command."""
        self._raw_line = True

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def idle(self) -> bool:
        """True between commands (no partial command held)."""
        return not self._cmd and not self._literal_left and not self._buf

    # -- framing -------------------------------------------------------------------------

    def next_event(self) -> ParserEvent | None:
        lim = self.limits
        while True:
            if self._discarding:
                nl = self._buf.find(b"\n")
                if nl < 0:
                    self._buf.clear()
                    return None
                del self._buf[: nl + 1]
                self._discarding = False
                return ParseError(f"Line too long (limit {lim.line} octets)", self._discard_tag)

            if self._literal_left:
                take = min(self._literal_left, len(self._buf))
                if take == 0:
                    return None
                self._cmd += self._buf[:take]
                del self._buf[:take]
                self._literal_left -= take
                if self._literal_left:
                    return None
                continue

            nl = self._buf.find(b"\n")
            if nl < 0:
                # A line may hold `lim.line` octets and its CRLF, so `lim.line + 1` octets can
                # still be waiting for their LF: refusing them earlier would make the verdict
                # depend on how TCP split the line (found by tests/fuzz/fuzz_imap.py).
                if len(self._buf) > lim.line + 1:
                    return self._too_long()
                return None
            if nl + 1 > lim.line + 2:
                return self._too_long()
            line = bytes(self._buf[: nl + 1])
            del self._buf[: nl + 1]

            if self._raw_line and not self._cmd:
                self._raw_line = False
                return RawLine(line.rstrip(b"\r\n"))

            self._cmd += line
            m = _LITERAL_AT_END.search(line)
            if m:
                size = int(m.group(1))
                sync = not m.group(2)
                tag = _guess_tag(bytes(self._cmd))
                if size > lim.literal or len(self._cmd) + size > lim.command:
                    self._cmd.clear()
                    # One literal over its limit, or (a MULTIAPPEND, RFC 3502) the command's
                    # literals together over what one command may hold.
                    text = (
                        f"Literal too large (limit {lim.literal} octets)"
                        if size > lim.literal
                        else f"Command too large (limit {lim.command} octets for all its literals)"
                    )
                    if sync:
                        # The client waits for "+" before sending it: refusing keeps us in step.
                        return ParseError(text, tag)
                    # RFC 7888 4: a non-synchronising literal is on its way; we cannot skip it.
                    return ParseError(text, tag, fatal=True)
                self._literal_left = size
                if sync:
                    return ContinuationNeeded(size)
                continue

            data = bytes(self._cmd)
            self._cmd.clear()
            try:
                return parse_command(data, self.limits)
            except ParseError as exc:
                if exc.tag is None:
                    exc.tag = _guess_tag(data)
                return exc

    def _too_long(self) -> ParserEvent | None:
        self._discard_tag = _guess_tag(bytes(self._cmd or self._buf))
        self._cmd.clear()
        self._discarding = True
        return self.next_event()


def parse_command(data: bytes, limits: Limits | None = None) -> Command:
    """One complete command (its literals inline, as received) -> the command object of its
    name's class (`imap.protocol.grammar.COMMANDS`), or ParseError."""
    r = Reader(data, limits or Limits())
    tag_b = r.take(ASTRING_CHARS.replace(b"+", b""))
    if not tag_b:
        raise ParseError("Missing or invalid tag")
    tag = tag_b.decode("ascii")
    try:
        if not r.try_sp():
            raise ParseError("Missing command")
        name = r.take(ATOM_CHARS).upper().decode("ascii")
        uid = False
        if name == "UID":
            r.sp()
            uid = True
            name = r.take(ATOM_CHARS).upper().decode("ascii")
        if not name:
            raise ParseError("Missing command")
        spec = COMMANDS.get(name)
        if spec is None or (uid and not spec.uid):
            shown = name if len(name) <= 32 else name[:32] + "..."
            raise ParseError(f"Unknown command {'UID ' if uid else ''}{shown}")
        command = spec.rule(r, Head(tag, name, uid))
        r.end()
    except ParseError as exc:
        exc.tag = tag
        raise
    except (ValueError, IndexError, RecursionError) as exc:  # belt and braces: never leak others
        raise ParseError(f"Malformed command ({type(exc).__name__})", tag) from None
    return command
