"""Submission on the `submissions` port: implicit TLS (RFC 8314), the same certificate rules
as STARTTLS, and AUTH EXTERNAL although aiosmtpd only counts STARTTLS as TLS."""

from __future__ import annotations

import base64
import shutil
import subprocess

import pytest
from smtp_support import client_context, entry_context, handshake_fails, message, smtps_client


def test_send_over_implicit_tls_is_stored(smtp_server, deployment):
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    before = smtp_server.stored(claire["address"])
    with smtps_client(smtp_server, entry_context(deployment, paul)) as c:
        assert not c.has_extn("starttls")
        assert "EXTERNAL" in c.esmtp_features["auth"].split()
        assert c.sendmail(paul["address"], [claire["address"]], message(paul["address"], claire["address"])) == {}
    assert smtp_server.stored(claire["address"]) == before + 1


def test_auth_external_is_offered_and_accepted(smtp_server, deployment):
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    with smtps_client(smtp_server, entry_context(deployment, claire)) as c:
        assert c.docmd("AUTH", "EXTERNAL =") == (235, b"2.7.0 Authentication successful")
        assert c.docmd("AUTH", "EXTERNAL =") == (503, b"5.5.1 Already authenticated")
        assert c.sendmail(claire["address"], [paul["address"]], message(claire["address"], paul["address"])) == {}


def test_auth_external_with_a_challenge_and_an_empty_response(smtp_server, deployment):
    with smtps_client(smtp_server, entry_context(deployment, deployment.mailbox("PER", 0))) as c:
        assert c.docmd("AUTH", "EXTERNAL") == (334, b"")
        assert c.docmd("") == (235, b"2.7.0 Authentication successful")


def test_auth_external_authzid_narrows_to_one_mailbox(smtp_server, deployment):
    """Claire is a member of the ORG mailbox; with authzid=her own address she may no
    longer send as the ORG mailbox."""
    claire, org = deployment.mailbox("PER", 0), deployment.mailbox("ORG")
    authzid = base64.b64encode(claire["address"].encode()).decode()
    with smtps_client(smtp_server, entry_context(deployment, claire)) as c:
        assert c.docmd("AUTH", f"EXTERNAL {authzid}")[0] == 235
        code, text = c.mail(org["address"])
        assert (code, text[:6]) == (550, b"5.7.1 ")
        assert c.mail(claire["address"])[0] == 250


def test_auth_external_authzid_not_entitled_is_535(smtp_server, deployment):
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    authzid = base64.b64encode(paul["address"].encode()).decode()
    with smtps_client(smtp_server, entry_context(deployment, claire)) as c:
        code, text = c.docmd("AUTH", f"EXTERNAL {authzid}")
        assert code == 535 and text.startswith(b"5.7.8 ")
        assert c.docmd("AUTH", "EXTERNAL !!notbase64")[:1] == (501,)
        assert c.docmd("AUTH", "CRAM-MD5")[0] == 504


def test_no_client_certificate_gets_530_at_mail(smtp_server, deployment):
    claire = deployment.mailbox("PER", 0)
    total = smtp_server.total_stored()
    with smtps_client(smtp_server, client_context(deployment)) as c:
        assert c.mail(claire["address"]) == (530, b"5.7.0 a health-PKI client certificate is required")
        assert c.docmd("AUTH", "EXTERNAL =")[0] == 535
    assert smtp_server.total_stored() == total


@pytest.mark.parametrize("which", ["foreign_ca", "expired"])
def test_untrusted_or_expired_certificate_fails_the_handshake(smtp_server, deployment, bad_certs, which):
    pair = getattr(bad_certs, which)
    ctx = client_context(deployment, pair.cert, pair.key)
    mark = smtp_server.log_mark()

    def attempt():
        with smtps_client(smtp_server, ctx) as c:
            c.mail(deployment.mailbox("PER", 0)["address"])

    assert handshake_fails(attempt)
    log = smtp_server.log_since(mark)
    assert "tls handshake failed peer=127.0.0.1:" in log and "via=implicit" in log
    if which == "expired":
        assert "expired" in log


def test_identity_not_in_directory_gets_530(smtp_server, deployment, bad_certs):
    ctx = client_context(deployment, bad_certs.unknown_id.cert, bad_certs.unknown_id.key)
    with smtps_client(smtp_server, ctx) as c:
        assert c.mail(deployment.mailbox("PER", 0)["address"]) == (530, b"5.7.0 client certificate not accepted")


def test_starttls_inside_implicit_tls_is_refused(smtp_server, deployment):
    with smtps_client(smtp_server, entry_context(deployment, deployment.mailbox("PER", 0))) as c:
        assert c.docmd("STARTTLS") == (503, b"5.5.1 TLS is already active")


def test_plain_text_on_the_implicit_tls_port_gets_nothing(smtp_server):
    import socket

    with socket.create_connection((smtp_server.host, smtp_server.port("submissions")), timeout=10) as s:
        s.sendall(b"EHLO client.test\r\n")
        s.settimeout(10)
        try:
            data = s.recv(4096)
        except ConnectionError:
            data = b""
        assert b"250" not in data


SWAKS = shutil.which("swaks")


@pytest.mark.skipif(SWAKS is None, reason="swaks is not installed (make test installs it)")
@pytest.mark.parametrize("mode", ["--tls", "--tls-on-connect"])
def test_swaks_sends_with_a_client_certificate(smtp_server, deployment, mode):
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    port = smtp_server.port("submissions" if mode == "--tls-on-connect" else "submission")
    before = smtp_server.stored(paul["address"])
    out = subprocess.run(
        [
            SWAKS,
            "--server",
            smtp_server.host,
            "--port",
            str(port),
            mode,
            "--tls-cert",
            str(deployment.path(claire, "tls_cert")),
            "--tls-key",
            str(deployment.path(claire, "tls_key")),
            "--from",
            claire["address"],
            "--to",
            paul["address"],
            "--helo",
            "client.test",
            "--header",
            "Subject: swaks",
            "--body",
            "Bonjour depuis swaks",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "250 2.0.0 Ok: stored" in out.stdout
    assert smtp_server.stored(paul["address"]) == before + 1


@pytest.mark.skipif(SWAKS is None, reason="swaks is not installed (make test installs it)")
def test_swaks_without_certificate_is_refused_at_mail(smtp_server, deployment):
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    out = subprocess.run(
        [
            SWAKS,
            "--server",
            smtp_server.host,
            "--port",
            str(smtp_server.port("submissions")),
            "--tls-on-connect",
            "--from",
            claire["address"],
            "--to",
            paul["address"],
            "--helo",
            "client.test",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "530 5.7.0 a health-PKI client certificate is required" in out.stdout
