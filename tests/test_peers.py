"""`mss.peers.format_peer`: one form for a peer in every log line (RFC 3986 §3.2.2 brackets)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from mss.peers import format_peer


@pytest.mark.parametrize(
    ("peername", "text"),
    [
        (("127.0.0.1", 50123), "127.0.0.1:50123"),
        (("192.0.2.7", 25), "192.0.2.7:25"),
        (("::1", 993, 0, 0), "[::1]:993"),
        (("2001:db8::42", 587, 0, 0), "[2001:db8::42]:587"),
        (("fe80::1%eth0", 143, 0, 2), "[fe80::1%eth0]:143"),
        (("::ffff:192.0.2.7", 465, 0, 0), "[::ffff:192.0.2.7]:465"),
        (None, "?"),
        ("", "?"),  # AF_UNIX, unnamed socket
        ((), "?"),
        ("/run/mss/imap.sock", "/run/mss/imap.sock"),  # AF_UNIX, path
        (b"\x00mss-abstract", "\x00mss-abstract"),  # AF_UNIX, Linux abstract name
    ],
)
def test_format_peer(peername, text: str) -> None:
    assert format_peer(peername) == text


def _peername_of_a_real_connection(family: int, host: str) -> object:
    async def run() -> object:
        seen: asyncio.Future = asyncio.get_running_loop().create_future()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.set_result(writer.get_extra_info("peername"))
            writer.close()

        server = await asyncio.start_server(on_client, host, 0, family=family)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection(host, port, family=family)
        try:
            return await asyncio.wait_for(seen, 5)
        finally:
            writer.close()
            server.close()
            await server.wait_closed()

    return asyncio.run(run())


def test_real_ipv4_peername() -> None:
    text = format_peer(_peername_of_a_real_connection(socket.AF_INET, "127.0.0.1"))
    host, _, port = text.rpartition(":")
    assert host == "127.0.0.1" and port.isdigit()


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 in this Python")
def test_real_ipv6_peername() -> None:
    try:
        peername = _peername_of_a_real_connection(socket.AF_INET6, "::1")
    except OSError as exc:  # no ::1 on this host
        pytest.skip(f"IPv6 loopback unavailable: {exc}")
    text = format_peer(peername)
    assert text.startswith("[::1]:") and text.rpartition(":")[2].isdigit()
