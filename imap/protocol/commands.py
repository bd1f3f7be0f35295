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
MAX_MODSEQ = 2**63 - 1  # RFC 7162 7: mod-sequence-value, 1 <= n <= 9,223,372,036,854,775,807


@dataclass(frozen=True)
class SequenceSet:
    """`sequence-set` (RFC 9051 9): comma-separated numbers and ranges; `None` stands for `*`.

    Ranges are unordered (`4:2` is `2:4`). What `*` means depends on the caller: the
    highest sequence number, or the highest UID in use for UID commands.

    `saved` is `$` (RFC 5182 3, seq-last-command): the session's saved search result, with
    no ranges. The parser keeps no state, so only the selected folder's view knows what `$`
    holds (`imap.view.FolderView.resolve`); `contains` refuses to guess.
    """

    ranges: tuple[tuple[int | None, int | None], ...]
    saved: bool = False

    def contains(self, n: int, star: int) -> bool:
        if self.saved:
            raise ValueError("$ is resolved by the folder view, not by the set")
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
        if self.saved:
            return "$"

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
    """One `fetch-att`. `name` is upper-case: FLAGS, UID, BODY, BODY.PEEK, RFC822.SIZE, ...,
    and the RFC 3516 BINARY, BINARY.PEEK and BINARY.SIZE (whose section is a part path only)."""

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None  # (offset, length)

    @property
    def peek(self) -> bool:
        return self.name in ("BODY.PEEK", "BINARY.PEEK")

    @property
    def binary(self) -> bool:
        """BINARY, BINARY.PEEK or BINARY.SIZE (RFC 3516 4.2): the part's content decoded."""
        return self.name.startswith("BINARY")

    def response_name(self, offset_only: bool = True) -> str:
        """The item name echoed in the FETCH response: BODY.PEEK[x]<o.l> -> BODY[x]<o>,
        BINARY.PEEK[1]<o.l> -> BINARY[1]<o> (RFC 3516 4.3), BINARY.SIZE[1] as it is."""
        if self.section is None:
            return self.name
        if self.name == "BINARY.SIZE":
            return f"BINARY.SIZE[{self.section}]"
        base = f"{'BINARY' if self.binary else 'BODY'}[{self.section}]"
        if self.partial is not None:
            base += f"<{self.partial[0]}>"
        return base


# -- search keys (RFC 9051 6.4.4) ----------------------------------------------------------
#
# A small tree of tuples, the first item naming the key (the grammar folds synonyms: NEW and
# RECENT are NONE since this server never sets \Recent, SEEN is ("FLAG", "\\Seen", True)):
#   ("ALL",) ("NONE",) ("FLAG", "\\Seen", True) ("HEADER", "FROM", "x") ("TEXT", "x") ("BODY", "x")
#   ("BEFORE"|"ON"|"SINCE"|"SENTBEFORE"|"SENTON"|"SENTSINCE", date)
#   ("LARGER"|"SMALLER", n) ("MODSEQ", n) ("SEQ", SequenceSet) ("UID", SequenceSet)
#   ("AND", (k, ...)) ("OR", k1, k2) ("NOT", k)

DateKey = Literal["BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"]
SearchKey = Union[  # noqa: UP007 - recursive alias: `|` cannot take a forward reference
    tuple[Literal["ALL", "NONE"]],
    tuple[Literal["FLAG"], str, bool],
    tuple[Literal["HEADER"], str, str],
    tuple[Literal["TEXT", "BODY"], str],
    tuple[DateKey, date],
    tuple[Literal["LARGER", "SMALLER", "MODSEQ"], int],
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


@dataclass(frozen=True)
class Qresync:
    """The QRESYNC select parameter (RFC 7162 3.2.5): what the client last knew of the
    folder. `known_uids` limits what is reported; the sequence match data that may follow
    it is parsed and not needed (this server keeps every expunged UID's MODSEQ)."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None


@dataclass(frozen=True, kw_only=True)
class Select(Command):
    """SELECT, and EXAMINE when `readonly` (RFC 9051 6.3.2, 6.3.3), with the RFC 7162
    select-params: `(CONDSTORE)` and `(QRESYNC (...))`; other RFC 4466 parameters are
    skipped."""

    mailbox: str
    readonly: bool = False
    condstore: bool = False
    qresync: Qresync | None = None


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


@dataclass(frozen=True)
class AppendMessage:
    """One message of an APPEND: its literal as received, the flags and the date-time
    given before it (RFC 9051 6.3.12); `binary` when it came as a literal8 (RFC 3516 4.4),
    `utf8` when as the RFC 6855 4 `UTF8 (literal8)` data."""

    message: bytes
    flags: tuple[str, ...] = ()
    date: datetime | None = None
    binary: bool = False
    utf8: bool = False


@dataclass(frozen=True, kw_only=True)
class Append(Command):
    """APPEND (RFC 9051 6.3.12) of one message or, with MULTIAPPEND (RFC 3502 3), of
    several into the same folder, in the order sent: stored all together or none."""

    mailbox: str
    messages: tuple[AppendMessage, ...]


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


@dataclass(frozen=True, kw_only=True)
class Acl(Command):
    """The RFC 4314 3 commands, one class: SETACL, DELETEACL, GETACL, LISTRIGHTS, MYRIGHTS
    (`name`). `identifier` for SETACL, DELETEACL, LISTRIGHTS; `rights` for SETACL (its
    `mod-rights`, with a leading "+" or "-" kept)."""

    mailbox: str
    identifier: str | None = None
    rights: str | None = None


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
    ESEARCH result options (RFC 4731 3: MIN, MAX, ALL, COUNT), None for a classic SEARCH;
    `RETURN ()` is ALL. `save` is the RFC 5182 SAVE option, kept apart: `RETURN (SAVE)`
    alone is `return_=()`, `save=True`, and answers with no ESEARCH response."""

    charset: str | None = None
    key: SearchKey
    return_: tuple[str, ...] | None = None
    save: bool = False


@dataclass(frozen=True, kw_only=True)
class Fetch(UidCommand):
    """FETCH (RFC 9051 6.4.5), macros (ALL, FAST, FULL) already expanded."""

    set: SequenceSet
    atts: tuple[FetchAtt, ...]
    #: RFC 7162 3.1.4.1 CHANGEDSINCE: only messages whose MODSEQ is above it.
    changed_since: int | None = None
    #: RFC 7162 3.2.6 VANISHED (UID FETCH with CHANGEDSINCE, QRESYNC enabled).
    vanished: bool = False


StoreMode = Literal["replace", "add", "remove"]


@dataclass(frozen=True, kw_only=True)
class Store(UidCommand):
    """STORE (RFC 9051 6.4.6): FLAGS (`replace`), +FLAGS (`add`) or -FLAGS (`remove`),
    `.SILENT` or not; system flags already in their canonical case."""

    set: SequenceSet
    mode: StoreMode
    silent: bool = False
    flags: tuple[str, ...]
    #: RFC 7162 3.1.3 UNCHANGEDSINCE: change only messages whose MODSEQ is not above it.
    unchanged_since: int | None = None


@dataclass(frozen=True, kw_only=True)
class Copy(UidCommand):
    """COPY (RFC 9051 6.4.7), and MOVE when `move` (RFC 6851)."""

    set: SequenceSet
    mailbox: str
    move: bool = False


#: RFC 5256 3 sort-key.
SortKey = Literal["ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO"]
#: RFC 5256 3 thread-alg: the two algorithms of sections 4 and 5.
ThreadAlgorithm = Literal["ORDEREDSUBJECT", "REFERENCES"]


@dataclass(frozen=True)
class SortCriterion:
    """One RFC 5256 3 sort-criterion: a sort key, descending when `reverse` (REVERSE
    turns round this key only, never the sequence-number tie-breaker)."""

    key: SortKey
    reverse: bool = False


@dataclass(frozen=True, kw_only=True)
class Sort(UidCommand):
    """SORT (RFC 5256 3): the criteria in order, the charset (mandatory here, unlike
    SEARCH; upper-case) and the search criteria, read as SEARCH reads them."""

    criteria: tuple[SortCriterion, ...]
    charset: str
    key: SearchKey


@dataclass(frozen=True, kw_only=True)
class Thread(UidCommand):
    """THREAD (RFC 5256 3): the algorithm, the charset (upper-case) and the search criteria."""

    algorithm: ThreadAlgorithm
    charset: str
    key: SearchKey
