"""APPEND (RFC 9051 6.3.12) with APPENDUID (RFC 4315).

The message goes through the session's `MailboxHandle.append`, which encrypts it to the
mailbox's certificates before the store sees it: nothing is ever stored in clear, whatever the path.
"""

from __future__ import annotations

import logging
from datetime import UTC
from typing import TYPE_CHECKING

from imap.flags import check_flags
from imap.protocol.commands import Append
from imap.protocol.response import Response, bad, ok
from imap.replies import refused
from mss.refusals import Reason, Refusal

if TYPE_CHECKING:
    from imap.session import Session

log = logging.getLogger("mss.imap")


async def append(session: Session, cmd: Append) -> list[Response]:
    raw = cmd.message
    if not raw:
        return [bad(cmd.tag, "APPEND needs a non-empty message")]
    flags, why = check_flags(cmd.flags)
    if why:
        return [bad(cmd.tag, why)]
    when = cmd.date.astimezone(UTC) if cmd.date else None  # SQLite keeps no offset
    try:
        ref = await session.box.append(cmd.mailbox, raw, flags, when)
    except Refusal as exc:
        # RFC 9051 6.3.12: a missing destination is answered TRYCREATE.
        return [refused(cmd.tag, exc, "TRYCREATE" if exc.reason is Reason.NO_SUCH_FOLDER else None)]
    log.info("imap append peer=%s mailbox=%s uid=%s", session.peer, session.mailbox, ref.uid)
    return [ok(cmd.tag, "APPEND completed", f"APPENDUID {ref.uidvalidity} {ref.uid}")]
