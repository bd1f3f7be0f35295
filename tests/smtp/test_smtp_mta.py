"""The `mta` listener (port 25 role) seen by a client that is not another operator: it
greets like any SMTP server, requires STARTTLS before MAIL (RFC 3207 4), offers no AUTH,
and stores nothing from a client without a SERV certificate of a whitelisted peer
(tests/relay/test_mta_listener.py has the peers, good and bad). With `[relay] enabled =
false` it says at once that it offers no service (RFC 5321 3.1: 554 greeting, 503 to
anything but QUIT)."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import threading

import pytest
from smtp_support import client_context, entry_context


def test_greets_220_and_requires_starttls_before_mail(smtp_server):
    client = smtplib.SMTP(smtp_server.host, smtp_server.port("mta"), local_hostname="mx.other.test", timeout=10)
    try:
        code, _ = client.ehlo()
        assert code == 250 and client.has_extn("starttls") and not client.has_extn("auth")
        code, text = client.mail("a@other.test")
        assert code == 530 and text.startswith(b"5.7.0")
    finally:
        client.quit()


def test_a_client_of_the_submission_ports_gets_nothing_stored_here(smtp_server, deployment):
    total = smtp_server.total_stored()
    claire = deployment.mailbox("PER", 0)
    for ctx in (client_context(deployment), entry_context(deployment, claire)):
        client = smtplib.SMTP(smtp_server.host, smtp_server.port("mta"), local_hostname="mx.other.test", timeout=10)
        try:
            client.ehlo()
            client.starttls(context=ctx)
            client.ehlo()
            assert not client.has_extn("auth")
            code, text = client.mail(claire["address"])
            # No certificate: 530 5.7.0; a professional card: 550 5.7.1 (not a SERV certificate).
            assert (code, text[:5]) in ((530, b"5.7.0"), (550, b"5.7.1"))
            assert client.rcpt(claire["address"])[0] == 503
        finally:
            client.quit()
    assert smtp_server.total_stored() == total


@pytest.fixture(scope="module")
def disabled_mta(deployment):
    """The listener of `smtp.server.start` with `[relay] enabled = false`."""
    from smtp.server import NoRelayService

    settings = deployment.settings()
    settings.relay.enabled = False
    ready, box = threading.Event(), {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: NoRelayService(settings), "127.0.0.1", 0)
        box["port"], box["loop"], box["stop"] = server.sockets[0].getsockname()[1], loop, asyncio.Event()
        ready.set()
        await box["stop"].wait()
        server.close()
        await server.wait_closed()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield box["port"]
    box["loop"].call_soon_threadsafe(box["stop"].set)
    thread.join(10)


def test_disabled_smtplib_sees_a_554_greeting(disabled_mta):
    with pytest.raises(smtplib.SMTPConnectError) as err:
        smtplib.SMTP("127.0.0.1", disabled_mta, local_hostname="mx.other.test", timeout=10)
    assert err.value.smtp_code == 554
    assert err.value.smtp_error.startswith(b"5.7.1 ") and b"not enabled" in err.value.smtp_error


def test_disabled_commands_get_503_and_quit_221(disabled_mta, deployment):
    paul = deployment.mailbox("PER", 1)["address"]
    with socket.create_connection(("127.0.0.1", disabled_mta), timeout=10) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"554 5.7.1 ")
        for cmd in (b"EHLO mx.other.test", b"MAIL FROM:<a@other.test>", f"RCPT TO:<{paul}>".encode(), b"DATA"):
            s.sendall(cmd + b"\r\n")
            assert f.readline().startswith(b"503 5.5.1 ")
        s.sendall(b"QUIT\r\n")
        assert f.readline().startswith(b"221 2.0.0")
        assert f.readline() == b""  # closed
