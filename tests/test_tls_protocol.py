"""`mss.tls_protocol`: implicit TLS with one read buffer shared by every connection of the
thread. Real sockets and the demo PKI: concurrent connections each get back exactly their
own bytes, and the peer certificate is still there in DER form."""

from __future__ import annotations

import asyncio
import os

import pytest

from mss.tls import peer_certificate_der, server_context
from mss.tls_protocol import SharedBufferSSLProtocol, server_tls_protocol

pytestmark = pytest.mark.timeout(60)


class _Echo(asyncio.Protocol):
    def __init__(self, seen: list) -> None:
        self.seen = seen

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.seen.append(transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def test_concurrent_connections_each_get_their_own_bytes_back(deployment):
    ctx = server_context(deployment.settings())
    loop = asyncio.get_running_loop()
    transports: list = []
    protocols: list = []

    class Implicit(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            tls = server_tls_protocol(loop, _Echo(transports), ctx, loop.create_future(), handshake_timeout=10)
            protocols.append(tls)
            transport.set_protocol(tls)
            tls.connection_made(transport)

    server = await loop.create_server(Implicit, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client_ctx = deployment.client_context(deployment.mailbox("PER", 0))
    try:

        async def one(i: int) -> bytes:
            payload = os.urandom(200_000) + b"%d" % i  # bigger than a TLS record, many reads
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
            writer.write(payload)
            got = await asyncio.wait_for(reader.readexactly(len(payload)), 30)
            writer.close()
            return got == payload

        assert all(await asyncio.gather(*(one(i) for i in range(12))))
        assert all(isinstance(p, SharedBufferSSLProtocol) for p in protocols)
        # One buffer for all: no connection holds its own 256 KiB.
        assert len({id(p._ssl_buffer_view.obj) for p in protocols}) == 1
        assert all(len(p._ssl_buffer) == 0 for p in protocols)
        # The DER form of the client certificate is what the listeners read; the dict is gone.
        t = transports[0]
        assert peer_certificate_der(t.get_extra_info("ssl_object"))
        assert t.get_extra_info("peercert") is None
    finally:
        server.close()
        await server.wait_closed()


async def test_a_failed_handshake_reaches_the_waiter(deployment):
    ctx = server_context(deployment.settings())
    loop = asyncio.get_running_loop()
    waiters: list[asyncio.Future] = []

    class Implicit(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            waiter = loop.create_future()
            waiters.append(waiter)
            tls = server_tls_protocol(loop, _Echo([]), ctx, waiter, handshake_timeout=10)
            transport.set_protocol(tls)
            tls.connection_made(transport)

    server = await loop.create_server(Implicit, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"this is no TLS ClientHello\r\n" * 4)
        await asyncio.wait_for(reader.read(), 10)
        writer.close()
        exc = await asyncio.wait_for(asyncio.gather(waiters[0], return_exceptions=True), 10)
        assert isinstance(exc[0], Exception)
    finally:
        server.close()
        await server.wait_closed()
