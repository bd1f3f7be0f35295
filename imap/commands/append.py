"""APPEND (RFC 9051 6.3.12) with APPENDUID (RFC 4315).

The message goes through `core.mailboxes.append`, which encrypts it to the mailbox's
certificates before the store sees it: nothing is ever stored in clear, whatever the path.
"""
from __future__ import annotations

import logging
from datetime import timezone

from mss.refusals import Refusal
from mss.store import StoreError

from imap.flags import check_flags
from imap.protocol.commands import Command
from imap.protocol.response import Response, bad, no, ok
from imap.replies import refused

log = logging.getLogger("mss.imap")


async def append(session, cmd: Command) -> list[Response]:
    raw: bytes = cmd["message"]
    if not raw:
        return [bad(cmd.tag, "APPEND needs a non-empty message")]
    flags, why = check_flags(cmd["flags"])
    if why:
        return [bad(cmd.tag, why)]
    info = await session.core.store.get_folder(session.mailbox, cmd["mailbox"])
    if info is None:
        return [no(cmd.tag, f"No folder {cmd['mailbox']}", "TRYCREATE")]
    when = cmd["date"].astimezone(timezone.utc) if cmd["date"] else None  # SQLite keeps no offset
    try:
        ref = await session.core.mailboxes.append(
            session.principal, session.mailbox, info.name, raw, flags, when
        )
    except Refusal as exc:
        return [refused(cmd.tag, exc)]
    except PermissionError:
        return [no(cmd.tag, "Not allowed to write to this mailbox", "NOPERM")]
    except StoreError as exc:
        return [no(cmd.tag, str(exc), "TRYCREATE")]
    log.info("imap append peer=%s mailbox=%s folder=%s uid=%s", session.peer, session.mailbox, info.name, ref.uid)
    return [ok(cmd.tag, "APPEND completed", f"APPENDUID {ref.uidvalidity} {ref.uid}")]
