"""Response objects and their serialisation to bytes (RFC 9051 7 and 9).

Values inside responses are plain Python: `None` is NIL, `int` a number, `str`/`bytes` a
string (quoted when it can be, a literal otherwise), `list`/`tuple` a parenthesised list,
`Atom` is written as it is (flags, FETCH item names), `Literal` forces a literal, `Literal8`
a literal8 (RFC 3516).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Union

# QUOTED-CHAR excludes CR, LF, NUL and 8-bit; such strings go as literals (RFC 9051 4.3).
_QUOTABLE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")
_MAX_QUOTED = 1000
# With UTF-8 allowed in quoted strings: anything but CR, LF and NUL.
_QUOTABLE_UTF8 = re.compile(rb"[^\x00\r\n]*")


class Atom(str):
    """Written without quotes: flags, item names, keywords."""


class Literal(bytes):
    """Always written as `{n}CRLF` followed by the bytes."""


class Utf8Quoted(str):
    """A string that may be quoted with UTF-8 in it (RFC 6855 3, `uQUOTED-CHAR`; RFC 9051
    4.3): a mailbox name once the client has enabled UTF8=ACCEPT or IMAP4rev2. A literal
    only when it has CR, LF or NUL or is long."""


class Literal8(bytes):
    """Always written as `~{n}CRLF` followed by the bytes: RFC 3516 literal8, for BINARY
    content that has a NUL (4.3)."""


class Serialised(bytes):
    """A value already in wire form (an ENVELOPE or BODYSTRUCTURE kept from an earlier
    FETCH, `imap.structure`): written as it is."""


#: A value inside a response: NIL, a number, a string or atom, or a parenthesised list.
Value = Union[None, int, str, bytes, Sequence["Value"]]  # noqa: UP007 - a recursive alias needs the string forward reference


def _string(b: bytes) -> bytes:
    if len(b) <= _MAX_QUOTED and _QUOTABLE.fullmatch(b):
        return b'"' + b.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(b) + b


def serialise(value: Value) -> bytes:
    """One value as IMAP bytes."""
    if value is None:
        return b"NIL"
    if isinstance(value, bool):
        raise TypeError("booleans have no IMAP form")
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, Atom):
        return value.encode("ascii")
    if isinstance(value, Serialised):
        return bytes(value)
    if isinstance(value, Literal):
        return b"{%d}\r\n" % len(value) + bytes(value)
    if isinstance(value, Literal8):
        return b"~{%d}\r\n" % len(value) + bytes(value)
    if isinstance(value, Utf8Quoted):
        b = value.encode("utf-8")
        if len(b) <= _MAX_QUOTED and _QUOTABLE_UTF8.fullmatch(b):
            return b'"' + b.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        return b"{%d}\r\n" % len(b) + b
    if isinstance(value, str):
        return _string(value.encode("utf-8"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _string(bytes(value))
    if isinstance(value, (list, tuple)):
        return b"(" + b" ".join(serialise(v) for v in value) + b")"
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _text(text: str) -> bytes:
    """resp-text must be one line of TEXT-CHAR: CR and LF are replaced."""
    return " ".join(text.split()).encode("utf-8", "replace") or b"."


class Response:
    def to_bytes(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class Status(Response):
    """`tag OK/NO/BAD [code] text`, or untagged (`tag=None`) OK/NO/BAD/BYE/PREAUTH.

    `code` is the response code's inside, already in wire form (e.g. `UIDVALIDITY 3`).
    """

    status: str
    text: str
    tag: str | None = None
    code: str | None = None

    def to_bytes(self) -> bytes:
        head = (self.tag or "*").encode() + b" " + self.status.encode()
        if self.code:
            head += b" [" + self.code.encode("ascii") + b"]"
        return head + b" " + _text(self.text) + b"\r\n"


@dataclass(frozen=True)
class Data(Response):
    """Untagged data: `* ` followed by the items separated by spaces."""

    items: tuple[Value, ...]

    def __init__(self, *items: Value) -> None:
        object.__setattr__(self, "items", items)

    def to_bytes(self) -> bytes:
        return b"* " + b" ".join(serialise(v) for v in self.items) + b"\r\n"


class Wire(Response):
    """Responses already in wire form, as pieces written one after the other: the FETCH
    lines of many messages at once (`imap.commands.fetch`), built as bytes rather than as
    `Data` trees (a 10,000-message FETCH would otherwise allocate some 100,000 objects for
    the garbage collector to walk). A message's stored bytes stay a piece of their own, so
    they are never copied into a bigger buffer on their way to the socket."""

    __slots__ = ("pieces",)

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def to_bytes(self) -> bytes:
        return b"".join(self.pieces)

    def __repr__(self) -> str:
        return f"Wire({sum(len(p) for p in self.pieces)} bytes in {len(self.pieces)} pieces)"


class Stream(Response):
    """Responses produced while the first of them are being written: a FETCH of many stored
    messages reads them chunk by chunk (`rest`, one `Wire` or None per chunk), so the client
    reads the first while the server reads the next, and no more than a chunk of a folder's
    ciphertext is held at a time. The asyncio layer writes `parts()` as they come; `settle`
    produces what is left at once, for whoever needs the whole bytes (a command pipelined
    after it runs only once it is answered: `Session.process`).

    A chunk that cannot be read (the storage went away) ends the stream: `failed` holds why,
    and the connection is closed after what was produced, since the tagged completion that
    follows would tell the client it had every message."""

    def __init__(self, first: Wire, rest: AsyncIterator[Wire | None]) -> None:
        self._parts: list[Wire] = [first]
        self._rest: AsyncIterator[Wire | None] | None = rest
        self.failed: Exception | None = None

    async def parts(self) -> AsyncIterator[Wire]:
        """Each part once, in order: those already produced, then the rest as it is read."""
        i = 0
        while True:
            while i < len(self._parts):
                yield self._parts[i]
                i += 1
            if not await self._next():
                return

    async def _next(self) -> bool:
        """Produce one more part; False at the end (or once it failed)."""
        while self._rest is not None:
            try:
                part = await anext(self._rest)
            except StopAsyncIteration:
                self._rest = None
                return False
            except Exception as exc:  # noqa: BLE001 - kept for the I/O layer, which closes the connection
                self._rest = None
                self.failed = exc
                return False
            if part is not None:
                self._parts.append(part)
                return True
        return False

    async def settle(self) -> None:
        while await self._next():
            pass

    @property
    def settled(self) -> bool:
        return self._rest is None

    def to_bytes(self) -> bytes:
        if self._rest is not None:
            raise RuntimeError("Stream.to_bytes before settle()")
        return b"".join(p.to_bytes() for p in self._parts)


async def settle(outputs: Sequence[object]) -> None:
    """Produce every `Stream` among `outputs` to its end."""
    for o in outputs:
        if isinstance(o, Stream) and not o.settled:
            await o.settle()


@dataclass(frozen=True)
class Continue(Response):
    """A command continuation request (`+ text`), or a SASL challenge when `raw`."""

    text: str = "Ready"

    def to_bytes(self) -> bytes:
        return b"+ " + _text(self.text) + b"\r\n" if self.text else b"+ \r\n"


def ok(tag: str | None, text: str, code: str | None = None) -> Status:
    return Status("OK", text, tag, code)


def no(tag: str | None, text: str, code: str | None = None) -> Status:
    return Status("NO", text, tag, code)


def bad(tag: str | None, text: str, code: str | None = None) -> Status:
    return Status("BAD", text, tag, code)


def bye(text: str) -> Status:
    return Status("BYE", text)
