"""Submission on the `submission` port: STARTTLS first (RFC 3207), then a health-PKI client
certificate, then mail. Real sockets, real TLS, smtplib as the client."""

from __future__ import annotations

import smtplib
import socket
import ssl

import pytest
from smtp_support import (
    ENHANCED,
    MAX_MESSAGE_SIZE,
    client_context,
    entry_context,
    handshake_fails,
    message,
    raw_command,
    starttls_client,
)


def test_ehlo_in_clear_offers_starttls_and_no_auth(smtp_server):
    with smtplib.SMTP(smtp_server.host, smtp_server.port("submission"), local_hostname="client.test") as c:
        code, _ = c.ehlo()
        assert code == 250
        assert c.has_extn("starttls")
        assert not c.has_extn("auth")
        assert c.esmtp_features["size"] == str(MAX_MESSAGE_SIZE)


@pytest.mark.parametrize(
    "command",
    [
        b"MAIL FROM:<claire.martin@hopital-demo.mssante.test>",
        b"RCPT TO:<paul.durand@hopital-demo.mssante.test>",
        b"DATA",
        b"AUTH EXTERNAL =",
        b"HELO client.test",
        b"RSET",
        b"VRFY paul",
        b"HELP",
    ],
)
def test_commands_before_starttls_get_530(smtp_server, command):
    with smtplib.SMTP(smtp_server.host, smtp_server.port("submission"), local_hostname="client.test") as c:
        c.ehlo()
        code, text = raw_command(c, command + b"\r\n")
        assert code == 530
        assert text.startswith(b"5.7.0 Must issue a STARTTLS command first")


def test_send_with_certificate_is_stored(smtp_server, deployment):
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    before = smtp_server.stored(paul["address"])
    with starttls_client(smtp_server, entry_context(deployment, claire)) as c:
        assert c.has_extn("auth") and "EXTERNAL" in c.esmtp_features["auth"].split()
        assert not c.has_extn("starttls")
        assert c.mail(claire["address"]) == (250, b"2.1.0 Sender ok")
        assert c.rcpt(paul["address"]) == (250, b"2.1.5 Recipient ok")
        assert c.data(message(claire["address"], paul["address"])) == (250, b"2.0.0 Ok: stored")
    assert smtp_server.stored(paul["address"]) == before + 1


def test_no_client_certificate_is_refused_at_mail_and_auth(smtp_server, deployment):
    claire = deployment.mailbox("PER", 0)
    total = smtp_server.total_stored()
    mark = smtp_server.log_mark()
    with starttls_client(smtp_server, client_context(deployment)) as c:
        code, text = c.mail(claire["address"])
        assert (code, text) == (530, b"5.7.0 a health-PKI client certificate is required")
        assert c.docmd("AUTH", "EXTERNAL =") == (
            535,
            b"5.7.8 Authentication credentials invalid: a health-PKI client certificate is required",
        )
        # Nothing gets past MAIL: RCPT and DATA need a sender.
        assert c.rcpt(claire["address"])[0] == 503
        assert c.docmd("DATA")[0] == 503
    assert smtp_server.total_stored() == total
    log = smtp_server.log_since(mark)
    assert "certificate refused peer=127.0.0.1:" in log and "reason=no_certificate" in log


def test_certificate_from_another_ca_fails_the_handshake(smtp_server, deployment, bad_certs):
    claire = deployment.mailbox("PER", 0)
    ctx = client_context(deployment, bad_certs.foreign_ca.cert, bad_certs.foreign_ca.key)
    mark = smtp_server.log_mark()

    def attempt():
        with starttls_client(smtp_server, ctx) as c:
            c.mail(claire["address"])

    assert handshake_fails(attempt)
    assert "tls handshake failed peer=127.0.0.1:" in smtp_server.log_since(mark)


def test_expired_certificate_fails_the_handshake(smtp_server, deployment, bad_certs):
    claire = deployment.mailbox("PER", 0)
    ctx = client_context(deployment, bad_certs.expired.cert, bad_certs.expired.key)
    mark = smtp_server.log_mark()

    def attempt():
        with starttls_client(smtp_server, ctx) as c:
            c.mail(claire["address"])

    assert handshake_fails(attempt)
    log = smtp_server.log_since(mark)
    assert "tls handshake failed" in log and "expired" in log


def test_identity_not_in_directory_gets_530(smtp_server, deployment, bad_certs):
    claire = deployment.mailbox("PER", 0)
    ctx = client_context(deployment, bad_certs.unknown_id.cert, bad_certs.unknown_id.key)
    mark = smtp_server.log_mark()
    with starttls_client(smtp_server, ctx) as c:
        assert c.mail(claire["address"]) == (530, b"5.7.0 client certificate not accepted")
        assert c.docmd("AUTH", "EXTERNAL =")[0] == 535
    assert "reason=not_in_directory" in smtp_server.log_since(mark)


def test_second_starttls_is_refused(smtp_server, deployment):
    with starttls_client(smtp_server, entry_context(deployment, deployment.mailbox("PER", 0))) as c:
        assert c.docmd("STARTTLS") == (503, b"5.5.1 TLS is already active")
        assert c.noop()[0] == 250


def test_commands_pipelined_with_starttls_are_discarded(smtp_server, deployment):
    """RFC 3207 5 / CVE-2011-0411: bytes sent in clear after STARTTLS must not be executed
    inside the TLS session."""
    claire = deployment.mailbox("PER", 0)
    ctx = entry_context(deployment, claire)
    ctx.check_hostname = False
    with socket.create_connection((smtp_server.host, smtp_server.port("submission")), timeout=10) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"220 ")
        sock.sendall(b"EHLO client.test\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        sock.sendall(b"STARTTLS\r\nMAIL FROM:<" + claire["address"].encode() + b">\r\nNOOP\r\n")
        assert f.readline().startswith(b"220 2.0.0")
        tls = ctx.wrap_socket(sock, server_hostname=smtp_server.host)
        tls.sendall(b"NOOP tls\r\n")
        # The first reply inside TLS is the one to our NOOP, not to the injected MAIL.
        assert tls.recv(4096) == b"250 2.0.0 OK\r\n"
        tls.sendall(b"QUIT\r\n")
        assert tls.recv(4096).startswith(b"221")


def test_every_reply_carries_an_enhanced_status_code(smtp_server, deployment):
    """RFC 2034 3: once ENHANCEDSTATUSCODES is advertised, every reply but the greeting,
    EHLO/HELO, 334 and 354 starts with one."""
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    with starttls_client(smtp_server, entry_context(deployment, claire)) as c:
        assert c.has_extn("enhancedstatuscodes")
        replies = [
            c.noop(),
            c.rset(),
            c.docmd("VRFY", paul["address"]),
            c.docmd("HELP"),
            c.docmd("EXPN", "x"),
            c.docmd("BOGUS"),
            c.docmd("RCPT TO:<x@y.test>"),
            c.docmd("DATA"),
            c.docmd("MAIL FROM:<nope>"),
            c.docmd("MAIL FROM:<a@b.test> SIZE=" + str(MAX_MESSAGE_SIZE + 1)),
            c.docmd("MAIL FROM:<a@b.test> FOO=1"),
            c.docmd("MAIL", "FROM:<" + claire["address"] + ">"),
            c.docmd("MAIL", "FROM:<" + claire["address"] + ">"),
            c.docmd("AUTH", "EXTERNAL ="),
            c.rcpt("nobody@hopital-demo.mssante.test"),
            c.rcpt(paul["address"]),
            raw_command(c, b"X" * 600 + b"\r\n"),
        ]
        for code, text in replies:
            assert ENHANCED.match(text), (code, text)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_is_1_2_or_later(smtp_server, deployment):
    ctx = entry_context(deployment, deployment.mailbox("PER", 0))
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    assert handshake_fails(lambda: starttls_client(smtp_server, ctx).quit())
