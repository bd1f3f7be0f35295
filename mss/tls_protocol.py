"""The TLS layer an implicit-TLS listener installs on an accepted TCP transport, lean in memory.

Why: the IMAP and submission listeners put TLS on the transport themselves (to admit a
connection before its handshake and log a failed handshake with its reason), and they used
`asyncio.sslproto.SSLProtocol` for it. That class allocates a zero-filled 256 KiB read buffer
per connection (`bytearray(max_size)`, CPython 3.11+), so every idle IMAP connection cost
about 300 KB of resident memory, ten thousand of them 3 GB (issue 11's target is 30 KB).

A subclass of asyncio's protocol reads into one buffer shared by every connection of the
thread instead: the transport fills it and calls `buffer_updated` at once, which copies the
bytes into the connection's incoming BIO before anything else runs, so no two connections
ever hold it at the same time. It also drops the dict form of the peer certificate (about
4 KB of small objects per connection) that nothing here reads.

Measured on 1,000 IMAP connections in IDLE with a client certificate (`python -m bench idle`):
asyncio's protocol 331 KB per connection, uvloop's own (`uvloop.loop.SSLProtocol`, malloc'd
buffer, what `start_tls` uses under uvloop) 76 KB, this one 62 KB, at the same CPU per push.
A bare TLS connection with a client certificate costs about 40 KB here whichever protocol
holds it: that part is OpenSSL's (its SSL object, the verified peer chain, the BIOs).
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto as sslproto
import ssl
import threading

__all__ = ["server_tls_protocol"]

_local = threading.local()


def _shared_buffer(size: int) -> memoryview:
    view: memoryview | None = getattr(_local, "view", None)
    if view is None or len(view) < size:
        view = memoryview(bytearray(size))
        _local.view = view
    return view


class SharedBufferSSLProtocol(sslproto.SSLProtocol):
    """asyncio's SSL protocol with the per-connection read buffer replaced by a per-thread one."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # Drop the 256 KiB the base class allocated; `get_buffer` hands out the shared one.
        self._ssl_buffer = bytearray()
        self._ssl_buffer_view = _shared_buffer(self.max_size)

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        super()._on_handshake_complete(handshake_exc)
        # The peer certificate as a dict of tuples (about 4 KB of small objects per
        # connection) is never read here: the DER form is (`mss.tls.peer_certificate_der`).
        self._extra.pop("peercert", None)

    def get_buffer(self, n: int) -> memoryview:
        # The base class's `buffer_updated` reads `_ssl_buffer_view`, right after the read.
        self._ssl_buffer_view = _shared_buffer(self.max_size)
        return self._ssl_buffer_view


def server_tls_protocol(
    loop: asyncio.AbstractEventLoop,
    app: asyncio.BaseProtocol,
    ctx: ssl.SSLContext,
    waiter: asyncio.Future,
    *,
    handshake_timeout: float,
) -> asyncio.BufferedProtocol:
    """A server-side TLS protocol for `app`, to `set_protocol` on an accepted transport and
    then call `connection_made` on; `waiter` gets the handshake's outcome."""
    return SharedBufferSSLProtocol(loop, app, ctx, waiter, server_side=True, ssl_handshake_timeout=handshake_timeout)
