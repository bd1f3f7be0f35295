"""APPEND (RFC 9051 6.3.12) and MULTIAPPEND (RFC 3502) with APPENDUID (RFC 4315).

The messages go through the session's `MailboxHandle.append_many`, which encrypts each to the
mailbox's certificates before the store sees it: nothing is ever stored in clear, whatever
the path. A MULTIAPPEND is all or nothing (RFC 3502 3): one message refused, here or in the
core, and none is stored.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from imap.flags import check_flags
from imap.protocol.commands import Append, SequenceSet
from imap.protocol.response import Response, bad, ok
from imap.replies import refused
from mss.refusals import Reason, Refusal

if TYPE_CHECKING:
    from imap.session import Session

log = logging.getLogger("mss.imap")


async def append(session: Session, cmd: Append) -> list[Response]:
    items: list[tuple[bytes, list[str], datetime | None]] = []
    for n, m in enumerate(cmd.messages, 1):
        which = f" (message {n})" if len(cmd.messages) > 1 else ""
        if not m.message:
            return [bad(cmd.tag, f"APPEND needs a non-empty message{which}")]
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
