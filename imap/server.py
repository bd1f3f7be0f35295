"""The asyncio layer: listeners, TLS, and pumping bytes between sockets and `Session`.

Two listeners (RFC 8314): `imap` (clear, STARTTLS required before anything else,
RFC 9051 6.2.1) and `imaps` (implicit TLS). Both ask for a client certificate; the session
hands it to the core at AUTHENTICATE EXTERNAL. Everything about IMAP itself lives in the
sans-IO `Session`; this module only moves bytes, performs handshakes and waits.

Connection caps (`mss.admission`, shared by both listeners): a connection that has not
authenticated (nor presented a client certificate the TLS stack validated) counts against a
small per-address pre-authentication cap, the oldest one giving way to a newcomer, and has
a short life (`imap_preauth_timeout_s`); only authenticated connections count against
`imap_max_connections_per_ip`. So anonymous connections cannot lock a legitimate user out
of an address (issue 13). Implicit TLS is set up here rather than by `create_server(ssl=)`,
so that a failed handshake (a certificate from a foreign CA, say) is logged with the peer
and the reason instead of ending in a silent EOF.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Iterable, Sequence

from imap.actions import Close, Output, StartTLS
from imap.protocol.response import Response, Stream, Wire, bye
from imap.session import Session
from imap.state import UNAUTHENTICATED, State
from mss import metrics
from mss.admission import CLOSE_GRACE_S, Admission, Ticket, close_soon
from mss.peers import format_peer
from mss.services import FolderWatch, ImapServices
from mss.tls import peer_certificate_der
from mss.tls_protocol import server_tls_protocol

log = logging.getLogger("mss.imap")

_READ_CHUNK = 64 * 1024

#: A connection that has not authenticated this long after it opened is closed: an
#: anonymous peer may not hold a slot for the 30-minute idle timeout (RFC 9051 5.4 allows
#: any autologout before authentication).
PREAUTH_TIMEOUT_S = 60.0
#: Connections over both listeners; authenticated ones from one address; unauthenticated
#: ones from one address (the oldest is closed for a newcomer).
MAX_CONNECTIONS = 1000
MAX_CONNECTIONS_PER_IP = 50
MAX_PREAUTH_PER_IP = 10
#: The longest a TLS handshake may take on `imaps`.
HANDSHAKE_TIMEOUT_S = 30.0
#: How long a write may wait for a peer that does not read before the connection is aborted.
WRITE_TIMEOUT_S = 60.0


def _tls_reason(exc: BaseException | None) -> str:
    """Why a handshake failed, for the log line (the same words as the SMTP listeners')."""
    if exc is None:
        return "unknown"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"{exc.reason or type(exc).__name__}: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"{exc.reason or type(exc).__name__}: {exc.strerror or exc}"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "handshake timeout"
    return f"{type(exc).__name__}: {exc}"


class _Connection(asyncio.Protocol):
    """A byte pipe with flow control that survives `loop.start_tls` (same protocol object)."""

    def __init__(self, on_made: Callable[[_Connection], None] | None = None) -> None:
        self._on_made = on_made
        #: The connection's slot under the caps (`imaps`: taken before the handshake).
        self.ticket: Ticket | None = None
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._eof = False
        #: What a reader waits on (`read`, `wait_input`): one future while someone waits,
        #: none otherwise, so an idle connection holds no `asyncio.Event` and no deque.
        self._waiter: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self._on_made is not None:
            self._on_made(self)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._wake()
        if len(self._buf) > 4 * _READ_CHUNK and self.transport is not None:
            self.transport.pause_reading()  # the session catches up first

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake()
        self._writable.set()
        if self.ticket is not None:
            self.ticket.release()  # only now: a closing connection keeps its slot (mss.admission)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    @property
    def has_input(self) -> bool:
        """Whether `read` would return at once (bytes buffered, or the end of the stream)."""
        return bool(self._buf) or self._eof

    async def wait_input(
        self,
        also: FolderWatch | None = None,
        timeout: float | None = None,
        on_fire: Callable[[], None] | None = None,
    ) -> None:
        """Wait until input is buffered, `also` fires, or `timeout` passes: one future and one
        timer, woken by `data_received` or the watch's callback. `on_fire`, if given, is
        called instead of waking when `also` fires (the IDLE fan-out answers for this
        connection, or wakes it). Cancel-safe."""
        if self.has_input or (also is not None and also.fired):
            return
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        if also is not None:
            also.wake = on_fire or self._wake
        timer = loop.call_later(timeout, self._wake) if timeout is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if also is not None:
                also.wake = None
            if timer is not None:
                timer.cancel()

    async def read(self) -> bytes:
        """Buffered bytes, waiting for some; b"" at end of stream. Cancel-safe."""
        while not self.has_input:
            await self.wait_input()
        data = bytes(self._buf)
        self._buf.clear()
        if self.transport is not None and not self._eof:
            self.transport.resume_reading()
        return data

    def discard_input(self) -> None:
        self._buf.clear()

    async def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("connection closed")
        self.transport.write(data)
        if self._writable.is_set():
            return
        # A peer that does not read (while pipelining commands, say) must not hold the
        # session here for ever: give up on it after WRITE_TIMEOUT_S.
        try:
            await asyncio.wait_for(self._writable.wait(), WRITE_TIMEOUT_S)
        except TimeoutError:
            self.transport.abort()
            raise ConnectionResetError("peer does not read") from None

    def close(self) -> None:
        """End the connection: flushed, then aborted after a grace (`mss.admission.close_soon`)."""
        close_soon(self.transport)


async def _send(conn: _Connection, outputs: Sequence[Output]) -> bool:
    """Write responses; returns False when the connection must close. Small responses are
    gathered into writes of about `_READ_CHUNK` bytes (one copy each); a large piece of a
    `Wire` (a stored message) is written as it is. Each write waits while the peer is slow
    to read (`_Connection.write`), so a FETCH of a whole folder never sits in our buffers."""
    batch: list[bytes] = []
    size = 0
    for item in outputs:
        if isinstance(item, Close):
            if batch:
                await conn.write(b"".join(batch))
            return False
        if isinstance(item, Stream):
            async for part in item.parts():
                batch, size = await _write_pieces(conn, part.pieces, batch, size)
                if batch:  # out before the next chunk is read: the client reads meanwhile
                    await conn.write(b"".join(batch))
                    batch, size = [], 0
            if item.failed is not None:
                log.error("imap fetch stopped: %s", item.failed)
                batch.append(bye("Mail storage temporarily unavailable; try again later").to_bytes())
                await conn.write(b"".join(batch))
                return False
        elif isinstance(item, Wire):
            batch, size = await _write_pieces(conn, item.pieces, batch, size)
        elif isinstance(item, Response):
            batch, size = await _write_pieces(conn, (item.to_bytes(),), batch, size)
    if batch:
        await conn.write(b"".join(batch))
    return True


async def _write_pieces(
    conn: _Connection, pieces: Iterable[bytes], batch: list[bytes], size: int
) -> tuple[list[bytes], int]:
    """Gather small pieces into `batch` (written once about `_READ_CHUNK` bytes), write a
    large one as it is; returns what is still gathered."""
    for piece in pieces:
        if len(piece) >= _READ_CHUNK:
            if batch:
                await conn.write(b"".join(batch))
                batch, size = [], 0
            await conn.write(piece)
            continue
        batch.append(piece)
        size += len(piece)
        if size >= _READ_CHUNK:
            await conn.write(b"".join(batch))
            batch, size = [], 0
    return batch, size


class _ImplicitTLS(asyncio.Protocol):
    """RFC 8314 implicit TLS in front of a `_Connection`, installed synchronously on the TCP
    transport (as `smtp.server.ImplicitTLS` does): the connection is admitted before the
    handshake, and a failed handshake is logged with the peer and the reason."""

    def __init__(
        self, app: Callable[[Ticket | str], asyncio.Protocol], ctx: ssl.SSLContext, admission: Admission
    ) -> None:
        self.app = app
        self.ctx = ctx
        self.admission = admission

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        peername = transport.get_extra_info("peername")
        peer = format_peer(peername)
        ticket = self.admission.admit(peername, lambda reason: _closed_in_handshake(transport, peer, reason))
        if isinstance(ticket, str):
            log.warning("imap connection refused peer=%s reason=%s", peer, ticket)
        waiter = loop.create_future()
        tls = server_tls_protocol(loop, self.app(ticket), self.ctx, waiter, handshake_timeout=HANDSHAKE_TIMEOUT_S)
        transport.set_protocol(tls)  # type: ignore[attr-defined]
        tls.connection_made(transport)

        def handshake_done(fut: asyncio.Future) -> None:
            if fut.cancelled():
                return
            exc = fut.exception()
            if exc is not None:
                if isinstance(ticket, Ticket):
                    ticket.release()
                log.warning("imap tls handshake failed peer=%s via=implicit reason=%s", peer, _tls_reason(exc))

        waiter.add_done_callback(handshake_done)


def _closed_in_handshake(transport: asyncio.BaseTransport, peer: str, reason: str) -> None:
    log.info("imap connection closed peer=%s reason=%s", peer, reason)
    close_soon(transport)


class _Refused(asyncio.Protocol):
    """A connection over a cap: `* BYE <why>`, then closed."""

    def __init__(self, why: str) -> None:
        self.why = why

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(bye(self.why).to_bytes())  # type: ignore[attr-defined]
        close_soon(transport)  # what was written is flushed first, within a grace


def _promote(ticket: Ticket | None, peer: str) -> str | None:
    """Count the connection as authenticated; the reason to close it when over the cap."""
    if ticket is None or ticket.authenticated:
        return None
    why = ticket.promote()
    if why is not None:
        log.warning("imap connection refused peer=%s reason=%s", peer, why)
    return why


async def serve_connection(
    core: ImapServices,
    conn: _Connection,
    *,
    implicit_tls: bool,
    ctx: ssl.SSLContext,
    preauth_timeout: float = PREAUTH_TIMEOUT_S,
) -> None:
    transport = conn.transport
    if transport is None:  # pragma: no cover - called from connection_made
        return
    peer = format_peer(transport.get_extra_info("peername"))
    session = Session(core, tls=implicit_tls, starttls=not implicit_tls, peer=peer)
    ticket = conn.ticket
    refused: str | None = None
    if implicit_tls:
        der = peer_certificate_der(transport.get_extra_info("ssl_object"))
        session.tls_started(der)
        if der is not None:  # validated by the TLS stack against the trust anchors
            refused = _promote(ticket, peer)
    idle_timeout = core.settings.limits.idle_timeout_s
    loop = asyncio.get_running_loop()
    auth_deadline = loop.time() + preauth_timeout
    listener = "imaps" if implicit_tls else "imap"
    metrics.session_opened(listener)
    try:
        if refused is not None:
            await _send(conn, [bye(refused)])
            return
        if not await _send(conn, session.greeting()):
            return
        while session.state is not State.LOGOUT:
            outputs = await session.process()
            starttls = any(isinstance(o, StartTLS) for o in outputs)
            sent = await _send(conn, outputs)
            del outputs  # not kept alive while the connection waits (a SELECT's answer, say)
            if not sent:
                return
            if starttls:
                conn.discard_input()  # nothing sent in clear after STARTTLS is kept
                if conn.transport is None:  # pragma: no cover - closed meanwhile
                    return
                try:
                    new = await loop.start_tls(
                        conn.transport, conn, ctx, server_side=True, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S
                    )
                except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as exc:
                    log.warning("imap tls handshake failed peer=%s via=STARTTLS reason=%s", peer, _tls_reason(exc))
                    return
                if new is None:  # pragma: no cover - the connection closed during the handshake
                    return
                conn.transport = new
                der = peer_certificate_der(new.get_extra_info("ssl_object"))
                session.tls_started(der)
                if der is not None and (why := _promote(ticket, peer)) is not None:
                    await _send(conn, [bye(why)])
                    return
                continue
            if session.state is State.LOGOUT:
                return
            if session.state not in UNAUTHENTICATED and (why := _promote(ticket, peer)) is not None:
                await _send(conn, [bye(why)])
                return
            if session.state in UNAUTHENTICATED:
                # One deadline from connection to authentication, not per read: a peer
                # sending a byte now and then does not keep the slot.
                data = await _read_or_idle(conn, session, max(0.0, auth_deadline - loop.time()))
                if data is None:
                    await _send(conn, [bye("Autologout: not authenticated in time")])
                    return
            else:
                data = await _read_or_idle(conn, session, idle_timeout)
                if data is None:
                    await _send(conn, [bye("Autologout: idle for too long")])
                    return
            if data == b"":
                return
            session.feed(data)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    except Exception:
        log.exception("imap connection failed peer=%s", peer)
    finally:
        metrics.session_closed(listener)
        session.close()
        conn.close()


async def _read_or_idle(conn: _Connection, session: Session, timeout: float) -> bytes | None:
    """The next input, pushing IDLE updates meanwhile. None on timeout."""
    watch = session.idle.watch if session.idle is not None else None
    if watch is None:
        await conn.wait_input(None, timeout)
        return await conn.read() if conn.has_input else None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    idler = _Idler(conn, session, watch)
    while True:
        if conn.has_input:
            return await conn.read()
        if watch.take():
            updates = await session.idle_updates()
            if updates and not await _send(conn, updates):
                return b""
            continue
        left = deadline - loop.time()
        if left <= 0:
            return None
        idler.waiting = True
        try:
            await conn.wait_input(watch, left, on_fire=idler.fired)
        finally:
            idler.waiting = False


class _Idler:
    """A session waiting in IDLE, as the fan-out sees it."""

    __slots__ = ("conn", "session", "waiting", "watch")

    def __init__(self, conn: _Connection, session: Session, watch: FolderWatch) -> None:
        self.conn = conn
        self.session = session
        self.watch = watch
        #: In `wait_input`: its task is parked, the fan-out may answer for it.
        self.waiting = False

    def fired(self) -> None:
        _FANOUT.poke(self)

    def wake(self) -> None:
        """Let the session's own task sync (the full diff, the \\Recent claim)."""
        self.watch.fired = True
        self.conn._wake()


class _Fanout:
    """One delivery, thousands of idlers on the folder: told in one pass (issue 12).

    The watches that fire in one turn of the loop are gathered; per folder (and mailbox),
    one session's task is woken to sync by itself (it takes the \\Recent claim, RFC 3501
    2.3.2), the folder's state and list are read once, and every other idler whose view was
    up to date and for which only new messages came (`FolderView.arrivals_only`) is told
    `* n EXISTS` here, its bytes encoded once for all who are told the same, written straight
    to its transport: no task switch, no timer, no await per idler. Any other idler (behind,
    flags or expunges came, its writes paused by a slow reader) is woken to sync by itself."""

    def __init__(self) -> None:
        self._pending: dict[tuple[object, ...], list[_Idler]] = {}
        self._scheduled = False

    def poke(self, idler: _Idler) -> None:
        view = idler.session.view
        if view is None:
            idler.wake()
            return
        key = (view.info.id, idler.session.mailbox, idler.session.principal)
        self._pending.setdefault(key, []).append(idler)
        if not self._scheduled:
            self._scheduled = True
            loop = asyncio.get_running_loop()
            task = loop.create_task(self._flush())
            _TASKS.add(task)
            task.add_done_callback(_TASKS.discard)

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # the rest of this turn's wake-ups join in
        self._scheduled = False
        groups, self._pending = self._pending, {}
        await asyncio.gather(*(self._fan_out(idlers) for idlers in groups.values()))

    async def _fan_out(self, idlers: list[_Idler]) -> None:
        if len(idlers) < 2:
            for i in idlers:
                i.wake()
            return
        # The one that syncs by itself: the first that may claim \Recent.
        first = next((i for i in idlers if i.session.view and not i.session.view.readonly), idlers[0])
        first.wake()
        rest = [i for i in idlers if i is not first]
        try:
            box, info = first.session.box, first.session.folder.info
            state = await box.folder_state(info)  # shared with `first`'s own read
            metas = await box.messages(info, state) if state is not None else None
        except Exception:  # noqa: BLE001 - each idler then syncs by itself and meets (and logs) it its own way
            for i in rest:
                i.wake()
            return
        if state is None or metas is None:
            for i in rest:
                i.wake()
            return
        at = (state.uidnext, state.highestmodseq)
        encoded: dict[tuple[object, ...], bytes] = {}
        for i in rest:
            view, transport = i.session.view, i.conn.transport
            if (
                not i.waiting
                or i.session.idle is None
                or i.session.idle.watch is not i.watch
                or view is None
                or transport is None
                or transport.is_closing()
                or not i.conn._writable.is_set()
            ):
                i.wake()
                continue
            start = view.arrivals_only(metas, at)
            if start is None:
                i.wake()
                continue
            updates = view.sync_arrivals(metas, start, at, None)
            i.watch.fired = False  # answered: its task has nothing to sync when it next looks
            try:
                key: tuple[object, ...] = tuple(updates)
                data = encoded.get(key)
                if data is None:
                    data = encoded[key] = b"".join(r.to_bytes() for r in updates)
            except TypeError:  # an unhashable response (a FLAGS list): encoded for this one
                data = b"".join(r.to_bytes() for r in updates)
            transport.write(data)


_FANOUT = _Fanout()


async def start(
    core: ImapServices,
    *,
    max_connections: int = MAX_CONNECTIONS,
    max_per_ip: int = MAX_CONNECTIONS_PER_IP,
    preauth_timeout: float = PREAUTH_TIMEOUT_S,
    max_preauth_per_ip: int | None = None,
    preauth_evict_after: float | None = None,
) -> dict[str, asyncio.Server]:
    """Start the `imap` (STARTTLS) and `imaps` (implicit TLS) listeners; the connection
    caps are shared by both (`max_preauth_per_ip`: `[limits] imap_max_preauth_per_ip`
    unless given)."""
    loop = asyncio.get_running_loop()
    listen = core.settings.listen
    ctx = core.server_ssl_context()
    if max_preauth_per_ip is None:
        max_preauth_per_ip = getattr(core.settings.limits, "imap_max_preauth_per_ip", MAX_PREAUTH_PER_IP)
    if preauth_evict_after is None:
        preauth_evict_after = getattr(core.settings.limits, "imap_preauth_evict_after_s", 5.0)
    # The pre-authentication deadline is `serve_connection`'s own (it answers BYE itself);
    # the admission's, a little later, ends a session stuck writing to a peer that does not read.
    admission = Admission(
        max_total=max_connections,
        max_per_ip=max_per_ip,
        max_preauth_per_ip=max_preauth_per_ip,
        preauth_timeout_s=preauth_timeout + CLOSE_GRACE_S,
        evict_after_s=preauth_evict_after,
    )

    def evict(conn: _Connection, peer: str) -> Callable[[str], None]:
        def go(reason: str) -> None:
            log.info("imap connection closed peer=%s reason=%s", peer, reason)
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.write(bye(reason).to_bytes())
            conn.close()

        return go

    def handler(implicit: bool) -> Callable[[_Connection], None]:
        def made(conn: _Connection) -> None:
            peername = conn.transport.get_extra_info("peername") if conn.transport else None
            peer = format_peer(peername)
            if conn.ticket is None:
                ticket = admission.admit(peername, evict(conn, peer))
                if isinstance(ticket, str):
                    log.warning("imap connection refused peer=%s reason=%s", peer, ticket)
                    if conn.transport is not None:
                        conn.transport.write(bye(ticket).to_bytes())
                    conn.close()  # what was written is flushed first
                    return
                conn.ticket = ticket
            else:
                conn.ticket.on_evict = evict(conn, peer)
            task = loop.create_task(
                serve_connection(core, conn, implicit_tls=implicit, ctx=ctx, preauth_timeout=preauth_timeout)
            )
            _TASKS.add(task)
            task.add_done_callback(_TASKS.discard)  # the slot is given back in connection_lost

        return made

    def implicit_app(ticket: Ticket | str) -> asyncio.Protocol:
        if isinstance(ticket, str):
            return _Refused(ticket)
        conn = _Connection(handler(True))
        conn.ticket = ticket
        return conn

    # Worker processes share each port (mss.workers): SO_REUSEPORT.
    shared = core.settings.worker_count > 1
    servers: dict[str, asyncio.Server] = {
        "imap": await loop.create_server(
            lambda: _Connection(handler(False)), listen.host, listen.imap, reuse_port=shared
        ),
        "imaps": await loop.create_server(
            lambda: _ImplicitTLS(implicit_app, ctx, admission), listen.host, listen.imaps, reuse_port=shared
        ),
    }
    for name, srv in servers.items():
        log.info("imap listening name=%s address=%s", name, srv.sockets[0].getsockname())
    return servers


_TASKS: set[asyncio.Task] = set()
