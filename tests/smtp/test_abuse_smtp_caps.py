"""SMTP connection caps (issue 13: 10,000+ idle anonymous connections were held): global and
per source address over the three listeners, answered `421 4.7.0` and closed; connections
that proved nothing have their own small cap per address (the oldest gives way to a
newcomer) and a short life, so that they never lock a legitimate client out. A real
`mss serve`; raw sockets for the idle connections, smtplib with certificates for the users."""

from __future__ import annotations

import smtplib
import socket

import pytest
from abuse_support import served, smtp_client, wait_for

pytestmark = pytest.mark.timeout(120)

LIMITS = {
    "limits": {
        "smtp_max_connections": 6,
        "smtp_max_connections_per_ip": 2,
        "smtp_max_preauth_per_ip": 2,
        "smtp_preauth_timeout_s": 60,
        "smtp_preauth_evict_after_s": 0,  # any pre-authentication connection gives way
    }
}


@pytest.fixture(scope="module")
def caps_server(backend, tmp_path_factory):
    with served(backend, tmp_path_factory.mktemp("caps") / "demo", LIMITS) as srv:
        yield srv


def idle(server, listener: str, source: str) -> tuple[socket.socket, bytes]:
    """A connection that never authenticates; its first line."""
    sock = socket.create_connection((server.host, server.port(listener)), 10, source_address=(source, 0))
    return sock, _line(sock)


def _line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return data


def closed_with(sock: socket.socket) -> bytes:
    """What the server said before closing (b"" if it closed without a word)."""
    sock.settimeout(10)
    said = _line(sock)
    assert sock.recv(1024) == b""
    sock.close()
    return said


def smtps(server, entry: dict | None, source: str) -> smtplib.SMTP_SSL:
    ctx = server.deployment.client_context(entry)
    return smtplib.SMTP_SSL(
        server.host, server.port("submissions"), context=ctx, timeout=10, source_address=(source, 0)
    )


def sends_a_message(server, entry: dict, source: str) -> bool:
    c = smtp_client(server, entry, source=source)
    try:
        assert c.mail(entry["address"])[0] == 250
        assert c.rcpt(entry["address"])[0] == 250
        body = (
            f"From: <{entry['address']}>\r\nTo: <{entry['address']}>\r\nSubject: caps\r\n"
            "Date: Mon, 02 Nov 2026 10:00:00 +0100\r\nMessage-ID: <caps@client.test>\r\n\r\nBonjour.\r\n"
        )
        return c.data(body.encode())[0] == 250
    finally:
        c.quit()


def test_anonymous_connections_never_lock_a_user_out_of_their_address(caps_server):
    server = caps_server
    claire = server.deployment.mailbox("PER", 0)
    first, greeting1 = idle(server, "submission", "127.0.0.2")
    second, greeting2 = idle(server, "mta", "127.0.0.2")  # the caps span the listeners
    assert greeting1.startswith(b"220") and greeting2.startswith(b"220")
    # The address has as many anonymous connections as it may: a newcomer still gets in,
    # and the oldest anonymous one is closed with 421 4.7.0.
    assert sends_a_message(server, claire, "127.0.0.2")
    assert closed_with(first).startswith(b"421 4.7.0 Too many unauthenticated connections")
    # The user's connection authenticated (its certificate) as soon as TLS was up, so it
    # did not stay in the anonymous pool: one more anonymous connection evicts nobody.
    third, greeting3 = idle(server, "submission", "127.0.0.2")
    assert greeting3.startswith(b"220")
    second.settimeout(0.3)
    with pytest.raises(TimeoutError):
        second.recv(1)
    # An implicit-TLS newcomer over the cap evicts the oldest anonymous one, over TLS too.
    fourth = smtps(server, None, "127.0.0.2")
    assert closed_with(second).startswith(b"421 4.7.0")
    fourth.quit()
    third.close()


def test_authenticated_connections_per_address_are_capped_and_freed_on_close(caps_server):
    server = caps_server
    claire = server.deployment.mailbox("PER", 0)
    held = [smtps(server, claire, "127.0.0.3") for _ in range(2)]
    assert all(c.noop()[0] == 250 for c in held)
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtps(server, claire, "127.0.0.3")
    assert refused.value.smtp_code == 421 and b"from your address" in refused.value.smtp_error
    # Another address is served meanwhile.
    assert sends_a_message(server, claire, "127.0.0.4")
    # A slot comes back when its connection ends.
    held.pop().quit()

    def admitted() -> bool:
        try:
            smtps(server, claire, "127.0.0.3").quit()
        except smtplib.SMTPConnectError:
            return False
        return True

    assert wait_for(admitted)
    for c in held:
        c.quit()
    assert "smtp connection closed" in server.log_text() and "from your address" in server.log_text()


def test_global_cap_refuses_only_when_full_of_authenticated_connections(caps_server):
    server = caps_server
    claire = server.deployment.mailbox("PER", 0)
    # Anonymous connections from many addresses fill the server: newcomers still get in.
    anonymous = [idle(server, "submission", f"127.0.1.{n}")[0] for n in range(6)]
    users = [smtps(server, claire, f"127.0.2.{n}") for n in range(6)]
    assert all(c.noop()[0] == 250 for c in users)
    assert all(closed_with(s).startswith(b"421 4.7.0") for s in anonymous)
    # Full of authenticated connections: refused with 421 4.7.0.
    sock, line = idle(server, "mta", "127.0.3.1")
    assert line.startswith(b"421 4.7.0 Too many connections to this server")
    sock.close()
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtps(server, claire, "127.0.3.2")
    assert refused.value.smtp_code == 421
    for c in users:
        c.quit()

    def admitted() -> bool:
        sock, line = idle(server, "submission", "127.0.3.3")
        sock.close()
        return line.startswith(b"220")

    assert wait_for(admitted)


def test_unauthenticated_connections_have_a_short_life(backend, tmp_path):
    settings = {"limits": {"smtp_preauth_timeout_s": 1.0}}
    with served(backend, tmp_path / "demo", settings) as server:
        claire = server.deployment.mailbox("PER", 0)
        sock, greeting = idle(server, "submission", "127.0.0.1")
        user = smtps(server, claire, "127.0.0.1")
        assert greeting.startswith(b"220")
        sock.sendall(b"EHLO client.test\r\n")  # talking does not extend it
        said = b""
        sock.settimeout(5)
        while b"421" not in said:
            chunk = sock.recv(4096)
            if not chunk:
                break
            said += chunk
        assert b"421 4.7.0 Not authenticated in time" in said
        # The authenticated connection outlives the deadline.
        assert user.noop()[0] == 250
        user.quit()
