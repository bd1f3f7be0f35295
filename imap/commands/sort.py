"""SORT, THREAD, UID SORT and UID THREAD (RFC 5256).

The messages are chosen as SEARCH chooses them (`imap.commands.search.matching`: RFC 5256 3
says the search criteria are SEARCH's), then ordered or threaded by `imap.sorting` and
`imap.threading_algorithms`, which do no I/O. Everything they look at is in clear: the
stored metadata (INTERNALDATE, size) and the outer header fields (`From`, `To`, `Cc`,
`Subject`, `Date`, `Message-ID` from the store's columns, `In-Reply-To` and `References`
from the stored outer header section). Subject is the placeholder for mail MSS encrypted
itself, so SORT (SUBJECT) and the subject steps of threading see that placeholder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imap.commands.search import Candidate, decoded, matching
from imap.protocol.commands import Sort, Thread
from imap.protocol.response import Atom, Data, Response, Status, no, ok
from imap.sorting import SortMessage, base_subject, casemap, first_mailbox, sent_date, sort_messages
from imap.threading_algorithms import (
    ThreadMessage,
    message_ids,
    ordered_subject,
    references,
    references_of,
    thread_lists,
)

if TYPE_CHECKING:
    from imap.session import Session

#: RFC 5256 3: "The US-ASCII and [UTF-8] charsets MUST be implemented"; no other is.
CHARSETS = ("US-ASCII", "UTF-8")
#: The header fields each sort key reads.
_SORT_FIELDS = {"CC": "CC", "DATE": "DATE", "FROM": "FROM", "SUBJECT": "SUBJECT", "TO": "TO"}


def _bad_charset(cmd: Sort | Thread) -> Status | None:
    if cmd.charset in CHARSETS:
        return None
    return no(cmd.tag, f"Unsupported charset {cmd.charset}", f"BADCHARSET ({' '.join(CHARSETS)})")


def _subject(c: Candidate) -> tuple[str, bool]:
    """The base subject (RFC 5256 2.1, its encoded words decoded first), casemapped, and
    whether it was a reply or forward."""
    base, reply = base_subject(decoded(c.header("SUBJECT")))
    return casemap(base), reply


async def sort(session: Session, cmd: Sort) -> list[Response]:
    """RFC 5256 3: `* SORT` with the sequence numbers (UIDs for UID SORT) in order."""
    refused = _bad_charset(cmd)
    if refused is not None:
        return [refused]
    keys = {c.key for c in cmd.criteria}
    found = await matching(session, cmd.key, fields=[_SORT_FIELDS[k] for k in keys if k in _SORT_FIELDS])
    messages = [
        SortMessage(
            number=c.uid if cmd.uid else c.seq,
            seq=c.seq,
            arrival=c.meta.internaldate,
            size=c.meta.size,
            sent=sent_date(c.header("DATE"), c.meta.internaldate) if "DATE" in keys else c.meta.internaldate,
            subject=_subject(c)[0] if "SUBJECT" in keys else "",
            from_=casemap(first_mailbox(c.header("FROM"))) if "FROM" in keys else "",
            to=casemap(first_mailbox(c.header("TO"))) if "TO" in keys else "",
            cc=casemap(first_mailbox(c.header("CC"))) if "CC" in keys else "",
        )
        for c in found
    ]
    return [Data(Atom("SORT"), *sort_messages(messages, cmd.criteria)), ok(cmd.tag, f"{cmd.full_name} completed")]


#: The fields each algorithm reads (In-Reply-To and References from the stored header section).
_THREAD_FIELDS = {
    "ORDEREDSUBJECT": ("SUBJECT", "DATE"),
    "REFERENCES": ("SUBJECT", "DATE", "MESSAGE-ID", "IN-REPLY-TO", "REFERENCES"),
}


def _thread_message(c: Candidate, uid: bool, links: bool) -> ThreadMessage:
    subject, reply = _subject(c)
    ids = message_ids(c.header("MESSAGE-ID")) if links else []
    return ThreadMessage(
        number=c.uid if uid else c.seq,
        seq=c.seq,
        sent=sent_date(c.header("DATE"), c.meta.internaldate),
        subject=subject,
        reply=reply,
        message_id=ids[0] if ids else None,
        references=references_of(c.header("REFERENCES"), c.header("IN-REPLY-TO")) if links else (),
    )


async def thread(session: Session, cmd: Thread) -> list[Response]:
    """RFC 5256 3: `* THREAD` with the threads of the searched messages, by sequence number
    (UIDs for UID THREAD)."""
    refused = _bad_charset(cmd)
    if refused is not None:
        return [refused]
    found = await matching(session, cmd.key, fields=_THREAD_FIELDS[cmd.algorithm])
    links = cmd.algorithm == "REFERENCES"
    messages = [_thread_message(c, cmd.uid, links) for c in found]
    roots = references(messages) if links else ordered_subject(messages)
    text = thread_lists(roots)
    data = Data(Atom("THREAD"), Atom(text)) if text else Data(Atom("THREAD"))
    return [data, ok(cmd.tag, f"{cmd.full_name} completed")]
