"""APPEND (RFC 9051 6.3.12) and MULTIAPPEND (RFC 3502) with APPENDUID (RFC 4315), each message
as a literal8 too (RFC 3516 4.4).

The messages go through the session's `MailboxHandle.append_many`, which encrypts each to the
mailbox's certificates before the store sees it: nothing is ever stored in clear, whatever
the path. A MULTIAPPEND is all or nothing (RFC 3502 3): one message refused, here or in the
core, and none is stored.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from imap.flags import check_flags
from imap.protocol.commands import Append, SequenceSet
from imap.protocol.response import Response, bad, no, ok
from imap.replies import refused
from mss.refusals import Reason, Refusal

if TYPE_CHECKING:
    from imap.session import Session

log = logging.getLogger("mss.imap")

#: What makes content binary (RFC 3516 1): NUL, or CR and LF that are not a line end. MSS
#: stores neither (RFC 5322 2.2, 3.5; DESIGN.md "Bad input").
_BINARY = re.compile(rb"\x00|\r(?!\n)|(?<!\r)\n")


async def append(session: Session, cmd: Append) -> list[Response]:
    items: list[tuple[bytes, list[str], datetime | None]] = []
    for n, m in enumerate(cmd.messages, 1):
        which = f" (message {n})" if len(cmd.messages) > 1 else ""
        if not m.message:
            return [bad(cmd.tag, f"APPEND needs a non-empty message{which}")]
        if m.utf8 and not session.utf8_accept:
            return [bad(cmd.tag, "APPEND UTF8 (...) needs ENABLE UTF8=ACCEPT first (RFC 6855 4)")]
        if m.binary and _BINARY.search(m.message):
            # RFC 3516 4.4: a mailbox that cannot store binary content fails the APPEND so.
            text = f"This server does not store binary content (NUL, bare CR or LF){which}"
            return [no(cmd.tag, text, "UNKNOWN-CTE")]
        flags, why = check_flags(m.flags)
        if why:
            return [bad(cmd.tag, why + which)]
        when = m.date.astimezone(UTC) if m.date else None  # SQLite keeps no offset
        items.append((m.message, flags, when))
    try:
        refs = await session.box.append_many(cmd.mailbox, items)
    except Refusal as exc:
        # RFC 9051 6.3.12: a missing destination is answered TRYCREATE.
        return [refused(cmd.tag, exc, "TRYCREATE" if exc.reason is Reason.NO_SUCH_FOLDER else None)]
    uids = SequenceSet.compact(r.uid for r in refs)
    log.info("imap append peer=%s mailbox=%s uids=%s", session.peer, session.mailbox, uids)
    # RFC 4315 3: a MULTIAPPEND's APPENDUID carries the set of the UIDs, in order.
    return [ok(cmd.tag, "APPEND completed", f"APPENDUID {refs[0].uidvalidity} {uids}")]
