"""The ABNF reader (RFC 9051 9, "Formal Syntax"), sans-IO: one complete command's bytes, its
literals inline, read token by token.

`Reader` has one method per grammar rule (atom, astring, sequence-set, fetch-att, search-key,
...); each reads its rule or raises `ParseError`. The per-command rules that assemble these
into command objects are in `imap.protocol.grammar`; the framing that collects a command's
lines and literals is `imap.protocol.parser.Parser`.

Limits (`Limits`) are enforced where the input is read: line and literal sizes by the
framing, nesting here (`enter`), so that no input can make the reader recurse without bound.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TypeVar

from imap.flags import canonical_flag
from imap.protocol.commands import MAX_MODSEQ, MAX_NUMBER, DateKey, FetchAtt, SearchKey, Section, SequenceSet

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    line: int = 64 * 1024
    literal: int = 25 * 1024 * 1024 + 64 * 1024
    nesting: int = 16

    @property
    def command(self) -> int:
        """A whole command (lines and literals) may not exceed one literal plus one line: the
        messages of a MULTIAPPEND (RFC 3502) share that bound, so a connection never makes
        us hold more than one largest message's worth of input."""
        return self.literal + self.line


# -- events --------------------------------------------------------------------------------


class ParseError(Exception):
    """A protocol error: answered with BAD (tagged when the tag could be read)."""

    def __init__(self, text: str, tag: str | None = None, fatal: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.tag = tag
        self.fatal = fatal


ATOM_SPECIALS = set(b'(){ %*"\\]') | set(range(0, 0x20)) | {0x7F}
ATOM_CHARS = bytes(c for c in range(1, 128) if c not in ATOM_SPECIALS)
ASTRING_CHARS = ATOM_CHARS + b"]"
LIST_CHARS = ATOM_CHARS + b"%*]"
_MONTHS = {
    m: i + 1 for i, m in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])
}
_FETCH_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SIMPLE_FETCH = {
    "ENVELOPE",
    "FLAGS",
    "INTERNALDATE",
    "RFC822",
    "RFC822.HEADER",
    "RFC822.SIZE",
    "RFC822.TEXT",
    "BODY",
    "BODYSTRUCTURE",
    "UID",
    "MODSEQ",  # RFC 7162 3.1.4.2
}


#: Most search keys (and key groups) one SEARCH may carry; clients send a handful.
MAX_SEARCH_KEYS = 256


class Reader:
    """A cursor over one complete command; each method reads one ABNF rule or raises."""

    def __init__(self, data: bytes, limits: Limits) -> None:
        self.data = data
        self.pos = 0
        self.limits = limits
        self.depth = 0
        self.search_nodes = 0

    # -- basics --------------------------------------------------------------------------

    def error(self, text: str) -> ParseError:
        return ParseError(text)

    def peek(self, n: int = 1) -> bytes:
        return self.data[self.pos : self.pos + n]

    def at_end(self) -> bool:
        rest = self.data[self.pos :]
        return rest in (b"\r\n", b"\n", b"")

    def end(self) -> None:
        if not self.at_end():
            snippet = self.data[self.pos : self.pos + 20].decode("ascii", "replace").rstrip()
            raise self.error(f"Unexpected extra arguments at {snippet!r}")

    def sp(self) -> None:
        if self.peek() != b" ":
            raise self.error("Missing space between arguments" if not self.at_end() else "Missing arguments")
        self.pos += 1

    def try_sp(self) -> bool:
        if self.peek() == b" ":
            self.pos += 1
            return True
        return False

    def expect(self, s: bytes) -> None:
        if self.data[self.pos : self.pos + len(s)].upper() != s.upper():
            raise self.error(f"Expected {s.decode()!r}")
        self.pos += len(s)

    def try_expect(self, s: bytes) -> bool:
        if self.data[self.pos : self.pos + len(s)].upper() == s.upper():
            self.pos += len(s)
            return True
        return False

    def take(self, chars: bytes) -> bytes:
        """The longest run of `chars` from here (possibly empty)."""
        start = self.pos
        d = self.data
        while self.pos < len(d) and d[self.pos] in chars:
            self.pos += 1
        return d[start : self.pos]

    def utf8(self, b: bytes) -> str:
        """Strings are UTF-8 (RFC 9051 4.3); anything else is refused, never guessed."""
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error("String is not valid UTF-8") from None

    def enter(self) -> None:
        self.depth += 1
        if self.depth > self.limits.nesting:
            raise self.error(f"Nesting too deep (limit {self.limits.nesting})")

    def leave(self) -> None:
        self.depth -= 1

    # -- tokens --------------------------------------------------------------------------

    def atom(self) -> str:
        a = self.take(ATOM_CHARS)
        if not a:
            raise self.error("Expected an atom")
        return a.decode("ascii")

    def number(self, nz: bool = False) -> int:
        d = self.take(b"0123456789")
        if not d or len(d) > 10:
            raise self.error("Expected a number")
        n = int(d)
        if n > MAX_NUMBER or (nz and n == 0):
            raise self.error("Number out of range")
        return n

    def modseq(self, zero: bool = False) -> int:
        """`mod-sequence-value` (RFC 7162 7), or `mod-sequence-valzer` when `zero`."""
        d = self.take(b"0123456789")
        if not d or len(d) > 19:
            raise self.error("Expected a mod-sequence")
        n = int(d)
        if n > MAX_MODSEQ or (n == 0 and not zero):
            raise self.error("Mod-sequence out of range")
        return n

    def quoted(self) -> bytes:
        self.expect(b'"')
        out = bytearray()
        d = self.data
        while True:
            if self.pos >= len(d):
                raise self.error("Unterminated quoted string")
            c = d[self.pos]
            self.pos += 1
            if c == 0x22:
                return bytes(out)
            if c == 0x5C:
                if self.pos >= len(d) or d[self.pos] not in b'"\\':
                    raise self.error("Invalid escape in quoted string")
                out.append(d[self.pos])
                self.pos += 1
            elif c in (0x0D, 0x0A, 0x00):
                raise self.error("Unterminated quoted string")
            else:
                out.append(c)

    def literal(self) -> bytes:
        self.try_expect(b"~")  # literal8 (RFC 3516) is accepted for APPEND
        self.expect(b"{")
        size = self.number()
        self.try_expect(b"+")
        self.expect(b"}")
        if not self.try_expect(b"\r\n"):
            self.expect(b"\n")
        if self.pos + size > len(self.data):
            raise self.error("Truncated literal")
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out

    def _at_string(self) -> bool:
        """A quoted string or a literal starts here. `~` starts a literal8 only when `{`
        follows (RFC 3516 4.2); otherwise it is an atom character (RFC 3501 9, ATOM-CHAR)."""
        c = self.peek()
        return c in (b'"', b"{") or self.peek(2) == b"~{"

    def string(self) -> bytes:
        c = self.peek()
        if c == b'"':
            return self.quoted()
        if c == b"{" or self.peek(2) == b"~{":
            return self.literal()
        raise self.error("Expected a string")

    def astring_bytes(self) -> bytes:
        if self._at_string():
            return self.string()
        a = self.take(ASTRING_CHARS)
        if not a:
            raise self.error("Expected a string or atom")
        return a

    def astring(self) -> str:
        return self.utf8(self.astring_bytes())

    def nstring(self) -> str | None:
        if self.peek(3).upper() == b"NIL" and self.data[self.pos + 3 : self.pos + 4] in (b" ", b")", b"\r", b"\n", b""):
            self.pos += 3
            return None
        return self.utf8(self.string())

    def mailbox(self) -> str:
        name = self.astring()
        return "INBOX" if name.upper() == "INBOX" else name

    def list_mailbox(self) -> str:
        if self._at_string():
            return self.utf8(self.string())
        a = self.take(LIST_CHARS)
        if not a:
            raise self.error("Expected a mailbox pattern")
        return a.decode("ascii")

    def paren_list(self, item: Callable[[], T], allow_empty: bool = True) -> list[T]:
        self.expect(b"(")
        self.enter()
        out: list[T] = []
        if self.peek() != b")":
            out.append(item())
            while self.try_sp():
                out.append(item())
        self.expect(b")")
        self.leave()
        if not out and not allow_empty:
            raise self.error("Empty list")
        return out

    def flag(self) -> str:
        if self.try_expect(b"\\"):
            if self.peek() == b"*":
                self.pos += 1
                return "\\*"
            name = "\\" + self.atom()
            return canonical_flag(name)
        return self.atom()

    def flag_list(self) -> list[str]:
        return self.paren_list(self.flag)

    def seq_number(self) -> int | None:
        if self.try_expect(b"*"):
            return None
        return self.number(nz=True)

    def sequence_set(self, saved: bool = False) -> SequenceSet:
        """`sequence-set`, or `$` (RFC 5182 3: seq-last-command) where `saved` allows it.
        `$` stands alone: `$,1` or `1:$` is not a sequence set."""
        if self.peek() == b"$":
            if not saved:
                raise self.error("$ (the saved search result) cannot be used here")
            self.pos += 1
            if self.peek() in (b",", b":"):
                raise self.error("$ cannot be combined with other numbers (RFC 5182 3)")
            return SequenceSet((), saved=True)
        ranges = []
        while True:
            lo = self.seq_number()
            hi = lo
            if self.try_expect(b":"):
                hi = self.seq_number()
            ranges.append((lo, hi))
            if not self.try_expect(b","):
                break
        return SequenceSet(tuple(ranges))

    def date(self) -> date:
        q = self.try_expect(b'"')
        day = self.number()
        self.expect(b"-")
        mon = self.take(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz").upper().decode()
        self.expect(b"-")
        year = self.number()
        if q:
            self.expect(b'"')
        try:
            return date(year, _MONTHS[mon], day)
        except (KeyError, ValueError):
            raise self.error("Invalid date (expected dd-Mon-yyyy)") from None

    def date_time(self) -> datetime:
        """`"dd-Mon-yyyy hh:mm:ss +zzzz"` (RFC 9051 9, date-time), day possibly space-padded."""
        raw = self.quoted().decode("ascii", "replace")
        m = re.fullmatch(r" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)", raw)
        if not m:
            raise self.error('Invalid date-time (expected "dd-Mon-yyyy hh:mm:ss +zzzz")')
        d, mon, y, hh, mm, ss, sign, zh, zm = m.groups()
        try:
            off = timedelta(hours=int(zh), minutes=int(zm)) * (1 if sign == "+" else -1)
            return datetime(int(y), _MONTHS[mon.upper()], int(d), int(hh), int(mm), int(ss), tzinfo=timezone(off))
        except (KeyError, ValueError):
            raise self.error("Invalid date-time") from None

    # -- FETCH ---------------------------------------------------------------------------

    def fetch_atts(self) -> list[FetchAtt]:
        if self.peek() == b"(":
            return self.paren_list(self.fetch_att, allow_empty=False)
        save = self.pos
        word = self.take(ATOM_CHARS).upper().decode("ascii")
        if word in _FETCH_MACROS:
            return [FetchAtt(n) for n in _FETCH_MACROS[word]]
        self.pos = save
        return [self.fetch_att()]

    def fetch_att(self) -> FetchAtt:
        name = self.take(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.").upper().decode()
        if name in ("BODY", "BODY.PEEK") and self.peek() == b"[":
            section = self.section()
            partial = None
            if self.try_expect(b"<"):
                start = self.number()
                self.expect(b".")
                length = self.number(nz=True)
                self.expect(b">")
                partial = (start, length)
            return FetchAtt(name, section, partial)
        if name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE") and self.peek() == b"[":
            section = self.section_binary()
            partial = None
            if name != "BINARY.SIZE" and self.try_expect(b"<"):
                start = self.number()
                self.expect(b".")
                length = self.number(nz=True)
                self.expect(b">")
                partial = (start, length)
            return FetchAtt(name, section, partial)
        if name in _SIMPLE_FETCH:
            return FetchAtt(name)
        raise self.error(f"Unknown FETCH attribute {name or self.peek().decode('ascii', 'replace')!r}")

    def section(self) -> Section:
        self.expect(b"[")
        part: list[int] = []
        text = None
        fields: tuple[str, ...] = ()
        if self.peek() != b"]":
            while self.peek().isdigit():
                part.append(self.number(nz=True))
                if not self.try_expect(b"."):
                    break
            if self.peek() != b"]":
                word = self.take(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.").upper().decode()
                if word not in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"):
                    raise self.error(f"Invalid section {word!r}")
                if word == "MIME" and not part:
                    raise self.error("MIME needs a part number")
                text = word
                if word.startswith("HEADER.FIELDS"):
                    self.sp()
                    fields = tuple(f.upper() for f in self.paren_list(self.astring, allow_empty=False))
        self.expect(b"]")
        return Section(tuple(part), text, fields)

    def section_binary(self) -> Section:
        """`section-binary = "[" [section-part] "]"` (RFC 3516 6): a part path, no HEADER,
        TEXT or MIME (the decoded content of a part has no header of its own)."""
        self.expect(b"[")
        part: list[int] = []
        if self.peek() != b"]":
            part.append(self.number(nz=True))
            while self.try_expect(b"."):
                part.append(self.number(nz=True))
        if self.peek() != b"]":
            raise self.error("BINARY takes a part number only, no HEADER, TEXT or MIME (RFC 3516 4.2)")
        self.pos += 1
        return Section(tuple(part))

    # -- SEARCH --------------------------------------------------------------------------

    def search_keys(self) -> SearchKey:
        self.search_nodes += 1
        keys = [self.search_key()]
        while self.try_sp():
            keys.append(self.search_key())
        return keys[0] if len(keys) == 1 else ("AND", tuple(keys))

    def search_key(self) -> SearchKey:
        # Each key is evaluated against every message: cap how many one SEARCH may carry.
        self.search_nodes += 1
        if self.search_nodes > MAX_SEARCH_KEYS:
            raise self.error(f"Too many search keys (at most {MAX_SEARCH_KEYS})")
        c = self.peek()
        if c == b"(":
            self.expect(b"(")
            self.enter()
            keys = self.search_keys()
            self.expect(b")")
            self.leave()
            return keys
        if c.isdigit() or c in (b"*", b"$"):
            return ("SEQ", self.sequence_set(saved=True))
        word = self.take(ATOM_CHARS).upper().decode("ascii")
        simple = _SIMPLE_SEARCH.get(word)
        if simple is not None:
            return simple
        if word in ("FROM", "TO", "CC", "BCC", "SUBJECT"):
            self.sp()
            return ("HEADER", word, self.astring())
        if word == "BODY":
            self.sp()
            return ("BODY", self.astring())
        if word == "TEXT":
            self.sp()
            return ("TEXT", self.astring())
        if word == "HEADER":
            self.sp()
            name = self.astring().upper()
            self.sp()
            return ("HEADER", name, self.astring())
        if word in ("KEYWORD", "UNKEYWORD"):
            self.sp()
            return ("FLAG", self.flag(), word == "KEYWORD")
        date_key = _DATE_KEYS.get(word)
        if date_key is not None:
            self.sp()
            return (date_key, self.date())
        if word == "LARGER":
            self.sp()
            return ("LARGER", self.number())
        if word == "SMALLER":
            self.sp()
            return ("SMALLER", self.number())
        if word == "UID":
            self.sp()
            return ("UID", self.sequence_set(saved=True))
        if word == "MODSEQ":
            # RFC 7162 3.1.5: MODSEQ [entry-name entry-type-req] n. Each message has one
            # MODSEQ here, for all its flags: the entry names every flag and is skipped.
            self.sp()
            if self.peek() == b'"':
                entry = self.quoted()
                if not entry.lower().startswith(b"/flags/"):
                    raise self.error("MODSEQ entry names a flag: /flags/<flag>")
                self.sp()
                if self.take(ATOM_CHARS).lower() not in (b"priv", b"shared", b"all"):
                    raise self.error("MODSEQ entry type is priv, shared or all")
                self.sp()
            return ("MODSEQ", self.modseq(zero=True))
        if word == "NOT":
            self.sp()
            self.enter()
            k = self.search_key()
            self.leave()
            return ("NOT", k)
        if word == "OR":
            self.sp()
            self.enter()
            a = self.search_key()
            self.sp()
            b = self.search_key()
            self.leave()
            return ("OR", a, b)
        raise self.error(f"Unknown search key {word or c.decode('ascii', 'replace')!r}")


#: Search keys without arguments (RFC 3501 6.4.4). RECENT, OLD and NEW look at \Recent, which
#: the session adds to the messages recent to it (NEW is RECENT UNSEEN); in IMAP4rev2 nothing
#: is recent (RFC 9051 removed it).
_SIMPLE_SEARCH: dict[str, SearchKey] = {
    "ALL": ("ALL",),
    "NEW": ("AND", (("FLAG", "\\Recent", True), ("FLAG", "\\Seen", False))),
    "RECENT": ("FLAG", "\\Recent", True),
    "OLD": ("FLAG", "\\Recent", False),
    "ANSWERED": ("FLAG", "\\Answered", True),
    "UNANSWERED": ("FLAG", "\\Answered", False),
    "DELETED": ("FLAG", "\\Deleted", True),
    "UNDELETED": ("FLAG", "\\Deleted", False),
    "DRAFT": ("FLAG", "\\Draft", True),
    "UNDRAFT": ("FLAG", "\\Draft", False),
    "FLAGGED": ("FLAG", "\\Flagged", True),
    "UNFLAGGED": ("FLAG", "\\Flagged", False),
    "SEEN": ("FLAG", "\\Seen", True),
    "UNSEEN": ("FLAG", "\\Seen", False),
}
_DATE_KEYS: dict[str, DateKey] = {
    "BEFORE": "BEFORE",
    "ON": "ON",
    "SINCE": "SINCE",
    "SENTBEFORE": "SENTBEFORE",
    "SENTON": "SENTON",
    "SENTSINCE": "SENTSINCE",
}
