"""Bytes to commands (RFC 9051 2.2, 4 and 9; RFC 7888 LITERAL+), sans-IO.

`Parser` frames the input: it collects one command's lines and literals, says when a
synchronising literal needs a continuation request, and enforces the limits (line length,
literal size, whole command size) before anything is buffered beyond them.
`parse_command` then reads one complete command with a recursive-descent reader that
follows the ABNF, and enforces the nesting limit.

Every problem surfaces as a `ParseError` event (never another exception): `fatal` says
the stream cannot be resynchronised (a non-synchronising literal we refuse to read), so
the connection must close after the BAD.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Callable, TypeVar

from imap.flags import canonical_flag
from imap.protocol.commands import MAX_NUMBER, Command, FetchAtt, Secret, Section, SequenceSet

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    line: int = 64 * 1024
    literal: int = 25 * 1024 * 1024 + 64 * 1024
    nesting: int = 16

    @property
    def command(self) -> int:
        """A whole command (lines and literals) may not exceed one literal plus one line."""
        return self.literal + self.line


# -- events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContinuationNeeded:
    """Send `+ ...` now: the client waits for it before sending a synchronising literal."""

    size: int


@dataclass(frozen=True)
class RawLine:
    """A line read in raw mode (AUTHENTICATE responses, IDLE's DONE), without its CRLF."""

    line: bytes


class ParseError(Exception):
    """A protocol error: answered with BAD (tagged when the tag could be read)."""

    def __init__(self, text: str, tag: str | None = None, fatal: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.tag = tag
        self.fatal = fatal


Event = "Command | ContinuationNeeded | RawLine | ParseError"

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

    def next_event(self) -> Command | ContinuationNeeded | RawLine | ParseError | None:
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
                if len(self._buf) > lim.line:
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
                    if sync:
                        # The client waits for "+" before sending it: refusing keeps us in step.
                        return ParseError(f"Literal too large (limit {lim.literal} octets)", tag)
                    # RFC 7888 4: a non-synchronising literal is on its way; we cannot skip it.
                    return ParseError(f"Literal too large (limit {lim.literal} octets)", tag, fatal=True)
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

    def _too_long(self) -> ParseError | None:
        self._discard_tag = _guess_tag(bytes(self._cmd or self._buf))
        self._cmd.clear()
        self._discarding = True
        return self.next_event()


# -- the grammar ---------------------------------------------------------------------------

_ATOM_SPECIALS = set(b'(){ %*"\\]') | set(range(0, 0x20)) | {0x7F}
_ATOM_CHARS = bytes(c for c in range(1, 128) if c not in _ATOM_SPECIALS)
_ASTRING_CHARS = _ATOM_CHARS + b"]"
_LIST_CHARS = _ATOM_CHARS + b"%*]"
_MONTHS = {m: i + 1 for i, m in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])}
_FETCH_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SIMPLE_FETCH = {
    "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT",
    "BODY", "BODYSTRUCTURE", "UID",
}
_STATUS_ITEMS = {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "HIGHESTMODSEQ"}


class Reader:
    """A cursor over one complete command; each method reads one ABNF rule or raises."""

    def __init__(self, data: bytes, limits: Limits) -> None:
        self.data = data
        self.pos = 0
        self.limits = limits
        self.depth = 0

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

    def _run(self, chars: bytes) -> bytes:
        start = self.pos
        d = self.data
        while self.pos < len(d) and d[self.pos] in chars:
            self.pos += 1
        return d[start : self.pos]

    def enter(self) -> None:
        self.depth += 1
        if self.depth > self.limits.nesting:
            raise self.error(f"Nesting too deep (limit {self.limits.nesting})")

    def leave(self) -> None:
        self.depth -= 1

    # -- tokens --------------------------------------------------------------------------

    def atom(self) -> str:
        a = self._run(_ATOM_CHARS)
        if not a:
            raise self.error("Expected an atom")
        return a.decode("ascii")

    def number(self, nz: bool = False) -> int:
        d = self._run(b"0123456789")
        if not d or len(d) > 10:
            raise self.error("Expected a number")
        n = int(d)
        if n > MAX_NUMBER or (nz and n == 0):
            raise self.error("Number out of range")
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

    def string(self) -> bytes:
        c = self.peek()
        if c == b'"':
            return self.quoted()
        if c in (b"{", b"~"):
            return self.literal()
        raise self.error("Expected a string")

    def astring_bytes(self) -> bytes:
        c = self.peek()
        if c in (b'"', b"{", b"~"):
            return self.string()
        a = self._run(_ASTRING_CHARS)
        if not a:
            raise self.error("Expected a string or atom")
        return a

    def astring(self) -> str:
        return _utf8(self.astring_bytes(), self)

    def nstring(self) -> str | None:
        if self.peek(3).upper() == b"NIL" and self.data[self.pos + 3 : self.pos + 4] in (b" ", b")", b"\r", b"\n", b""):
            self.pos += 3
            return None
        return _utf8(self.string(), self)

    def mailbox(self) -> str:
        name = self.astring()
        return "INBOX" if name.upper() == "INBOX" else name

    def list_mailbox(self) -> str:
        c = self.peek()
        if c in (b'"', b"{", b"~"):
            return _utf8(self.string(), self)
        a = self._run(_LIST_CHARS)
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

    def sequence_set(self) -> SequenceSet:
        if self.peek() == b"$":
            raise self.error("Search result references ($) are not supported")
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
        mon = self._run(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz").upper().decode()
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
            raise self.error("Invalid date-time (expected \"dd-Mon-yyyy hh:mm:ss +zzzz\")")
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
        word = self._run(_ATOM_CHARS).upper().decode("ascii")
        if word in _FETCH_MACROS:
            return [FetchAtt(n) for n in _FETCH_MACROS[word]]
        self.pos = save
        return [self.fetch_att()]

    def fetch_att(self) -> FetchAtt:
        name = self._run(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.").upper().decode()
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
                word = self._run(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.").upper().decode()
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

    # -- SEARCH --------------------------------------------------------------------------

    def search_keys(self) -> tuple:
        keys = [self.search_key()]
        while self.try_sp():
            keys.append(self.search_key())
        return keys[0] if len(keys) == 1 else ("AND", tuple(keys))

    def search_key(self) -> tuple:
        c = self.peek()
        if c == b"(":
            self.expect(b"(")
            self.enter()
            keys = self.search_keys()
            self.expect(b")")
            self.leave()
            return keys
        if c.isdigit() or c in (b"*", b"$"):
            return ("SEQ", self.sequence_set())
        word = self._run(_ATOM_CHARS).upper().decode("ascii")
        simple = {
            "ALL": ("ALL",), "NEW": ("NONE",), "RECENT": ("NONE",), "OLD": ("ALL",),
            "ANSWERED": ("FLAG", "\\Answered", True), "UNANSWERED": ("FLAG", "\\Answered", False),
            "DELETED": ("FLAG", "\\Deleted", True), "UNDELETED": ("FLAG", "\\Deleted", False),
            "DRAFT": ("FLAG", "\\Draft", True), "UNDRAFT": ("FLAG", "\\Draft", False),
            "FLAGGED": ("FLAG", "\\Flagged", True), "UNFLAGGED": ("FLAG", "\\Flagged", False),
            "SEEN": ("FLAG", "\\Seen", True), "UNSEEN": ("FLAG", "\\Seen", False),
        }
        if word in simple:
            return simple[word]
        if word in ("FROM", "TO", "CC", "BCC", "SUBJECT"):
            self.sp()
            return ("HEADER", word, self.astring())
        if word in ("BODY", "TEXT"):
            self.sp()
            return (word, self.astring())
        if word == "HEADER":
            self.sp()
            name = self.astring().upper()
            self.sp()
            return ("HEADER", name, self.astring())
        if word in ("KEYWORD", "UNKEYWORD"):
            self.sp()
            return ("FLAG", self.flag(), word == "KEYWORD")
        if word in ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"):
            self.sp()
            return (word, self.date())
        if word in ("LARGER", "SMALLER"):
            self.sp()
            return (word, self.number())
        if word == "UID":
            self.sp()
            return ("UID", self.sequence_set())
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


def _utf8(b: bytes, r: Reader) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise r.error("String is not valid UTF-8") from None


# -- commands ------------------------------------------------------------------------------


def _no_args(r: Reader) -> dict:
    return {}


def _authenticate(r: Reader) -> dict:
    r.sp()
    mech = r.atom().upper()
    initial = None
    if r.try_sp():
        initial = r._run(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
        if not initial:
            raise r.error("Invalid SASL initial response")
        initial = Secret(initial)
    return {"mechanism": mech, "initial": initial}


def _login(r: Reader) -> dict:
    r.sp()
    user = r.astring()
    r.sp()
    password = Secret(r.astring_bytes())  # an app password; its repr never shows it
    return {"user": user, "password": password}


def _enable(r: Reader) -> dict:
    caps = []
    while r.try_sp():
        caps.append(r.atom().upper())
    if not caps:
        raise r.error("ENABLE needs at least one capability")
    return {"capabilities": caps}


def _id(r: Reader) -> dict:
    r.sp()
    if r.try_expect(b"NIL"):
        return {"params": None}
    items = r.paren_list(r.nstring)
    if len(items) % 2 or len(items) > 60:
        raise r.error("ID takes field/value pairs (at most 30)")
    return {"params": dict(zip(items[::2], items[1::2]))}


def _mailbox_only(r: Reader) -> dict:
    r.sp()
    return {"mailbox": r.mailbox()}


def _select(r: Reader) -> dict:
    r.sp()
    mailbox = r.mailbox()
    params: list[str] = []
    if r.try_sp():
        # select-params (RFC 4466): accepted and ignored unless we know them.
        params = [p.upper() for p in r.paren_list(r.atom)]
    return {"mailbox": mailbox, "params": params}


def _create(r: Reader) -> dict:
    r.sp()
    mailbox = r.mailbox()
    if r.try_sp():
        r.paren_list(lambda: _skip_value(r))
    return {"mailbox": mailbox}


def _skip_value(r: Reader) -> None:
    if r.peek() == b"(":
        r.paren_list(lambda: _skip_value(r))
    else:
        r.astring_bytes()


def _rename(r: Reader) -> dict:
    r.sp()
    old = r.mailbox()
    r.sp()
    return {"mailbox": old, "new": r.mailbox()}


def _list(r: Reader) -> dict:
    r.sp()
    select_opts: list[str] = []
    if r.peek() == b"(":
        # RFC 5258 list-select-opts: we honour SUBSCRIBED and SPECIAL-USE.
        select_opts = [o.upper() for o in r.paren_list(r.atom)]
        r.sp()
    ref = r.astring() if r.peek() not in (b'"', b"{") else _utf8(r.string(), r)
    r.sp()
    if r.peek() == b"(":
        patterns = r.paren_list(r.list_mailbox, allow_empty=False)
    else:
        patterns = [r.list_mailbox()]
    return_opts: list[str] = []
    if r.try_sp():
        r.expect(b"RETURN")
        r.sp()
        return_opts = [o.upper() for o in r.paren_list(lambda: _return_opt(r))]
    return {"reference": ref, "patterns": patterns, "select": select_opts, "return": return_opts}


def _return_opt(r: Reader) -> str:
    name = r.atom()
    if r.peek() == b" " and r.data[r.pos + 1 : r.pos + 2] == b"(":
        r.sp()
        r.paren_list(r.atom)
    return name


def _lsub(r: Reader) -> dict:
    r.sp()
    ref = r.astring()
    r.sp()
    return {"reference": ref, "patterns": [r.list_mailbox()], "select": ["SUBSCRIBED"], "return": []}


def _status(r: Reader) -> dict:
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    items = [i.upper() for i in r.paren_list(r.atom, allow_empty=False)]
    unknown = [i for i in items if i not in _STATUS_ITEMS]
    if unknown:
        raise r.error(f"Unknown STATUS item {unknown[0]}")
    return {"mailbox": mailbox, "items": items}


def _append(r: Reader) -> dict:
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    flags: list[str] = []
    when = None
    if r.peek() == b"(":
        flags = r.flag_list()
        r.sp()
    if r.peek() == b'"':
        when = r.date_time()
        r.sp()
    if r.peek() not in (b"{", b"~"):
        raise r.error("APPEND needs the message as a literal")
    message = r.literal()
    return {"mailbox": mailbox, "flags": flags, "date": when, "message": message}


def _fetch(r: Reader) -> dict:
    r.sp()
    seqs = r.sequence_set()
    r.sp()
    atts = r.fetch_atts()
    if r.try_sp():
        # fetch-modifiers (RFC 4466), e.g. CHANGEDSINCE: not supported.
        raise r.error("FETCH modifiers are not supported")
    return {"set": seqs, "atts": atts}


def _store(r: Reader) -> dict:
    r.sp()
    seqs = r.sequence_set()
    r.sp()
    if r.peek() == b"(":
        raise r.error("STORE modifiers (UNCHANGEDSINCE) are not supported")
    mode = "replace"
    if r.try_expect(b"+"):
        mode = "add"
    elif r.try_expect(b"-"):
        mode = "remove"
    r.expect(b"FLAGS")
    silent = r.try_expect(b".SILENT")
    r.sp()
    if r.peek() == b"(":
        flags = r.flag_list()
    else:
        flags = [r.flag()]
        while r.try_sp():
            flags.append(r.flag())
    return {"set": seqs, "mode": mode, "silent": silent, "flags": flags}


def _search(r: Reader) -> dict:
    r.sp()
    charset = None
    save = r.pos
    if r._run(_ATOM_CHARS).upper() == b"CHARSET":
        r.sp()
        charset = r.astring().upper()
        r.sp()
    else:
        r.pos = save
    if r.peek().upper() == b"R" and r.peek(7).upper() == b"RETURN ":
        raise r.error("SEARCH RETURN (ESEARCH) is not supported")
    return {"charset": charset, "key": r.search_keys()}


def _copy(r: Reader) -> dict:
    r.sp()
    seqs = r.sequence_set()
    r.sp()
    return {"set": seqs, "mailbox": r.mailbox()}


def _uid_expunge(r: Reader) -> dict:
    r.sp()
    return {"set": r.sequence_set()}


_GRAMMAR: dict[str, Callable[[Reader], dict]] = {
    "CAPABILITY": _no_args, "NOOP": _no_args, "LOGOUT": _no_args, "STARTTLS": _no_args,
    "AUTHENTICATE": _authenticate, "LOGIN": _login, "ENABLE": _enable, "ID": _id,
    "NAMESPACE": _no_args, "SELECT": _select, "EXAMINE": _select, "CREATE": _create,
    "DELETE": _mailbox_only, "RENAME": _rename, "SUBSCRIBE": _mailbox_only,
    "UNSUBSCRIBE": _mailbox_only, "LIST": _list, "LSUB": _lsub, "STATUS": _status,
    "APPEND": _append, "IDLE": _no_args, "CHECK": _no_args, "CLOSE": _no_args,
    "UNSELECT": _no_args, "EXPUNGE": _no_args, "SEARCH": _search, "FETCH": _fetch,
    "STORE": _store, "COPY": _copy, "MOVE": _copy,
}
_UID_GRAMMAR: dict[str, Callable[[Reader], dict]] = {
    "FETCH": _fetch, "STORE": _store, "SEARCH": _search, "COPY": _copy, "MOVE": _copy,
    "EXPUNGE": _uid_expunge,
}
COMMAND_NAMES = frozenset(_GRAMMAR)


def parse_command(data: bytes, limits: Limits | None = None) -> Command:
    """One complete command (its literals inline, as received) -> `Command`, or ParseError."""
    r = Reader(data, limits or Limits())
    tag_b = r._run(_ASTRING_CHARS.replace(b"+", b""))
    if not tag_b:
        raise ParseError("Missing or invalid tag")
    tag = tag_b.decode("ascii")
    try:
        if not r.try_sp():
            raise ParseError("Missing command")
        name = r._run(_ATOM_CHARS).upper().decode("ascii")
        uid = False
        grammar = _GRAMMAR
        if name == "UID":
            r.sp()
            uid = True
            name = r._run(_ATOM_CHARS).upper().decode("ascii")
            grammar = _UID_GRAMMAR
        if not name:
            raise ParseError("Missing command")
        parse = grammar.get(name)
        if parse is None:
            shown = name if len(name) <= 32 else name[:32] + "..."
            raise ParseError(f"Unknown command {'UID ' if uid else ''}{shown}")
        args = parse(r)
        r.end()
    except ParseError as exc:
        exc.tag = tag
        raise
    except (ValueError, IndexError, RecursionError) as exc:  # belt and braces: never leak others
        raise ParseError(f"Malformed command ({type(exc).__name__})", tag) from None
    return Command(tag, name, uid, args)
