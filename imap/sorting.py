"""SORT (RFC 5256 2 and 3) as plain computation: base subjects, sent dates, sort keys.

No I/O and no session here: `imap.commands.sort` reads the messages and their clear outer
header fields, this module orders them. Every function is linear in its input (header
values come from whoever sent the mail), and sorting is one stable `sorted` per criterion.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import getaddresses, parsedate_to_datetime

from imap.protocol.commands import SortCriterion

# -- i;ascii-casemap (RFC 4790 9.2), the comparator RFC 5256 uses --------------------------

_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def casemap(text: str) -> str:
    """`text` as i;ascii-casemap compares it: the 26 ASCII letters folded to upper case,
    everything else compared as it is (octets of UTF-8 order as code points do)."""
    return text.translate(_ASCII_UPPER)


# -- base subject (RFC 5256 2.1) -----------------------------------------------------------

_WSP = " \t"
_TO_SPACE = str.maketrans("\t\r\n", "   ")
_SPACES = re.compile(" {2,}")
#: subj-blob = "[" *BLOBCHAR "]" *WSP, BLOBCHAR any character but "[" and "]".
_BLOB = re.compile(r"\[[^\[\]]*\][ \t]*")
#: A run of subj-blob (no backtracking is ever needed: a blob starts with "[", what may
#: follow a run never does).
_BLOBS = re.compile(r"(?:\[[^\[\]]*\][ \t]*)*")
#: subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
_REFWD = re.compile(r"(?:re|fwd?)[ \t]*(?:\[[^\[\]]*\][ \t]*)?:", re.IGNORECASE)
_FWD_TRAILER = "(FWD)"
_FWD_HEADER = "[FWD:"


def base_subject(subject: str) -> tuple[str, bool]:
    """RFC 5256 2.1: the base subject of `subject` (its RFC 2047 words already decoded, step
    (1)'s first half, by the caller), and whether the extraction removed a subj-refwd, a
    "(fwd)" trailer or a "[fwd: ...]" wrapper, which makes the message a reply or forward
    (RFC 5256 5, step 5).

    The steps are those of the RFC, on indices into one string so each character is looked
    at a bounded number of times: a subject of n characters costs O(n).
    """
    # (1) Tabs and continuations to a space, runs of spaces to one.
    s = _SPACES.sub(" ", subject.translate(_TO_SPACE))
    start, end = 0, len(s)
    reply = False
    while True:
        # (2) Trailing subj-trailer ("(fwd)" / WSP), as long as one is there.
        while end > start:
            if s[end - 1] in _WSP:
                end -= 1
            elif end - start >= 5 and s[end - 5 : end].upper() == _FWD_TRAILER:
                end -= 5
                reply = True
            else:
                break
        # (3) to (5): leading subj-leader, then a subj-blob that leaves something, again.
        no_refwd_before = start  # a blob run starting below this is known to end without a refwd
        while start < end:
            if s[start] in _WSP:
                start += 1
                continue
            if start >= no_refwd_before:
                run_end = min(_BLOBS.match(s, start, end).end(), end)
                m = _REFWD.match(s, run_end, end)
                if m is not None:
                    start = m.end()
                    reply = True
                    continue
                no_refwd_before = run_end
            blob = _BLOB.match(s, start, end)
            if blob is not None and blob.end() < end:
                start = blob.end()
                continue
            break
        # (6) "[fwd:" ... "]": unwrap and go again from (2).
        if end - start >= 6 and s[start : start + 5].upper() == _FWD_HEADER and s[end - 1] == "]":
            start += 5
            end -= 1
            reply = True
            continue
        # (7)
        return s[start:end], reply


# -- sent date (RFC 5256 2.2) and addresses (RFC 5256 3) -----------------------------------


def as_utc(when: datetime) -> datetime:
    """A naive time is taken as UTC (RFC 5256 2.2: "If the time zone is invalid, the date
    and time SHOULD be treated as UTC")."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def sent_date(value: str, internaldate: datetime) -> datetime:
    """RFC 5256 2.2: the Date field in UTC, or the INTERNALDATE when the field is missing
    or cannot be parsed."""
    if value.strip():
        try:
            return as_utc(parsedate_to_datetime(value))
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    return as_utc(internaldate)


def first_mailbox(value: str) -> str:
    """RFC 5256 3: the addr-mailbox (the local part, as ENVELOPE gives it) of the first
    address in an address field; "" when there is none."""
    if not value.strip():
        return ""
    for _name, addr in getaddresses([" ".join(value.split())]):
        if addr:
            return addr.rpartition("@")[0] if "@" in addr else addr
    return ""


# -- SORT (RFC 5256 3) ---------------------------------------------------------------------


@dataclass(frozen=True)
class SortMessage:
    """What SORT needs of one message: the number to answer with (sequence number or UID),
    its sequence number (the last tie-breaker), and its values for each sort key."""

    number: int
    seq: int
    arrival: datetime
    size: int
    sent: datetime
    subject: str = ""  # base subject, casemapped
    from_: str = ""  # addr-mailbox of the first address, casemapped
    to: str = ""
    cc: str = ""


def sort_key(message: SortMessage, key: str) -> datetime | int | str:
    if key == "ARRIVAL":
        return message.arrival
    if key == "DATE":
        return message.sent
    if key == "SIZE":
        return message.size
    if key == "SUBJECT":
        return message.subject
    if key == "FROM":
        return message.from_
    if key == "TO":
        return message.to
    if key == "CC":
        return message.cc
    raise ValueError(f"unknown sort key {key}")  # pragma: no cover - the grammar knows the keys


def sort_messages(messages: Iterable[SortMessage], criteria: Sequence[SortCriterion]) -> list[int]:
    """RFC 5256 3: the numbers of `messages` ordered by the criteria, the first deciding
    first; messages equal on every criterion in sequence-number order, which REVERSE never
    turns round. One stable sort per criterion, the last criterion first."""
    ordered = sorted(messages, key=lambda m: m.seq)
    for criterion in reversed(criteria):
        ordered.sort(key=lambda m, k=criterion.key: sort_key(m, k), reverse=criterion.reverse)
    return [m.number for m in ordered]
