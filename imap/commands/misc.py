"""CAPABILITY, NOOP/CHECK, LOGOUT, ID (RFC 2971), ENABLE (RFC 5161)."""
from __future__ import annotations

from imap.protocol.commands import Command
from imap.protocol.response import Atom, Data, Response, bye, ok

SERVER_ID = {"name": "MSS", "vendor": "MSS project", "support-url": "https://example.invalid/mss"}


async def capability(session, cmd: Command) -> list[Response]:
    return [Data(Atom("CAPABILITY"), *[Atom(c) for c in session.capabilities()]), ok(cmd.tag, "CAPABILITY completed")]


async def noop(session, cmd: Command) -> list[Response]:
    # The untagged updates of the selected folder are added by the session after us.
    return [ok(cmd.tag, f"{cmd.name} completed")]


async def logout(session, cmd: Command) -> list[Response]:
    session.logout()
    return [bye("MSS IMAP logging out"), ok(cmd.tag, "LOGOUT completed")]


async def id_(session, cmd: Command) -> list[Response]:
    flat: list = []
    for k, v in SERVER_ID.items():
        flat += [k, v]
    return [Data(Atom("ID"), flat), ok(cmd.tag, "ID completed")]


async def enable(session, cmd: Command) -> list[Response]:
    # No extension we implement is enabled this way yet (CONDSTORE, UTF8=ACCEPT are not
    # offered): RFC 5161 3 says unknown ones are ignored, so ENABLED lists nothing.
    return [Data(Atom("ENABLED")), ok(cmd.tag, "ENABLE completed")]
