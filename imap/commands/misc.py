"""CAPABILITY, NOOP/CHECK, LOGOUT, ID (RFC 2971), ENABLE (RFC 5161)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imap.protocol.commands import Capability, Check, Enable, Id, Logout, Noop
from imap.protocol.response import Atom, Data, Response, bye, ok
from imap.state import Event

if TYPE_CHECKING:
    from imap.session import Session

SERVER_ID = {"name": "MSS", "vendor": "MSS project", "support-url": "https://example.invalid/mss"}


async def capability(session: Session, cmd: Capability) -> list[Response]:
    return [Data(Atom("CAPABILITY"), *[Atom(c) for c in session.capabilities()]), ok(cmd.tag, "CAPABILITY completed")]


async def noop(session: Session, cmd: Noop | Check) -> list[Response]:
    # The untagged updates of the selected folder are added by the session after us.
    return [ok(cmd.tag, f"{cmd.name} completed")]


async def logout(session: Session, cmd: Logout) -> list[Response]:
    """RFC 9051 6.1.3: BYE, then the tagged OK; the session closes the connection after."""
    session.apply(Event.LOGOUT)
    return [bye("MSS IMAP logging out"), ok(cmd.tag, "LOGOUT completed")]


async def id_(session: Session, cmd: Id) -> list[Response]:
    """RFC 2971 3.3: the server's own identification, whatever the client sent."""
    flat: list[str] = []
    for k, v in SERVER_ID.items():
        flat += [k, v]
    return [Data(Atom("ID"), flat), ok(cmd.tag, "ID completed")]


#: What ENABLE can switch on (upper-case -> as advertised), when the session offers it.
ENABLEABLE = {
    "IMAP4REV2": "IMAP4rev2",
    "CONDSTORE": "CONDSTORE",
    "QRESYNC": "QRESYNC",
    "UTF8=ACCEPT": "UTF8=ACCEPT",  # RFC 6855 3: UTF-8 mailbox names, APPEND UTF8 (...)
}


async def enable(session: Session, cmd: Enable) -> list[Response]:
    # RFC 5161 3: what is unknown, not offered or already enabled is ignored; ENABLED
    # lists only what this command newly switched on.
    offered = {c.upper() for c in session.capabilities()}
    newly = [
        c for c in dict.fromkeys(cmd.capabilities) if c in ENABLEABLE and c in offered and c not in session.enabled
    ]
    session.enabled.update(newly)
    return [Data(Atom("ENABLED"), *[Atom(ENABLEABLE[c]) for c in newly]), ok(cmd.tag, "ENABLE completed")]
