"""The `mta` listener (port 25 role): inbound mail from other operators is a later issue, so
it says so at once (RFC 5321 3.1: 554 greeting, 503 to anything but QUIT)."""

from __future__ import annotations

import smtplib
import socket

import pytest


def test_smtplib_sees_a_554_greeting(smtp_server):
    with pytest.raises(smtplib.SMTPConnectError) as err:
        smtplib.SMTP(smtp_server.host, smtp_server.port("mta"), local_hostname="mx.other.test", timeout=10)
    assert err.value.smtp_code == 554
    assert b"5.3.2" in err.value.smtp_error and b"not enabled" in err.value.smtp_error


def test_commands_get_503_and_quit_221_and_nothing_is_stored(smtp_server, deployment):
    total = smtp_server.total_stored()
    paul = deployment.mailbox("PER", 1)["address"]
    with socket.create_connection((smtp_server.host, smtp_server.port("mta")), timeout=10) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"554 5.3.2 ")
        for cmd in (b"EHLO mx.other.test", b"MAIL FROM:<a@other.test>", f"RCPT TO:<{paul}>".encode(), b"DATA"):
            s.sendall(cmd + b"\r\n")
            assert f.readline().startswith(b"503 5.5.1 ")
        s.sendall(b"QUIT\r\n")
        assert f.readline().startswith(b"221 2.0.0")
        assert f.readline() == b""  # closed
    assert smtp_server.total_stored() == total
