"""Command objects produced by the parser (RFC 9051 6 and 9, "Formal Syntax").

One frozen dataclass per command *shape*: SELECT and EXAMINE are both a `Select` (told apart
by `readonly`), COPY and MOVE both a `Copy`, and so on. Every command has its `tag` and its
`name` (upper-case, as received); the commands that also exist as `UID <name>` (RFC 9051
6.4.9) are `UidCommand`s with a `uid` flag, and `full_name` shows `UID FETCH`. Which name
parses into which class is written once, in `imap.protocol.grammar.COMMANDS`.

Arguments are already typed and checked by the grammar, so a handler never looks inside a
dictionary and never re-parses anything. Sequences are tuples: a command is a value.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal, Union

MAX_NUMBER = 2**32 - 1  # RFC 9051 9: number = 1*DIGIT ; Unsigned 32-bit integer


@dataclass(frozen=True)
class SequenceSet:
    """`sequence-set` (RFC 9051 9): comma-separated numbers and ranges; `None` stands for `*`.

    Ranges are unordered (`4:2` is `2:4`). What `*` means depends on the caller: the
    highest sequence number, or the highest UID in use for UID commands.
    """

    ranges: tuple[tuple[int | None, int | None], ...]

    def contains(self, n: int, star: int) -> bool:
        for lo, hi in self.ranges:
            a = star if lo is None else lo
            b = star if hi is None else hi
            if a > b:
                a, b = b, a
            if a <= n <= b:
                return True
        return False

    def select(self, values: Iterable[int], star: int) -> list[int]:
        """The members of `values` (sorted) that this set names."""
        return [v for v in values if self.contains(v, star)]

    def numbers(self) -> Iterator[int]:
        """Explicit numbers only (used to tell whether a set names anything past `star`)."""
        for lo, hi in self.ranges:
            for x in (lo, hi):
                if x is not None:
                    yield x

    def __str__(self) -> str:
        def one(x: int | None) -> str:
            return "*" if x is None else str(x)

        return ",".join(one(lo) if lo == hi else f"{one(lo)}:{one(hi)}" for lo, hi in self.ranges)

    @staticmethod
    def compact(values: Iterable[int]) -> str:
        """`1,2,3,7` -> `1:3,7` (for COPYUID and friends, RFC 4315 uid-set)."""
        out: list[str] = []
        vals = sorted(set(values))
        i = 0
        while i < len(vals):
            j = i
            while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
                j += 1
            out.append(str(vals[i]) if i == j else f"{vals[i]}:{vals[j]}")
            i = j + 1
        return ",".join(out)


@dataclass(frozen=True)
class Section:
    """`section` of BODY[...] (RFC 9051 6.4.5): part path, then an optional text specifier.

    `text` is one of None, "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME".
    """

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        spec = ".".join(str(p) for p in self.part)
        if self.text:
            spec = f"{spec}.{self.text}" if spec else self.text
            if self.fields:
                spec += " (" + " ".join(self.fields) + ")"
        return spec


@dataclass(frozen=True)
class FetchAtt:
    """One `fetch-att`. `name` is upper-case: FLAGS, UID, BODY, BODY.PEEK, RFC822.SIZE, ..."""

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None  # (offset, length)

    @property
    def peek(self) -> bool:
        return self.name == "BODY.PEEK"

    def response_name(self, offset_only: bool = True) -> str:
        """The item name echoed in the FETCH response: BODY.PEEK[x]<o.l> -> BODY[x]<o>."""
        if self.section is None:
            return self.name
        base = f"BODY[{self.section}]"
        if self.partial is not None:
            base += f"<{self.partial[0]}>"
        return base


# -- search keys (RFC 9051 6.4.4) ----------------------------------------------------------
#
# A small tree of tuples, the first item naming the key (the grammar folds synonyms: NEW and
# RECENT are NONE since this server never sets \Recent, SEEN is ("FLAG", "\\Seen", True)):
#   ("ALL",) ("NONE",) ("FLAG", "\\Seen", True) ("HEADER", "FROM", "x") ("TEXT", "x") ("BODY", "x")
#   ("BEFORE"|"ON"|"SINCE"|"SENTBEFORE"|"SENTON"|"SENTSINCE", date)
#   ("LARGER"|"SMALLER", n) ("SEQ", SequenceSet) ("UID", SequenceSet)
#   ("AND", (k, ...)) ("OR", k1, k2) ("NOT", k)

DateKey = Literal["BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"]
SearchKey = Union[  # noqa: UP007 - recursive alias: `|` cannot take a forward reference
    tuple[Literal["ALL", "NONE"]],
    tuple[Literal["FLAG"], str, bool],
    tuple[Literal["HEADER"], str, str],
    tuple[Literal["TEXT", "BODY"], str],
    tuple[DateKey, date],
    tuple[Literal["LARGER", "SMALLER"], int],
    tuple[Literal["SEQ", "UID"], SequenceSet],
    tuple[Literal["AND"], tuple["SearchKey", ...]],
    tuple[Literal["OR"], "SearchKey", "SearchKey"],
    tuple[Literal["NOT"], "SearchKey"],
]


class Secret(bytes):
    """Credentials in a command (LOGIN's password, a SASL initial response): plain bytes
    whose repr hides them, so a logged command never shows a password or a token."""

    def __repr__(self) -> str:
        return f"<secret {len(self)} octets>"

    __str__ = __repr__


# -- commands --------------------------------------------------------------------------------
# kw_only: every field is named where a command is built, so a reordering can never swap
# two strings silently (a mailbox for a reference, a user for a password).


@dataclass(frozen=True, kw_only=True)
class Command:
    """What every command has: its tag and its name (upper-case, as received)."""

    tag: str
    name: str

    @property
    def full_name(self) -> str:
        return self.name


@dataclass(frozen=True, kw_only=True)
class UidCommand(Command):
    """A command that also exists as `UID <name>` (RFC 9051 6.4.9): with `uid`, message
    numbers are UIDs, and `*` is the highest UID in use."""

    uid: bool = False

    @property
    def full_name(self) -> str:
        return f"UID {self.name}" if self.uid else self.name


# any state (RFC 9051 6.1)


@dataclass(frozen=True, kw_only=True)
class Capability(Command):
    """CAPABILITY (RFC 9051 6.1.1)."""


@dataclass(frozen=True, kw_only=True)
class Noop(Command):
    """NOOP (RFC 9051 6.1.2): nothing, except the untagged updates of the selected folder."""


@dataclass(frozen=True, kw_only=True)
class Logout(Command):
    """LOGOUT (RFC 9051 6.1.3)."""


@dataclass(frozen=True, kw_only=True)
class Id(Command):
    """ID (RFC 2971): the client's field/value pairs, or None for `ID NIL`."""

    params: tuple[tuple[str | None, str | None], ...] | None


# not authenticated (RFC 9051 6.2)


@dataclass(frozen=True, kw_only=True)
class StartTls(Command):
    """STARTTLS (RFC 9051 6.2.1)."""


@dataclass(frozen=True, kw_only=True)
class Authenticate(Command):
    """AUTHENTICATE (RFC 9051 6.2.2), with the RFC 4959 initial response (base64, or "=")."""

    mechanism: str
    initial: Secret | None = None


@dataclass(frozen=True, kw_only=True)
class Login(Command):
    """LOGIN (RFC 9051 6.2.3): here, a mailbox address and its app password."""

    user: str
    password: Secret


# authenticated (RFC 9051 6.3)


@dataclass(frozen=True, kw_only=True)
class Enable(Command):
    """ENABLE (RFC 5161)."""

    capabilities: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Namespace(Command):
    """NAMESPACE (RFC 2342)."""


@dataclass(frozen=True, kw_only=True)
class Select(Command):
    """SELECT, and EXAMINE when `readonly` (RFC 9051 6.3.2, 6.3.3); `params` are the
    RFC 4466 select-params, upper-case (none is acted on yet)."""

    mailbox: str
    readonly: bool = False
    params: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Create(Command):
    """CREATE (RFC 9051 6.3.4), the name as sent (a trailing delimiter included);
    `special_use` the RFC 6154 3 `USE (...)` attributes asked for, as sent."""

    mailbox: str
    special_use: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Delete(Command):
    """DELETE (RFC 9051 6.3.5)."""

    mailbox: str


@dataclass(frozen=True, kw_only=True)
class Rename(Command):
    """RENAME (RFC 9051 6.3.6)."""

    mailbox: str
    new: str


@dataclass(frozen=True, kw_only=True)
class Subscribe(Command):
    """SUBSCRIBE, or UNSUBSCRIBE when not `subscribed` (RFC 9051 6.3.7, 6.3.8)."""

    mailbox: str
    subscribed: bool = True


@dataclass(frozen=True, kw_only=True)
class List(Command):
    """LIST (RFC 9051 6.3.9, RFC 5258 extended forms) and LSUB (RFC 3501 6.3.9, which
    the grammar reads as LIST (SUBSCRIBED)); `name` says which to answer with."""

    reference: str
    patterns: tuple[str, ...]
    select: tuple[str, ...] = ()
    return_: tuple[str, ...] = ()
    #: RETURN (STATUS (...)) items, upper-case (RFC 5819); empty without STATUS.
    status_items: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Status(Command):
    """STATUS (RFC 9051 6.3.11): the items asked for, upper-case, in the order asked."""

    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Append(Command):
    """APPEND (RFC 9051 6.3.12): the message literal as received."""

    mailbox: str
    flags: tuple[str, ...] = ()
    date: datetime | None = None
    message: bytes


@dataclass(frozen=True, kw_only=True)
class Idle(Command):
    """IDLE (RFC 2177)."""


@dataclass(frozen=True, kw_only=True)
class GetQuota(Command):
    """GETQUOTA (RFC 9208 4.2): the quota root named."""

    root: str


@dataclass(frozen=True, kw_only=True)
class GetQuotaRoot(Command):
    """GETQUOTAROOT (RFC 9208 4.3): the mailbox whose quota roots are asked for."""

    mailbox: str


@dataclass(frozen=True, kw_only=True)
class SetQuota(Command):
    """SETQUOTA (RFC 9208 4.1): the root and the (resource name upper-case, limit) pairs."""

    root: str
    limits: tuple[tuple[str, int], ...] = ()


# selected (RFC 9051 6.4)


@dataclass(frozen=True, kw_only=True)
class Check(Command):
    """CHECK (RFC 3501 6.4.1; gone from RFC 9051, kept for IMAP4rev1 clients): a NOOP that
    only the selected state accepts."""


@dataclass(frozen=True, kw_only=True)
class Unselect(Command):
    """UNSELECT (RFC 3691), and CLOSE when `expunge` (RFC 9051 6.4.1: CLOSE is UNSELECT
    that first expunges, silently, unless the folder is read-only)."""

    expunge: bool = False


@dataclass(frozen=True, kw_only=True)
class Expunge(UidCommand):
    """EXPUNGE (RFC 9051 6.4.3); UID EXPUNGE (RFC 4315 2.1) only of the UIDs in `set`."""

    set: SequenceSet | None = None


@dataclass(frozen=True, kw_only=True)
class Search(UidCommand):
    """SEARCH (RFC 9051 6.4.4): `charset` upper-case when given. `return_` holds the
    ESEARCH result options (RFC 4731 3: MIN, MAX, ALL, COUNT; empty means ALL), None for a
    classic SEARCH."""

    charset: str | None = None
    key: SearchKey
    return_: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class Fetch(UidCommand):
    """FETCH (RFC 9051 6.4.5), macros (ALL, FAST, FULL) already expanded."""

    set: SequenceSet
    atts: tuple[FetchAtt, ...]


StoreMode = Literal["replace", "add", "remove"]


@dataclass(frozen=True, kw_only=True)
class Store(UidCommand):
    """STORE (RFC 9051 6.4.6): FLAGS (`replace`), +FLAGS (`add`) or -FLAGS (`remove`),
    `.SILENT` or not; system flags already in their canonical case."""

    set: SequenceSet
    mode: StoreMode
    silent: bool = False
    flags: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Copy(UidCommand):
    """COPY (RFC 9051 6.4.7), and MOVE when `move` (RFC 6851)."""

    set: SequenceSet
    mailbox: str
    move: bool = False
