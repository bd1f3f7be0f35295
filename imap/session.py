"""One IMAP connection, with no sockets (RFC 9051 3, "State and Flow Diagram").

Bytes go in (`feed`), `process` turns every complete command into responses and actions,
the asyncio layer (`imap.server`) writes them out and performs what a sans-IO session cannot:
the TLS handshake after STARTTLS and waiting for IDLE events.

Which states exist and which events move between them is `imap.state`'s table; `apply` is the
one place that fires an event, and it keeps what each state needs beside it (the mailbox
handle once authenticated, the folder view once selected, the IDLE watch, the AUTHENTICATE
exchange waiting for its next line). Command handlers (`imap.commands`) do the work of each
command and call `apply` with what happened; they never set the state themselves.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Literal, overload

from imap import names
from imap.actions import Action, Close, Output, PendingAuthentication, StartTLS
from imap.commands import HANDLERS
from imap.commands.auth import continue_authenticate
from imap.namespaces import Namespaces
from imap.protocol.commands import Command, Fetch, Logout, Search, Select, Sort, Store, Thread, UidCommand, Unselect
from imap.protocol.parser import ContinuationNeeded, Limits, ParseError, Parser, RawLine
from imap.protocol.response import Continue, Response, Status, bad, bye, no, ok, settle
from imap.replies import refused
from imap.state import (
    BEFORE_TLS,
    IDLE,
    READING,
    Event,
    LocalProtocolError,
    State,
    allowed_states,
    next_state,
)
from imap.view import FolderView
from mss.principal import Principal
from mss.records import MessageMeta
from mss.refusals import Refusal, storage_unavailable
from mss.services import Authentication, ClientConnection, FolderState, FolderWatch, ImapServices

__all__ = ["Action", "Close", "Idle", "Output", "PendingAuthentication", "Session", "StartTLS", "State"]

log = logging.getLogger("mss.imap")

#: RFC 9051 7.5.1: no EXPUNGE while answering FETCH, STORE or SEARCH by sequence number;
#: SORT and THREAD (RFC 5256) answer with sequence numbers as SEARCH does.
_NO_EXPUNGE = (Fetch, Store, Search, Sort, Thread)
#: Commands after which no untagged update is added: they answer with the folder's whole
#: state themselves (SELECT), or leave it (CLOSE, UNSELECT, LOGOUT).
_NO_SYNC = (Select, Unselect, Logout)
PREAUTH_LITERAL = 8 * 1024


@dataclass
class Idle:
    """A running IDLE (RFC 2177): its tag, and the watch on the selected folder (None when
    IDLE started with no folder selected) held open by `stack`."""

    tag: str
    watch: FolderWatch | None
    stack: ExitStack


class Session:
    """Feed it bytes (`feed`), let it work (`process`), send what it returns.

    `core` is what the core gives front ends (`mss.services.ImapServices`). Once
    authenticated the session holds its `imap.namespaces.Namespaces`: its own mailbox's
    `MailboxHandle`, and one per shared mailbox it lists under `Partagés/`, each already
    authorised for its principal and checking its RFC 4314 rights: every folder and message
    operation goes through them. `tls` says whether the
    connection is already encrypted (implicit TLS); `starttls` whether STARTTLS may be offered.
    """

    def __init__(self, core: ImapServices, *, tls: bool, starttls: bool = True, peer: str = "?") -> None:
        self.core = core
        self.tls = tls
        self.starttls_offered = starttls and not tls
        self.peer = peer
        self._state = State.NOT_AUTHENTICATED
        lim = core.settings.limits
        self._limits = Limits(line=lim.imap_line, literal=lim.imap_literal, nesting=lim.imap_nesting)
        # Before authentication no command needs a large literal: an anonymous peer may not
        # make us buffer a 25 MiB APPEND only to be told NO.
        self.parser = Parser(
            Limits(line=lim.imap_line, literal=min(lim.imap_literal, PREAUTH_LITERAL), nesting=lim.imap_nesting)
        )
        self.client_certificate: bytes | None = None
        #: Its own mailbox, and the shared ones under the shared namespace (`imap.namespaces`).
        self.handle: Namespaces | None = None
        self.view: FolderView | None = None
        self.idle: Idle | None = None
        self.enabled: set[str] = set()
        #: The core's authentication of this connection, from the moment TLS is up.
        self.authentication: Authentication | None = None
        self.pending_auth: PendingAuthentication | None = None
        #: The selected folder's state a handler read for the command being run
        #: (`read_folder`): the sync after it uses it rather than reading it again.
        self.command_state: FolderState | None = None

    @property
    def state(self) -> State:
        """Where the session is; only `apply` moves it."""
        return self._state

    @property
    def imap4rev2(self) -> bool:
        """Whether the client sent `ENABLE IMAP4rev2` (RFC 9051 7.2.2): the handlers whose
        answers differ between rev1 and rev2 (no \\Recent, ESEARCH, \\NonExistent) ask this."""
        return "IMAP4REV2" in self.enabled

    @property
    def utf8_accept(self) -> bool:
        """Whether the client sent `ENABLE UTF8=ACCEPT` (RFC 6855 3)."""
        return "UTF8=ACCEPT" in self.enabled

    @property
    def utf8_names(self) -> bool:
        """Whether mailbox names go as UTF-8 (UTF8=ACCEPT, RFC 6855 3, or IMAP4rev2, RFC
        9051 5.1) rather than modified UTF-7 (RFC 3501 5.1.3): `imap.names` asks this."""
        return self.utf8_accept or self.imap4rev2

    @property
    def condstore(self) -> bool:
        """Whether CONDSTORE is enabled (RFC 7162 3.1: by ENABLE, or by the first
        "CONDSTORE enabling command"; QRESYNC implies it, 3.2.3)."""
        return "CONDSTORE" in self.enabled or "QRESYNC" in self.enabled

    @property
    def qresync(self) -> bool:
        """Whether the client sent `ENABLE QRESYNC` (RFC 7162 3.2.3)."""
        return "QRESYNC" in self.enabled

    def enable_condstore(self) -> list[Response]:
        """A CONDSTORE enabling command ran (RFC 7162 3.1). The first one issued with a
        folder selected reports that folder's HIGHESTMODSEQ, as of the last time the client
        was told everything, so nothing changed since can be missed."""
        if self.condstore:
            return []
        self.enabled.add("CONDSTORE")
        view = self.view
        if view is None:
            return []
        view.modseqs = True
        highest = view.synced_state[1] if view.synced_state is not None else view.info.highestmodseq
        return [ok(None, "Highest", f"HIGHESTMODSEQ {highest}")]

    @property
    def principal(self) -> Principal | None:
        """Who is authenticated (the principal the mailbox handle was opened for)."""
        return self.handle.principal if self.handle is not None else None

    # -- capabilities (RFC 9051 7.2.2) ---------------------------------------------------

    #: RFC 9051 is offered beside rev1 (RFC 9051 appendix E lists what rev2 includes: ESEARCH
    #: answers, SEARCHRES, BINARY, UTF-8 names, LIST-EXTENDED/STATUS, OK [CLOSED], no
    #: \\Recent...); a client switches with `ENABLE IMAP4rev2`. False turns it off.
    offer_imap4rev2: bool = True

    @property
    def append_limit(self) -> int:
        """The largest message APPEND takes (RFC 7889): the message size limit, or the literal
        limit when that is smaller; the same for every folder."""
        lim = self.core.settings.limits
        return min(lim.max_message_size, lim.imap_literal)

    def capabilities(self) -> list[str]:
        caps = ["IMAP4rev1", "IMAP4rev2"] if self.offer_imap4rev2 else ["IMAP4rev1"]
        if not self.tls:
            # RFC 9051 6.2.3: no password in clear, so neither LOGIN nor any AUTH= yet.
            return caps + ["STARTTLS", "LOGINDISABLED"]
        if self.state is State.NOT_AUTHENTICATED and self.authentication is not None:
            caps += [f"AUTH={m}" for m in self.authentication.mechanisms] + ["SASL-IR"]
        return caps + [
            "LITERAL+",
            "MULTIAPPEND",  # RFC 3502
            "ID",
            "ENABLE",
            "IDLE",
            "NAMESPACE",
            "UIDPLUS",
            "SPECIAL-USE",
            "UNSELECT",
            "MOVE",
            "CHILDREN",
            "ESEARCH",
            "SEARCHRES",  # RFC 5182
            "SORT",  # RFC 5256
            "THREAD=ORDEREDSUBJECT",
            "THREAD=REFERENCES",
            "QUOTA",  # RFC 9208: GETQUOTA, GETQUOTAROOT; SETQUOTA is the operator's (no QUOTASET)
            "QUOTA=RES-STORAGE",
            "QUOTA=RES-MESSAGE",
            f"APPENDLIMIT={self.append_limit}",
            "LIST-EXTENDED",
            "LIST-STATUS",
            "CREATE-SPECIAL-USE",
            "CONDSTORE",
            "QRESYNC",
            "BINARY",  # RFC 3516
            "UTF8=ACCEPT",  # RFC 6855
            "ACL",  # RFC 4314: rights are the operator's to set (SETACL is NO [NOPERM])
            "RIGHTS=texk",  # RFC 4314 2.2: the RFC 4314 rights, not RFC 2086's "c" and "d"
        ]

    def greeting(self) -> list[Response]:
        return [ok(None, "MSS IMAP ready", "CAPABILITY " + " ".join(self.capabilities()))]

    # -- transitions ---------------------------------------------------------------------

    @overload
    def apply(self, event: Literal[Event.AUTH_CONTINUE], data: PendingAuthentication) -> None: ...

    @overload
    def apply(self, event: Literal[Event.AUTH_OK], data: Namespaces) -> None: ...

    @overload
    def apply(self, event: Literal[Event.SELECT_OK], data: FolderView) -> None: ...

    @overload
    def apply(self, event: Literal[Event.IDLE_START], data: str) -> None: ...

    @overload
    def apply(
        self,
        event: Literal[
            Event.STARTTLS,
            Event.TLS_STARTED,
            Event.AUTH_FAILED,
            Event.SELECT_FAILED,
            Event.CLOSE,
            Event.IDLE_DONE,
            Event.LOGOUT,
            Event.DISCONNECT,
        ],
    ) -> None: ...

    def apply(self, event: Event, data: PendingAuthentication | Namespaces | FolderView | str | None = None) -> None:
        """Fire `event`: the one place the session's state changes (`imap.state.TRANSITIONS`).

        `data` is what the new state keeps: the exchange waiting for its next line
        (AUTH_CONTINUE), the opened mailbox (AUTH_OK), the selected folder's view
        (SELECT_OK), the IDLE command's tag (IDLE_START). The next state is looked up
        first, so an event the state cannot take raises `LocalProtocolError` having
        changed nothing, and the state is set last: if setting up what the new state keeps
        fails (IDLE's watch), the session stays where it was.
        """
        new = next_state(self._state, event)
        if event is Event.STARTTLS or (event is Event.TLS_STARTED and self._state is State.STARTING_TLS):
            # RFC 9051 6.2.1: anything pipelined after STARTTLS, or fed before the handshake
            # ended, was sent in clear and is dropped (STARTTLS command injection,
            # CVE-2011-0411 class).
            self.parser.clear()
        elif event is Event.AUTH_CONTINUE:
            if not isinstance(data, PendingAuthentication):
                raise LocalProtocolError("AUTH_CONTINUE needs the pending exchange")
            self.pending_auth = data
            self.parser.expect_line()  # the response is no command: read it raw
        elif event is Event.AUTH_OK:
            if not isinstance(data, Namespaces):
                raise LocalProtocolError("AUTH_OK needs the opened mailbox")
            self.pending_auth = None
            self.handle = data
            self.parser.limits = self._limits
        elif event is Event.AUTH_FAILED:
            self.pending_auth = None
        elif event is Event.SELECT_OK:
            if not isinstance(data, FolderView):
                raise LocalProtocolError("SELECT_OK needs the folder view")
            self.view = data
        elif event in (Event.SELECT_FAILED, Event.CLOSE):
            self.view = None
        elif event is Event.IDLE_START:
            if not isinstance(data, str):
                raise LocalProtocolError("IDLE_START needs the command's tag")
            stack = ExitStack()
            watch = stack.enter_context(self.box.watch(self.view.info)) if self.view is not None else None
            self.idle = Idle(data, watch, stack)
            self.parser.expect_line()  # DONE is no command either
        elif event is Event.IDLE_DONE:
            self._release_idle()
        elif event in (Event.LOGOUT, Event.DISCONNECT):
            self._release_idle()
            self.pending_auth = None
        self._state = new

    def _release_idle(self) -> None:
        if self.idle is not None:
            self.idle.stack.close()
            self.idle = None

    # -- I/O side ------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self.parser.feed(data)

    def tls_started(self, client_certificate: bytes | None) -> None:
        """The TLS handshake is done (implicit TLS, or after STARTTLS): from now on the core
        authenticates this connection, with the certificate the client presented."""
        self.apply(Event.TLS_STARTED)
        self.tls = True
        self.starttls_offered = False
        self.client_certificate = client_certificate
        self.authentication = self.core.credentials.authentication(
            ClientConnection("imap", self.peer, client_certificate)
        )

    def close(self) -> None:
        """The connection is gone (or is being closed): release what the session holds (the
        IDLE watch). Safe to call twice."""
        if self.state is not State.LOGOUT:
            self.apply(Event.DISCONNECT)

    @property
    def auth_failures(self) -> int:
        """Refused attempts so far (counted by the core, across LOGIN and AUTHENTICATE)."""
        return self.authentication.failures if self.authentication is not None else 0

    async def process(self) -> list[Output]:
        """Handle every complete command buffered so far; returns responses and actions.

        Input is read only in the states that read it (`imap.state.READING`): nothing after
        LOGOUT, nothing between STARTTLS and the end of the handshake."""
        out: list[Output] = []
        settled = 0  # `out[:settled]` holds no Stream still being read: settling stays linear
        while self.state in READING:
            event = self.parser.next_event()
            if event is None:
                break
            if isinstance(event, ContinuationNeeded):
                out.append(Continue("Ready for literal data"))
            elif isinstance(event, ParseError):
                out.append(bad(event.tag, event.text))
                if event.fatal:
                    out += [bye("Cannot recover from this protocol error"), Close()]
                    self.apply(Event.DISCONNECT)
            elif isinstance(event, RawLine):
                out += await self._raw_line(event.line)
            elif self.state in IDLE or self.state is State.AUTHENTICATING:  # pragma: no cover
                out.append(bad(event.tag, "Expected a continuation line"))  # the parser reads raw lines then
            else:
                # A FETCH still being read is answered before the next command runs; only
                # what the previous command added is looked at (thousands of pipelined
                # commands in one read must not cost a pass over all the earlier replies each).
                await settle(out[settled:])
                settled = len(out)
                out += await self.dispatch(event)
        if self.state is State.LOGOUT and not (out and isinstance(out[-1], Close)):
            out.append(Close())
        return out

    async def _raw_line(self, line: bytes) -> list[Output]:
        """A line that is no command: IDLE's DONE, or the answer to a SASL challenge."""
        if self.state in IDLE:
            return await self._end_idle(line)
        pending = self.pending_auth
        if self.state is State.AUTHENTICATING and pending is not None:
            return list(await continue_authenticate(self, pending, line))
        return [bad(None, "Unexpected continuation line")]  # pragma: no cover

    # -- dispatch ------------------------------------------------------------------------

    async def dispatch(self, cmd: Command) -> list[Output]:
        """Check that `cmd` may run now (TLS, state), run its handler, and add the untagged
        updates of the selected folder before its tagged completion (RFC 9051 7.5.1)."""
        handler = HANDLERS.get(type(cmd))
        if handler is None:  # pragma: no cover - tests check the tables cover the registry
            return [bad(cmd.tag, f"Unknown command {cmd.full_name}")]
        if not self.tls and type(cmd) not in BEFORE_TLS:
            return [no(cmd.tag, "TLS is required: use STARTTLS first", "PRIVACYREQUIRED")]
        if self.state not in allowed_states(cmd):
            return [bad(cmd.tag, f"{cmd.full_name} is not valid in the {self.state.value} state")]
        try:
            cmd = names.incoming(cmd, self.utf8_names)
        except names.Mutf7Error as exc:
            return [bad(cmd.tag, f"{exc} (RFC 3501 5.1.3; or ENABLE UTF8=ACCEPT)")]
        replies: list[Output]
        self.command_state = None
        try:
            replies = list(await handler(self, cmd))
        except Refusal as exc:
            replies = [refused(cmd.tag, exc)]
        except LocalProtocolError:
            raise  # a bug of the state machine: the connection cannot go on
        except Exception as exc:
            if storage_unavailable(exc):
                # RFC 5530 3: the client may retry; the connection stays usable.
                log.error(
                    "imap command failed peer=%s command=%s: storage unavailable: %s", self.peer, cmd.full_name, exc
                )
                return [no(cmd.tag, "Mail storage temporarily unavailable; try again later", "UNAVAILABLE")]
            log.exception("imap command failed peer=%s command=%s", self.peer, cmd.full_name)
            replies = [no(cmd.tag, "Internal server error; nothing was changed", "SERVERBUG")]
        if self.view is not None and not isinstance(cmd, _NO_SYNC):
            uid = isinstance(cmd, UidCommand) and cmd.uid
            try:
                updates = await self.sync(allow_expunge=uid or not isinstance(cmd, _NO_EXPUNGE), uid_mode=uid)
            except Refusal:
                # The rights on the selected folder were revoked (`mss.services.RIGHTS_TTL`):
                # nothing more is told of it; every command on it is refused (NOPERM).
                updates = []
            except Exception as exc:
                if not storage_unavailable(exc):
                    raise
                # The updates are sent with a later command: the view has not moved.
                log.error("imap sync failed peer=%s: storage unavailable: %s", self.peer, exc)
                updates = []
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
        state, self.command_state = self.command_state or await self.box.folder_state(view.info), None
        if state is not None and (state.uidnext, state.highestmodseq) == view.synced_state:
            return []
        recent = None
        if (
            not view.readonly
            and view.report_recent
            and state is not None
            and state.uidnext > max(view.max_uid + 1, view.claimed_upto)
            and state.recent_uid < state.uidnext
        ):
            # Messages arrived (or were copied in): those no other session took first are
            # \Recent to this one (RFC 3501 2.3.2), claimed before the list is read.
            recent = await self.box.claim_recent(view.info)
        # Gone (deleted, or its id taken by a new folder): every message of the view is.
        metas = await self.box.messages(view.info, state) if state is not None else []
        return view.sync(
            metas,
            allow_expunge=allow_expunge,
            uid_mode=uid_mode,
            state=(state.uidnext, state.highestmodseq) if state else None,
            recent=recent,
        )

    async def read_folder(self) -> list[MessageMeta]:
        """The selected folder's messages for a command (FETCH, SEARCH): its state read once,
        then the list (from the folder cache when the state has not moved); the sync after
        the command tells the client of what that state shows, without a second read."""
        view = self.folder
        state = await self.box.folder_state(view.info)
        self.command_state = state
        return await self.box.messages(view.info, state) if state is not None else []

    @property
    def box(self) -> Namespaces:
        """The authenticated session's mailbox (the dispatcher lets no command that needs
        it run before authentication)."""
        if self.handle is None:  # pragma: no cover - the state table forbids it
            raise RuntimeError("no mailbox before authentication")
        return self.handle

    @property
    def mailbox(self) -> str | None:
        return self.handle.address if self.handle is not None else None

    @property
    def folder(self) -> FolderView:
        """The selected folder's view (the dispatcher runs selected-state commands only
        when there is one)."""
        if self.view is None:  # pragma: no cover - the state table forbids it
            raise RuntimeError("no folder selected")
        return self.view

    # -- IDLE (RFC 2177) -----------------------------------------------------------------

    async def idle_updates(self) -> list[Response]:
        """Called by the I/O layer when the IDLE watch fired."""
        return await self.sync(allow_expunge=True)

    async def _end_idle(self, line: bytes) -> list[Output]:
        """The line after IDLE ends it, whatever it is (DONE, or a BAD for anything else);
        the updates that landed meanwhile go before the tagged completion."""
        idle = self.idle
        tag = idle.tag if idle is not None else "*"
        self.apply(Event.IDLE_DONE)
        out: list[Output] = list(await self.sync(allow_expunge=True))
        if line.strip().upper() != b"DONE":
            out.append(bad(tag, "Expected DONE; IDLE ended"))
        else:
            out.append(ok(tag, "IDLE terminated"))
        return out


def _before_tagged(replies: list[Output], updates: list[Response]) -> list[Output]:
    """Untagged updates go before the tagged completion (and before any action)."""
    i = len(replies)
    while i > 0:
        r = replies[i - 1]
        if isinstance(r, Status) and r.tag is not None:
            break
        i -= 1
    if i == 0:
        return replies + list(updates)
    return replies[: i - 1] + list(updates) + replies[i - 1 :]
