"""IDLE (RFC 2177): the client waits; the server pushes EXISTS, EXPUNGE and FETCH FLAGS.

Starting IDLE (`Event.IDLE_START`) subscribes the session to the selected folder's events
(`MailboxHandle.watch`); the I/O layer waits on that watch and on the client's DONE, and asks
the session for updates whenever the watch fires. The changes that landed between the last
command and the watch starting are added after `+ idling` by the session's dispatcher.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imap.protocol.commands import Idle
from imap.protocol.response import Continue, Response
from imap.state import Event

if TYPE_CHECKING:
    from imap.session import Session


async def idle(session: Session, cmd: Idle) -> list[Response]:
    session.apply(Event.IDLE_START, cmd.tag)
    return [Continue("idling")]
