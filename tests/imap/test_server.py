"""The asyncio layer in process: a real `Core` on the demo deployment, `imap.server.start`
on free ports with small limits, real sockets and TLS. Pre-authentication timeout and
connection caps (global and per IP address)."""

from __future__ import annotations

import asyncio

import pytest

from imap import server as imap_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def listen(deployment):
    """`start(**limits)` -> (host, ports); everything started is stopped afterwards."""
    from mss.core import Core

    settings = deployment.settings()
    settings = settings.model_copy(update={"listen": settings.listen.model_copy(update={"imap": 0, "imaps": 0})})
    core = await Core.open(settings)
    started: list[asyncio.AbstractServer] = []

    async def start(**limits):
        servers = await imap_server.start(core, **limits)
        started.extend(servers.values())
        return settings.listen.host, {n: s.sockets[0].getsockname()[1] for n, s in servers.items()}

    yield start
    for srv in started:
        srv.close()
    for task in list(imap_server._TASKS):
        task.cancel()
    await asyncio.gather(*imap_server._TASKS, return_exceptions=True)
    await core.close()


async def open_plain(host, port):
    reader, writer = await asyncio.open_connection(host, port)
    return reader, writer, await asyncio.wait_for(reader.readline(), 10)


async def test_unauthenticated_connection_is_closed_after_the_short_timeout(listen):
    host, ports = await listen(preauth_timeout=0.5)
    reader, writer, greeting = await open_plain(host, ports["imap"])
    assert greeting.startswith(b"* OK")
    # Keep talking: one deadline from connection, not per read.
    for i in range(4):
        writer.write(b"n%d NOOP\r\n" % i)
        line = await asyncio.wait_for(reader.readline(), 10)
        if line.startswith(b"* BYE"):
            break
        await asyncio.sleep(0.2)
    else:
        line = await asyncio.wait_for(reader.readline(), 10)
    assert line.startswith(b"* BYE") and b"not authenticated" in line
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_authenticated_connection_keeps_the_idle_timeout(listen, deployment):
    host, ports = await listen(preauth_timeout=0.5)
    ctx = deployment.client_context(deployment.mailbox("PER", 0))
    reader, writer = await asyncio.open_connection(host, ports["imaps"], ssl=ctx, server_hostname=host)
    try:
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"* OK")
        writer.write(b"a AUTHENTICATE EXTERNAL =\r\n")
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"a OK")
        await asyncio.sleep(1.0)  # twice the pre-authentication timeout
        writer.write(b"b NOOP\r\n")
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"b OK")
    finally:
        writer.close()


async def open_authenticated(host, port, deployment):
    """An IMAPS connection with the demo PER mailbox's certificate, authenticated by EXTERNAL."""
    ctx = deployment.client_context(deployment.mailbox("PER", 0))
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host)
    greeting = await asyncio.wait_for(reader.readline(), 10)
    if greeting.startswith(b"* OK"):
        writer.write(b"a AUTHENTICATE EXTERNAL =\r\n")
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"a OK")
    return reader, writer, greeting


async def test_per_ip_cap_counts_authenticated_connections_and_frees_the_slot_on_close(listen, deployment):
    host, ports = await listen(max_per_ip=2)
    conns = [await open_authenticated(host, ports["imaps"], deployment) for _ in range(2)]
    assert all(g.startswith(b"* OK") for _, _, g in conns)
    # A third certificate-bearing connection from the address is over the cap...
    reader, writer, line = await open_authenticated(host, ports["imaps"], deployment)
    assert line.startswith(b"* BYE") and b"your address" in line
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    # ... while anonymous connections do not count against it (their own cap).
    r, w, line = await open_plain(host, ports["imap"])
    assert line.startswith(b"* OK")
    w.close()
    # A closed connection gives its slot back.
    r0, w0, _ = conns.pop()
    w0.write(b"x LOGOUT\r\n")
    assert await asyncio.wait_for(r0.read(), 10) != b""
    w0.close()
    for _ in range(50):
        reader, writer, line = await open_authenticated(host, ports["imaps"], deployment)
        writer.close()
        if line.startswith(b"* OK"):
            break
        await asyncio.sleep(0.05)
    assert line.startswith(b"* OK")
    for _, w, _ in conns:
        w.close()


async def test_global_cap_answers_bye_when_full_of_authenticated_connections(listen, deployment):
    host, ports = await listen(max_connections=1)
    r1, w1, g1 = await open_authenticated(host, ports["imaps"], deployment)
    assert g1.startswith(b"* OK")
    reader, writer, line = await open_plain(host, ports["imap"])
    assert line.startswith(b"* BYE") and b"this server" in line
    writer.close()
    w1.close()


async def test_global_cap_full_of_anonymous_connections_makes_room_for_a_newcomer(listen, deployment):
    host, ports = await listen(max_connections=2, preauth_evict_after=0)  # however young
    idle = [await open_plain(host, ports["imap"]) for _ in range(2)]
    assert all(g.startswith(b"* OK") for _, _, g in idle)
    # The server is full of connections that proved nothing: the oldest goes.
    r, w, g = await open_authenticated(host, ports["imaps"], deployment)
    assert g.startswith(b"* OK")
    oldest_reader = idle[0][0]
    assert (await asyncio.wait_for(oldest_reader.readline(), 10)).startswith(b"* BYE")
    w.write(b"b NOOP\r\n")
    assert (await asyncio.wait_for(r.readline(), 10)).startswith(b"b OK")
    for _, wi, _ in idle:
        wi.close()
    w.close()


def _no_verify():
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
