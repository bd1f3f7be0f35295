"""Command objects produced by the parser (RFC 3501 / RFC 9051 section 9, "Formal Syntax").

A `Command` carries its tag, its upper-case name, whether it came as `UID <name>`, and
arguments already typed for that command (see `imap.protocol.parser` for which).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Iterable, Iterator, Union

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


# Search keys (RFC 9051 6.4.4) as a small tree of tuples:
#   ("ALL",) ("NONE",) ("FLAG", "\\Seen", True) ("HEADER", "FROM", "x") ("TEXT", "x") ("BODY", "x")
#   ("BEFORE"|"ON"|"SINCE"|"SENTBEFORE"|"SENTON"|"SENTSINCE", date)
#   ("LARGER"|"SMALLER", n) ("SEQ", SequenceSet) ("UID", SequenceSet)
#   ("AND", (k, ...)) ("OR", k1, k2) ("NOT", k)
SearchKey = tuple


class Secret(bytes):
    """Credentials in a command (LOGIN's password, a SASL initial response): plain bytes
    whose repr hides them, so a logged `Command` never shows a password or a token."""

    def __repr__(self) -> str:
        return f"<secret {len(self)} octets>"

    __str__ = __repr__


@dataclass(frozen=True)
class Command:
    tag: str
    name: str
    uid: bool = False
    args: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.args[key]

    @property
    def full_name(self) -> str:
        return f"UID {self.name}" if self.uid else self.name


DateLike = Union[date, datetime]
