"""IDLE (RFC 2177): the client waits; the server pushes EXISTS, EXPUNGE and FETCH FLAGS.

The session subscribes to the selected folder's events (`core.events.watch`); the I/O
layer waits on that watch and on the client's DONE, and asks the session for updates
whenever the watch fires.
"""
from __future__ import annotations

from imap.protocol.commands import Command
from imap.protocol.response import Continue, Response


async def idle(session, cmd: Command) -> list[Response]:
    session.start_idle(cmd.tag)
    # Changes that landed between the last command and the watch starting are sent now.
    return [Continue("idling")] + await session.sync(allow_expunge=True)
