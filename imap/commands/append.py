"""APPEND (RFC 9051 6.3.12) with APPENDUID (RFC 4315), the message as a literal8 too (RFC 3516 4.4).

The message goes through the session's `MailboxHandle.append`, which encrypts it to the
mailbox's certificates before the store sees it: nothing is ever stored in clear, whatever the path.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC
from typing import TYPE_CHECKING

from imap.flags import check_flags
from imap.protocol.commands import Append
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
    raw = cmd.message
    if not raw:
        return [bad(cmd.tag, "APPEND needs a non-empty message")]
    if cmd.utf8 and not session.utf8_accept:
        return [bad(cmd.tag, "APPEND UTF8 (...) needs ENABLE UTF8=ACCEPT first (RFC 6855 4)")]
    if cmd.binary and _BINARY.search(raw):
        # RFC 3516 4.4: a mailbox that cannot store binary content fails the APPEND so.
        return [no(cmd.tag, "This server does not store binary content (NUL, bare CR or LF)", "UNKNOWN-CTE")]
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
