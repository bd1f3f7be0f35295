"""The one header-section scanner of MSS (RFC 5322 §2.1, §2.2, §2.2.3): byte-faithful, linear.

Every part of MSS that needs a message's header fields reads them through this module: the
core when a message comes in (`mss.message.parse_message`), header protection before
encryption (`crypto.smime`), IMAP when it serves ENVELOPE, BODYSTRUCTURE and BODY[HEADER]
(`imap.mime`). One scanner means one answer to "where does the header end, which lines are
fields": a message can no longer look different to the policy check and to the encryption.

Why not `email.parser`: it re-folds and re-decodes what it touches, so the bytes the sender
wrote could not be kept; and the splitter this replaces grew each folded field by repeated
``bytes +=``, quadratic in its number of continuation lines (a 2.6 MB header of 200,000 lines
held the event loop for half a minute). Here a field is four offsets into the caller's buffer:
its raw bytes are one slice, taken when asked for, and the scan touches each octet a bounded
number of times.

The rules (kept from the splitter this replaces, and consistent with RFC 5322):

* a line ends at LF; the CR before it is part of the line end (RFC 5322 §2.1 says CRLF; a
  lone LF is accepted so that stored messages that came with LF line ends still parse; the
  core refuses bare CR and LF on the way in, see `mss.message`);
* a field is ``name [WSP] ":" value``, the name one or more printable US-ASCII characters
  except the colon (RFC 5322 §2.2 ``ftext``, %d33-57 / %d59-126; white space before the colon
  is the obsolete syntax of §4.5.3, still accepted);
* a line that starts with SP or HTAB continues the field before it (§2.2.3 folding); before
  any field it is not a field, and starts the body;
* the header section ends at the first empty line (§2.1: "the body ... separated from the
  header section by an empty line"), or at the first line that is neither a field nor a
  continuation: that line starts the body and is kept verbatim, as `email.parser` does.

The scanner is sans-IO: `HeaderScanner` takes bytes as they arrive (`feed`) and `scan` is the
one-buffer case of the same code, so an incremental caller and a whole-buffer caller can never
disagree on where a field or the header section ends.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "Field",
    "HeaderScanner",
    "HeaderSection",
    "TooManyFields",
    "get",
    "get_all",
    "has_bare_cr_or_lf",
    "scan",
    "to_crlf",
    "unfold",
]

# RFC 5322 §2.2 field-name (ftext = %d33-57 / %d59-126), optional WSP (§4.5.3 obs-optional),
# then the colon. The classes are disjoint, so a failed match backtracks in O(line) at worst.
_FIELD_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")

_LF = 0x0A
_CR = 0x0D
_WSP = (0x20, 0x09)


class TooManyFields(ValueError):
    """The header section has more fields than the caller allows (a memory bound, not syntax)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"header section has more than {limit} fields")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Field:
    """One header field, as offsets into the buffer it was scanned from.

    ``start`` is the first octet of the name, ``colon`` the offset of the colon, ``end`` the
    offset just past the line end of its last line (continuation lines included). Nothing is
    copied until `raw`, `value` or `unfolded` is asked for.
    """

    name: str  # as written (RFC 5322 §1.2.2: names compare case-insensitively, see `key`)
    start: int
    colon: int
    end: int
    buffer: bytes = field(repr=False, compare=False)

    @property
    def key(self) -> str:
        """The name lowercased: how fields are compared (RFC 5322 §1.2.2)."""
        return self.name.lower()

    @property
    def raw(self) -> bytes:
        """The field exactly as written: name, colon, value, continuation lines and line end.

        Only the last field of a buffer that ends inside its header section can lack the line
        end; `terminated` adds it for callers that write the field out again.
        """
        return self.buffer[self.start : self.end]

    @property
    def terminated(self) -> bytes:
        """`raw`, ending with a line end (CRLF added when the buffer ended without one)."""
        raw = self.raw
        return raw if raw.endswith(b"\n") else raw + b"\r\n"

    @property
    def value(self) -> bytes:
        """The value after the colon, folding kept, its final line end removed and the blanks
        before it stripped: what RFC 9788 §2.2 HP-Outer echoes and what MIME parameters are
        parsed from."""
        raw = self.buffer[self.colon + 1 : self.end]
        if raw.endswith(b"\r\n"):
            raw = raw[:-2]
        elif raw.endswith(b"\n"):
            raw = raw[:-1]
        return raw.lstrip(b" \t")

    @property
    def unfolded(self) -> str:
        """The value unfolded and its white space collapsed, as text (see `unfold`)."""
        return unfold(self.value)


def unfold(value: bytes) -> str:
    """A field value as one line of text: RFC 5322 §2.2.3 unfolding (line ends removed) with
    every run of white space collapsed to one space and the ends trimmed.

    Header octets are read as UTF-8 (RFC 6532 allows it in values), an invalid sequence as
    U+FFFD; RFC 2047 encoded words are left as they are (IMAP ENVELOPE returns them so).
    """
    return " ".join(value.decode("utf-8", errors="replace").split())


@dataclass(frozen=True, slots=True)
class HeaderSection:
    """The result of a scan: the fields in order, where they end and where the body starts.

    ``buffer[:header_end]`` is exactly the fields' raw bytes concatenated;
    ``buffer[header_end:body_offset]`` is the separating empty line (empty when the header
    section ended at a line that is not a field, or at the end of the buffer);
    ``buffer[body_offset:]`` is the body.
    """

    fields: tuple[Field, ...]
    header_end: int
    body_offset: int
    buffer: bytes = field(repr=False, compare=False)

    @property
    def header(self) -> bytes:
        """The header section with its separating empty line (IMAP BODY[HEADER])."""
        return self.buffer[: self.body_offset]

    @property
    def separator(self) -> bytes:
        return self.buffer[self.header_end : self.body_offset]

    @property
    def body(self) -> bytes:
        return self.buffer[self.body_offset :]

    def get(self, name: str) -> Field | None:
        """The first field called ``name`` (any case), or None."""
        return get(self.fields, name)

    def get_all(self, name: str) -> tuple[Field, ...]:
        """Every field called ``name`` (any case), in order."""
        return get_all(self.fields, name)


def get(fields: Iterable[Field], name: str) -> Field | None:
    """The first of ``fields`` called ``name``, compared case-insensitively (RFC 5322 §1.2.2)."""
    key = name.lower()
    return next((f for f in fields if f.key == key), None)


def get_all(fields: Iterable[Field], name: str) -> tuple[Field, ...]:
    """All of ``fields`` called ``name``, compared case-insensitively, in order."""
    key = name.lower()
    return tuple(f for f in fields if f.key == key)


class HeaderScanner:
    """Incremental scan of a header section: `feed` bytes as they arrive, then `finish`.

    A line is looked at once, when its line end has arrived (or at `finish` for a last line
    with none); the search for a line end resumes where the previous one stopped, so feeding
    a long line one octet at a time stays linear. Once the header section has ended, what is
    fed next is only kept, never examined.
    """

    def __init__(self, *, max_fields: int | None = None) -> None:
        self._buf = bytearray()
        self._max_fields = max_fields
        self._spans: list[tuple[str, int, int, int]] = []  # (name, start, colon, end)
        self._current: tuple[str, int, int] | None = None  # the field still being extended
        self._current_end = 0
        self._pos = 0  # start of the first line not yet looked at
        self._search = 0  # where the next search for a line end resumes
        self._header_end: int | None = None
        self._body_offset: int | None = None

    @property
    def done(self) -> bool:
        """True once the header section has ended (the body offset is known)."""
        return self._body_offset is not None

    def feed(self, data: bytes) -> None:
        """Add ``data``; scan every line it completes. Raises `TooManyFields` past the bound."""
        self._buf += data
        if self._body_offset is None:
            self._advance(self._buf, final=False)

    def finish(self) -> HeaderSection:
        """The header section of everything fed (a last line without line end included)."""
        buffer = bytes(self._buf)
        if self._body_offset is None:
            self._advance(buffer, final=True)
        return self._section(buffer)

    # -- the one implementation, shared with `scan` ---------------------------------------

    def _advance(self, buf: bytes | bytearray, *, final: bool) -> None:
        """Look at every complete line from ``self._pos`` (and the last partial one if final)."""
        size = len(buf)
        pos = self._pos
        while pos < size:
            lf = buf.find(b"\n", max(pos, self._search))
            if lf < 0:
                if not final:
                    self._search = size
                    break
                end = size
            else:
                end = lf + 1
            if not self._line(buf, pos, end):
                pos = self._body_offset  # type: ignore[assignment]
                break
            pos = end
            self._search = end
        self._pos = pos
        if final and self._body_offset is None:
            self._end_header(size, size)

    def _line(self, buf: bytes | bytearray, start: int, end: int) -> bool:
        """Classify one line; False once the header section has ended."""
        length = end - start
        if (length == 1 and buf[start] == _LF) or (length == 2 and buf[start] == _CR and buf[start + 1] == _LF):
            self._end_header(start, end)  # RFC 5322 §2.1: the empty line
            return False
        if buf[start] in _WSP and self._current is not None:
            self._current_end = end  # RFC 5322 §2.2.3: a continuation line
            return True
        m = _FIELD_NAME.match(buf, start, end)
        if m is None:
            self._end_header(start, start)  # not a field: the body starts here, verbatim
            return False
        self._close_current()
        if self._max_fields is not None and len(self._spans) >= self._max_fields:
            raise TooManyFields(self._max_fields)
        self._current = (m.group(1).decode("ascii"), start, m.end() - 1)
        self._current_end = end
        return True

    def _close_current(self) -> None:
        if self._current is not None:
            name, start, colon = self._current
            self._spans.append((name, start, colon, self._current_end))
            self._current = None

    def _end_header(self, header_end: int, body_offset: int) -> None:
        self._close_current()
        self._header_end = header_end
        self._body_offset = body_offset

    def _section(self, buffer: bytes) -> HeaderSection:
        assert self._header_end is not None and self._body_offset is not None
        fields = tuple(Field(name, start, colon, end, buffer) for name, start, colon, end in self._spans)
        return HeaderSection(fields, self._header_end, self._body_offset, buffer)


def scan(buffer: bytes, *, max_fields: int | None = None) -> HeaderSection:
    """The header section of a whole message (or MIME entity) held in ``buffer``.

    Linear in the length of the header section; the body is never examined. ``max_fields``
    bounds the memory a hostile header of tiny fields could cost (`TooManyFields`); callers
    that face the network pass one, callers reading what was already accepted need not.
    """
    scanner = HeaderScanner(max_fields=max_fields)
    scanner._advance(buffer, final=True)  # the same code as `feed`, without copying buffer
    return scanner._section(buffer)


def to_crlf(raw: bytes) -> bytes:
    """Every line end as CRLF, the canonical form of RFC 5322 §2.1 and RFC 8551 §3.1.1.

    A lone LF becomes CRLF; a lone CR is left alone (it is not a line end on its own, and the
    core refuses it before anything is stored).
    """
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def has_bare_cr_or_lf(raw: bytes) -> bool:
    """True when a CR is not followed by LF, or an LF not preceded by CR (RFC 5322 §2.1:
    CR and LF appear only together). Three C-speed counts, no regular expression: CRLF pairs
    cannot overlap, so every CR and every LF is in one exactly when the counts agree."""
    pairs = raw.count(b"\r\n")
    return raw.count(b"\r") != pairs or raw.count(b"\n") != pairs
