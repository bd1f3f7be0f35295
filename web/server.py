"""uvicorn inside `mss serve`: the `http` listener on the same event loop as SMTP and IMAP.

`start(services)` binds the socket itself (so `mss serve` can log the real port, 0 meaning
ephemeral), hands it to a uvicorn `Server` and returns once uvicorn listens on it. The
returned `WebListener` is closed like the other listeners: `close()`, then `wait_closed()`.

What uvicorn is told, and why:
- `log_config=None`: its loggers propagate to the root handlers (`mss.logging_setup`'s
  escaping formatter); `access_log=False`: request lines carry addresses and national ids
  in their query strings and are never logged.
- its signal handlers are left out: `mss serve` owns SIGTERM and SIGINT for every listener.
- `http="h11"` with `h11_max_incomplete_event_size` (the request line and header block),
  `limit_concurrency` (503 past it), no `Server` header, no proxy headers trusted, no
  websockets, no lifespan (the core is opened and closed by `mss serve`).
- TLS (`[listen] http_tls`) with `mss.tls.http_server_context`: the [tls] certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Iterator

import uvicorn

from mss.config import ConfigError, is_loopback_host
from mss.services import WebServices
from mss.tls import http_server_context
from web.app import create_app

log = logging.getLogger("mss.web")

#: Seconds given to requests in flight when the listener stops.
GRACEFUL_SHUTDOWN_S = 5
KEEP_ALIVE_S = 5


class _EmbeddedServer(uvicorn.Server):
    """uvicorn's server without its own signal handling."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebListener:
    """A running uvicorn server on one socket."""

    def __init__(self, server: uvicorn.Server, sock: socket.socket, task: asyncio.Task[None]) -> None:
        self._server = server
        self._task = task
        self.sockets = [sock]
        self.port: int = sock.getsockname()[1]
        self.tls = server.config.ssl is not None

    def close(self) -> None:
        """Stop accepting; connections in flight get `GRACEFUL_SHUTDOWN_S` to finish."""
        self._server.should_exit = True

    async def wait_closed(self) -> None:
        await self._task


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket on the first address `host` resolves to; `reuse_port` when
    worker processes share the port (mss.workers)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


SslContextFactory = Callable[[uvicorn.Config, Callable[[], ssl.SSLContext]], ssl.SSLContext]


def _given(context: ssl.SSLContext) -> SslContextFactory:
    def factory(_config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return context

    return factory


def config(services: WebServices, tls: ssl.SSLContext | None = None) -> uvicorn.Config:
    limits = services.settings.limits
    return uvicorn.Config(
        create_app(services),
        http="h11",
        ws="none",
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        h11_max_incomplete_event_size=limits.http_max_head,
        limit_concurrency=limits.http_max_connections,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        ssl_context_factory=_given(tls) if tls is not None else None,
    )


async def start(services: WebServices, *, host: str | None = None, port: int | None = None) -> WebListener:
    """Serve the app on `[listen] host` and `http` (or those given), HTTPS when `http_tls`."""
    settings = services.settings
    listen = settings.listen
    tls = http_server_context(settings) if listen.http_tls else None
    host = listen.host if host is None else host
    if tls is None and not is_loopback_host(host):
        raise ConfigError(f"listen.http_tls: plain HTTP is served only on a loopback address, not {host!r}")
    sock = bind(host, listen.http if port is None else port, reuse_port=settings.worker_count > 1)
    try:
        server = _EmbeddedServer(config(services, tls))
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]), name="http")
        while not server.started:
            if task.done():
                await task  # raises what stopped it
                raise RuntimeError("the http listener stopped while starting")
            await asyncio.sleep(0.01)
    except BaseException:
        sock.close()
        raise
    listener = WebListener(server, sock, task)
    log.info(
        "http listening on %s port %d (%s)",
        host,
        listener.port,
        "https" if tls is not None else "plain http: loopback only",
    )
    return listener
