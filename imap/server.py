"""The asyncio layer: listeners, TLS, and pumping bytes between sockets and `Session`.

Two listeners (RFC 8314): `imap` (clear, STARTTLS required before anything else,
RFC 9051 6.2.1) and `imaps` (implicit TLS). Both ask for a client certificate; the session
hands it to the core at AUTHENTICATE EXTERNAL. Everything about IMAP itself lives in the
sans-IO `Session`; this module only moves bytes, performs handshakes and waits.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence

from imap.actions import Close, Output, StartTLS
from imap.protocol.response import Response, bye
from imap.session import Session
from imap.state import UNAUTHENTICATED, State
from mss.peers import format_peer
from mss.services import ImapServices
from mss.tls import peer_certificate_der

log = logging.getLogger("mss.imap")

_READ_CHUNK = 64 * 1024

#: A connection that has not authenticated this long after it opened is closed: an
#: anonymous peer may not hold a slot for the 30-minute idle timeout (RFC 9051 5.4 allows
#: any autologout before authentication).
PREAUTH_TIMEOUT_S = 60.0
#: Connections over both listeners, and from one IP address; more are answered BYE.
MAX_CONNECTIONS = 1000
MAX_CONNECTIONS_PER_IP = 50


class _Admission:
    """Counts open connections, globally and per peer address."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self.by_ip: dict[str, int] = {}

    def admit(self, ip: str) -> str | None:
        """Takes a slot, or says why not."""
        if self.total >= self.max_total:
            return "Too many connections to this server; try again later"
        if self.by_ip.get(ip, 0) >= self.max_per_ip:
            return "Too many connections from your address; try again later"
        self.total += 1
        self.by_ip[ip] = self.by_ip.get(ip, 0) + 1
        return None

    def release(self, ip: str) -> None:
        self.total -= 1
        left = self.by_ip.get(ip, 0) - 1
        if left > 0:
            self.by_ip[ip] = left
        else:
            self.by_ip.pop(ip, None)


class _Connection(asyncio.Protocol):
    """A byte pipe with flow control that survives `loop.start_tls` (same protocol object)."""

    def __init__(self, on_made: Callable[[_Connection], None] | None = None) -> None:
        self._on_made = on_made
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._eof = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self.closed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self._on_made is not None:
            self._on_made(self)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._readable.set()
        if len(self._buf) > 4 * _READ_CHUNK and self.transport is not None:
            self.transport.pause_reading()  # the session catches up first

    def eof_received(self) -> bool:
        self._eof = True
        self._readable.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._readable.set()
        self._writable.set()
        self.closed.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def read(self) -> bytes:
        """Buffered bytes, waiting for some; b"" at end of stream. Cancel-safe."""
        while not self._buf and not self._eof:
            self._readable.clear()
            await self._readable.wait()
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
        await self._writable.wait()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


async def _send(conn: _Connection, outputs: Sequence[Output]) -> bool:
    """Write responses; returns False when the connection must close."""
    buf = bytearray()
    for item in outputs:
        if isinstance(item, Response):
            buf += item.to_bytes()
            if len(buf) > _READ_CHUNK:
                await conn.write(bytes(buf))
                buf.clear()
        elif isinstance(item, Close):
            if buf:
                await conn.write(bytes(buf))
            return False
    if buf:
        await conn.write(bytes(buf))
    return True


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
    if implicit_tls:
        session.tls_started(peer_certificate_der(transport.get_extra_info("ssl_object")))
    idle_timeout = core.settings.limits.idle_timeout_s
    loop = asyncio.get_running_loop()
    auth_deadline = loop.time() + preauth_timeout
    try:
        if not await _send(conn, session.greeting()):
            return
        while session.state is not State.LOGOUT:
            outputs = await session.process()
            starttls = any(isinstance(o, StartTLS) for o in outputs)
            if not await _send(conn, outputs):
                return
            if starttls:
                conn.discard_input()  # nothing sent in clear after STARTTLS is kept
                if conn.transport is None:  # pragma: no cover - closed meanwhile
                    return
                try:
                    new = await loop.start_tls(conn.transport, conn, ctx, server_side=True)
                except (ssl.SSLError, ConnectionError, OSError) as exc:
                    log.info("imap starttls failed peer=%s error=%s", peer, exc)
                    return
                if new is None:  # pragma: no cover - the connection closed during the handshake
                    return
                conn.transport = new
                session.tls_started(peer_certificate_der(new.get_extra_info("ssl_object")))
                continue
            if session.state is State.LOGOUT:
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
        session.close()
        conn.close()


async def _read_or_idle(conn: _Connection, session: Session, timeout: float) -> bytes | None:
    """The next input, pushing IDLE updates meanwhile. None on timeout."""
    if session.idle is None or session.idle.watch is None:
        try:
            return await asyncio.wait_for(conn.read(), timeout)
        except TimeoutError:
            return None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    read = asyncio.ensure_future(conn.read())
    try:
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return None
            change = asyncio.ensure_future(session.idle.watch.wait(left))
            done, _ = await asyncio.wait({read, change}, return_when=asyncio.FIRST_COMPLETED)
            if read in done:
                change.cancel()
                return read.result()
            if change.result():
                updates = await session.idle_updates()
                if updates and not await _send(conn, updates):
                    return b""
    finally:
        if not read.done():
            read.cancel()


async def start(
    core: ImapServices,
    *,
    max_connections: int = MAX_CONNECTIONS,
    max_per_ip: int = MAX_CONNECTIONS_PER_IP,
    preauth_timeout: float = PREAUTH_TIMEOUT_S,
) -> dict[str, asyncio.Server]:
    """Start the `imap` (STARTTLS) and `imaps` (implicit TLS) listeners; the connection
    caps are shared by both."""
    loop = asyncio.get_running_loop()
    listen = core.settings.listen
    ctx = core.server_ssl_context()
    admission = _Admission(max_connections, max_per_ip)

    def handler(implicit: bool) -> Callable[[], _Connection]:
        def made(conn: _Connection) -> None:
            peername = conn.transport.get_extra_info("peername") if conn.transport else None
            ip = str(peername[0]) if peername else "?"
            why = admission.admit(ip)
            if why is not None:
                log.warning("imap connection refused peer=%s reason=%s", ip, why)
                if conn.transport is not None:
                    conn.transport.write(bye(why).to_bytes())
                conn.close()  # what was written is flushed first
                return
            task = loop.create_task(
                serve_connection(core, conn, implicit_tls=implicit, ctx=ctx, preauth_timeout=preauth_timeout)
            )
            _TASKS.add(task)
            task.add_done_callback(_TASKS.discard)
            task.add_done_callback(lambda _t: admission.release(ip))

        return lambda: _Connection(made)

    servers: dict[str, asyncio.Server] = {
        "imap": await loop.create_server(handler(False), listen.host, listen.imap),
        "imaps": await loop.create_server(handler(True), listen.host, listen.imaps, ssl=ctx),
    }
    for name, srv in servers.items():
        log.info("imap listening name=%s address=%s", name, srv.sockets[0].getsockname())
    return servers


_TASKS: set[asyncio.Task] = set()
