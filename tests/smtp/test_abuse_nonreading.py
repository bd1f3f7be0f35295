"""Connections the server ends are really closed, even when the peer never reads (review of
issue 13): asyncio's `close()` waits for the write buffer to drain, so an anonymous client
pipelining `RSET` with a tiny receive buffer used to keep its connections, and their
admission slots were given back at eviction: the pre-authentication cap and timeout were
bypassed. Now they are aborted after a short grace and their slot is given back only when
they are gone. A real `mss serve`; the server's side of the sockets is counted with `ss`."""

from __future__ import annotations

import socket

import pytest
from abuse_support import non_reading_client, served, server_side_established, wait_for

pytestmark = pytest.mark.timeout(120)

SOURCE = "127.0.0.31"


def greeting(server, listener: str, source: str) -> bytes:
    with socket.create_connection((server.host, server.port(listener)), 10, source_address=(source, 0)) as sock:
        return _line(sock)


def test_smtp_non_reading_clients_are_closed_and_the_cap_holds(backend, tmp_path):
    limits = {"limits": {"smtp_max_preauth_per_ip": 2, "smtp_preauth_timeout_s": 2}}
    with served(backend, tmp_path / "demo", limits) as server:
        port = server.port("submission")
        socks = [non_reading_client(server.host, port, SOURCE, b"RSET\r\n") for _ in range(6)]
        try:
            # All gone once the pre-authentication timeout (2 s) and the grace (2 s) are over
            # (before the fix, all six were still ESTABLISHED 25 s later).
            assert wait_for(lambda: server_side_established(port, SOURCE) == 0, timeout=15), server_side_established(
                port, SOURCE
            )
            # The source is not locked out once they are gone: a newcomer is greeted.
            assert greeting(server, "submission", SOURCE).startswith(b"220"), "newcomer refused"
        finally:
            for sock in socks:
                sock.close()


def test_imap_non_reading_clients_are_closed(backend, tmp_path):
    limits = {"limits": {"imap_max_preauth_per_ip": 2, "imap_preauth_timeout_s": 2}}
    with served(backend, tmp_path / "demo", limits) as server:
        port = server.port("imap")
        socks = [non_reading_client(server.host, port, SOURCE, b"a NOOP\r\n") for _ in range(6)]
        try:
            assert wait_for(lambda: server_side_established(port, SOURCE) == 0, timeout=15), server_side_established(
                port, SOURCE
            )
            assert greeting(server, "imap", SOURCE).startswith(b"* OK"), "newcomer refused"
        finally:
            for sock in socks:
                sock.close()


def test_young_pre_authentication_connections_do_not_give_way(backend, tmp_path):
    """A pre-authentication connection younger than `*_preauth_evict_after_s` is not closed
    for a newcomer: the newcomer is refused (`421 4.7.0` / `* BYE`), so a burst of new
    connections cannot push out a client that is in the middle of authenticating."""
    limits = {
        "limits": {
            "smtp_max_preauth_per_ip": 2,
            "smtp_preauth_evict_after_s": 600,
            "imap_max_preauth_per_ip": 2,
            "imap_preauth_evict_after_s": 600,
        }
    }
    with served(backend, tmp_path / "demo", limits) as server:
        for listener, hello, refused, ping, pong in (
            ("submission", b"220", b"421 4.7.0 Too many connections from your address", b"NOOP\r\n", b"250"),
            ("imap", b"* OK", b"* BYE Too many connections from your address", b"a NOOP\r\n", b"a OK"),
        ):
            first = [socket.create_connection((server.host, server.port(listener)), 10, source_address=(SOURCE, 0))]
            first.append(socket.create_connection((server.host, server.port(listener)), 10, source_address=(SOURCE, 0)))
            try:
                for sock in first:
                    assert _line(sock).startswith(hello)
                assert greeting(server, listener, SOURCE).startswith(refused), listener
                for sock in first:  # still served
                    sock.sendall(ping)
                    assert _line(sock).startswith(pong), listener
            finally:
                for sock in first:
                    sock.close()


def _line(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return data
