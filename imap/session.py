"""One IMAP connection's state machine, with no sockets (RFC 9051 3, "State and Flow Diagram").

States: not authenticated -> authenticated -> selected -> logout. This module alone moves
between them; the command modules (`imap.commands.*`) do the work of each command and ask
the session for transitions. The asyncio layer (`imap.server`) feeds bytes in, writes the
responses out, and performs the two things a state machine cannot: the TLS handshake after
STARTTLS and waiting for IDLE events.
"""
from __future__ import annotations

import enum
import logging
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from mss.refusals import Refusal
from mss.services import Authentication, ClientConnection, ImapServices, MailboxHandle, SaslExchange

from imap.protocol.commands import Command
from imap.protocol.parser import ContinuationNeeded, Limits, ParseError, Parser, RawLine
from imap.protocol.response import Continue, Response, Status, bad, bye, no, ok
from imap.replies import refused
from imap.view import FolderView

log = logging.getLogger("mss.imap")


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


class StartTLS:
    """Action: perform the server side of the TLS handshake now, then call `tls_started`."""


class Close:
    """Action: close the connection once what precedes it has been written."""


Output = "Response | StartTLS | Close"
Handler = Callable[["Session", Command], Awaitable[list[Any]]]  # Responses and actions (StartTLS)

_ANY = frozenset(State)
_NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})
_AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
_SELECTED = frozenset({State.SELECTED})
# RFC 9051 6.2.1 / 7.5.1: commands allowed on a clear connection before STARTTLS.
_BEFORE_TLS = frozenset({"CAPABILITY", "NOOP", "LOGOUT", "STARTTLS"})
# RFC 9051 7.5.1: no EXPUNGE while answering FETCH, STORE or SEARCH by sequence number.
_NO_EXPUNGE = frozenset({"FETCH", "STORE", "SEARCH"})
PREAUTH_LITERAL = 8 * 1024


@dataclass(frozen=True)
class PendingAuthentication:
    """An AUTHENTICATE waiting for the client's next line (RFC 9051 6.2.2): the command's tag
    and the core's exchange, which knows which step it is at."""

    tag: str
    exchange: SaslExchange


@dataclass
class Idle:
    tag: str
    watch: Any  # mss.events.FolderWatch, or None when no folder is selected
    stack: ExitStack


def _registry() -> dict[str, tuple[Handler, frozenset[State]]]:
    from imap.commands import append, auth, fetch, idle, mailbox, misc, search, store

    return {
        "CAPABILITY": (misc.capability, _ANY),
        "NOOP": (misc.noop, _ANY),
        "LOGOUT": (misc.logout, _ANY),
        "ID": (misc.id_, _ANY),
        "STARTTLS": (auth.starttls, _NOT_AUTH),
        "AUTHENTICATE": (auth.authenticate, _NOT_AUTH),
        "LOGIN": (auth.login, _NOT_AUTH),
        "ENABLE": (misc.enable, _AUTH),
        "NAMESPACE": (mailbox.namespace, _AUTH),
        "SELECT": (mailbox.select, _AUTH),
        "EXAMINE": (mailbox.select, _AUTH),
        "CREATE": (mailbox.create, _AUTH),
        "DELETE": (mailbox.delete, _AUTH),
        "RENAME": (mailbox.rename, _AUTH),
        "SUBSCRIBE": (mailbox.subscribe, _AUTH),
        "UNSUBSCRIBE": (mailbox.subscribe, _AUTH),
        "LIST": (mailbox.list_, _AUTH),
        "LSUB": (mailbox.list_, _AUTH),
        "STATUS": (mailbox.status, _AUTH),
        "APPEND": (append.append, _AUTH),
        "IDLE": (idle.idle, _AUTH),
        "CHECK": (misc.noop, _SELECTED),
        "CLOSE": (mailbox.close, _SELECTED),
        "UNSELECT": (mailbox.close, _SELECTED),
        "EXPUNGE": (store.expunge, _SELECTED),
        "SEARCH": (search.search, _SELECTED),
        "FETCH": (fetch.fetch, _SELECTED),
        "STORE": (store.store, _SELECTED),
        "COPY": (store.copy, _SELECTED),
        "MOVE": (store.copy, _SELECTED),
    }


_COMMANDS: dict[str, tuple[Handler, frozenset[State]]] | None = None


def commands() -> dict[str, tuple[Handler, frozenset[State]]]:
    global _COMMANDS
    if _COMMANDS is None:
        _COMMANDS = _registry()
    return _COMMANDS


class Session:
    """Feed it bytes (`feed`), let it work (`process`), send what it returns.

    `core` is what the core gives front ends (`mss.services.ImapServices`). Once
    authenticated the session holds one `MailboxHandle`, already authorised for its
    principal: every folder and message operation goes through it. `tls` says whether the
    connection is already encrypted (implicit TLS); `starttls` whether STARTTLS may be offered.
    """

    def __init__(self, core: ImapServices, *, tls: bool, starttls: bool = True, peer: str = "?") -> None:
        self.core = core
        self.tls = tls
        self.starttls_offered = starttls and not tls
        self.peer = peer
        self.state = State.NOT_AUTHENTICATED
        lim = core.settings.limits
        self._limits = Limits(line=lim.imap_line, literal=lim.imap_literal, nesting=lim.imap_nesting)
        # Before authentication no command needs a large literal: an anonymous peer may not
        # make us buffer a 25 MiB APPEND only to be told NO.
        self.parser = Parser(Limits(line=lim.imap_line, literal=min(lim.imap_literal, PREAUTH_LITERAL), nesting=lim.imap_nesting))
        self.client_certificate: bytes | None = None
        self.principal = None  # mss.principal.Principal once authenticated
        self.handle: MailboxHandle | None = None  # the one mailbox this session is bound to
        self.view: FolderView | None = None
        self.idle: Idle | None = None
        self.enabled: set[str] = set()
        #: The core's authentication of this connection, from the moment TLS is up.
        self.authentication: Authentication | None = None
        self._pending_auth: PendingAuthentication | None = None

    # -- capabilities (RFC 9051 7.2.2) ---------------------------------------------------

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1"]
        if not self.tls:
            # RFC 9051 6.2.3: no password in clear, so neither LOGIN nor any AUTH= yet.
            return caps + ["STARTTLS", "LOGINDISABLED"]
        if self.state is State.NOT_AUTHENTICATED and self.authentication is not None:
            caps += [f"AUTH={m}" for m in self.authentication.mechanisms] + ["SASL-IR"]
        return caps + [
            "LITERAL+", "ID", "ENABLE", "IDLE", "NAMESPACE", "UIDPLUS",
            "SPECIAL-USE", "UNSELECT", "MOVE", "CHILDREN",
        ]

    def greeting(self) -> list[Response]:
        return [ok(None, "MSS IMAP ready", "CAPABILITY " + " ".join(self.capabilities()))]

    # -- I/O side ------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self.parser.feed(data)

    def tls_started(self, client_certificate: bytes | None) -> None:
        """The TLS handshake is done (implicit TLS, or after STARTTLS): from now on the core
        authenticates this connection, with the certificate the client presented."""
        self.tls = True
        self.starttls_offered = False
        self.client_certificate = client_certificate
        self.authentication = self.core.credentials.authentication(
            ClientConnection("imap", self.peer, client_certificate)
        )

    @property
    def auth_failures(self) -> int:
        """Refused attempts so far (counted by the core, across LOGIN and AUTHENTICATE)."""
        return self.authentication.failures if self.authentication is not None else 0

    async def process(self) -> list[Any]:
        """Handle every complete command buffered so far; returns responses and actions."""
        out: list[Any] = []
        while self.state is not State.LOGOUT:
            event = self.parser.next_event()
            if event is None:
                break
            if isinstance(event, ContinuationNeeded):
                out.append(Continue("Ready for literal data"))
                continue
            if isinstance(event, ParseError):
                out.append(bad(event.tag, event.text))
                if event.fatal:
                    out += [bye("Cannot recover from this protocol error"), Close()]
                    self.state = State.LOGOUT
                continue
            if isinstance(event, RawLine):
                out += await self._raw_line(event.line)
                continue
            if self.idle is not None:  # pragma: no cover - the parser gives raw lines then
                out.append(bad(event.tag, "Expected DONE"))
                continue
            replies = await self.dispatch(event)
            out += replies
            if replies and isinstance(replies[-1], StartTLS):
                # RFC 9051 6.2.1: anything pipelined after STARTTLS was sent in clear and is
                # dropped (STARTTLS command injection, CVE-2011-0411 class).
                self.parser.clear()
                break
        if self.state is State.LOGOUT and not (out and isinstance(out[-1], Close)):
            out.append(Close())
        return out

    async def _raw_line(self, line: bytes) -> list[Any]:
        if self.idle is not None:
            return await self.end_idle(line)
        if self._pending_auth is not None:
            from imap.commands.auth import continue_authenticate

            pending, self._pending_auth = self._pending_auth, None
            return await continue_authenticate(self, pending, line)
        return [bad(None, "Unexpected continuation line")]  # pragma: no cover

    # -- dispatch ------------------------------------------------------------------------

    async def dispatch(self, cmd: Command) -> list[Any]:
        entry = commands().get(cmd.name)
        if entry is None:  # pragma: no cover - the parser knows the same names
            return [bad(cmd.tag, f"Unknown command {cmd.name}")]
        handler, states = entry
        if not self.tls and cmd.name not in _BEFORE_TLS:
            return [no(cmd.tag, "TLS is required: use STARTTLS first", "PRIVACYREQUIRED")]
        if self.state not in states:
            return [bad(cmd.tag, f"{cmd.full_name} is not valid in the {self.state.value} state")]
        try:
            replies = await handler(self, cmd)
        except Refusal as exc:
            replies = [refused(cmd.tag, exc)]
        except Exception:
            log.exception("imap command failed peer=%s command=%s", self.peer, cmd.full_name)
            replies = [no(cmd.tag, "Internal server error; nothing was changed", "SERVERBUG")]
        if self.view is not None and self.idle is None and cmd.name not in ("SELECT", "EXAMINE", "CLOSE", "UNSELECT", "LOGOUT"):
            updates = await self.sync(allow_expunge=cmd.uid or cmd.name not in _NO_EXPUNGE, uid_mode=cmd.uid)
            if updates:
                replies = _before_tagged(replies, updates)
        return replies

    async def sync(self, *, allow_expunge: bool = True, uid_mode: bool = False) -> list[Response]:
        """Untagged updates for the selected folder (RFC 9051 7.5.1)."""
        view = self.view
        if view is None:
            return []
        # Every change to a folder's messages bumps its UIDNEXT or HIGHESTMODSEQ (RFC 7162
        # 3.1), so one read of the folder rows says whether the message list must be
        # reloaded. The state is read before the list: a change landing in between is
        # seen again next time, never missed.
        state = await self.box.folder_state(view.info)
        if state is not None and (state.uidnext, state.highestmodseq) == view.synced_state:
            return []
        metas = await self.box.messages(view.info)
        return view.sync(
            metas,
            allow_expunge=allow_expunge,
            uid_mode=uid_mode,
            state=(state.uidnext, state.highestmodseq) if state else None,
        )

    @property
    def box(self) -> MailboxHandle:
        """The authenticated session's mailbox (the dispatcher lets no command that needs
        it run before authentication)."""
        if self.handle is None:  # pragma: no cover - the state table forbids it
            raise RuntimeError("no mailbox before authentication")
        return self.handle

    @property
    def mailbox(self) -> str | None:
        return self.handle.address if self.handle is not None else None

    # -- transitions ---------------------------------------------------------------------

    def authenticated(self, principal: Any, handle: MailboxHandle) -> None:
        self.principal = principal
        self.handle = handle
        self.parser.limits = self._limits
        self.state = State.AUTHENTICATED

    def selected(self, view: FolderView) -> None:
        self.view = view
        self.state = State.SELECTED

    def deselected(self) -> None:
        self.view = None
        self.state = State.AUTHENTICATED

    def logout(self) -> None:
        self.close()
        self.state = State.LOGOUT

    def start_idle(self, tag: str) -> None:
        stack = ExitStack()
        watch = None
        if self.view is not None:
            watch = stack.enter_context(self.box.watch(self.view.info))
        self.idle = Idle(tag, watch, stack)
        self.parser.expect_line()

    async def idle_updates(self) -> list[Response]:
        """Called by the I/O layer when the IDLE watch fired (RFC 2177)."""
        return await self.sync(allow_expunge=True)

    async def end_idle(self, line: bytes) -> list[Any]:
        idle, self.idle = self.idle, None
        idle.stack.close()
        updates = await self.sync(allow_expunge=True)
        if line.strip().upper() != b"DONE":
            return updates + [bad(idle.tag, "Expected DONE; IDLE ended")]
        return updates + [ok(idle.tag, "IDLE terminated")]

    def expect_auth_response(self, tag: str, exchange: SaslExchange) -> None:
        """The next line answers the challenge of AUTHENTICATE `tag`: read it raw (it is no
        command) and hand it to `exchange`."""
        self._pending_auth = PendingAuthentication(tag, exchange)
        self.parser.expect_line()

    def close(self) -> None:
        """Release what the session holds (IDLE watch). Safe to call twice."""
        if self.idle is not None:
            self.idle.stack.close()
            self.idle = None


def _before_tagged(replies: list[Any], updates: list[Response]) -> list[Any]:
    """Untagged updates go before the tagged completion (and before any action)."""
    i = len(replies)
    while i > 0 and not (isinstance(replies[i - 1], Status) and replies[i - 1].tag is not None):
        i -= 1
    if i == 0:
        return replies + updates
    return replies[: i - 1] + updates + replies[i - 1 :]
