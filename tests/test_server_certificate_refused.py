"""A SERV (server) certificate identifies another operator's MTA: it must never log in to
submission or IMAP as a mailbox of its structure, even though it chains and carries the
structure id those mailboxes belong to."""

from __future__ import annotations

import imaplib
import smtplib

import pytest


@pytest.fixture
def serv_context(deployment):
    # The demo's own server certificate: SERV, same structure id as the ORG and APP mailboxes.
    return deployment.client_context(
        cert=deployment.directory / "pki/server.crt", key=deployment.directory / "pki/server.key"
    )


def test_serv_certificate_gets_no_smtp_submission(server, deployment, serv_context):
    app = deployment.mailbox("APP")
    with smtplib.SMTP_SSL(server.host, server.port("submissions"), context=serv_context, timeout=20) as c:
        c.ehlo("mta.test")
        assert c.mail(app["address"]) == (530, b"5.7.0 client certificate not accepted")
    assert "reason=serv_certificate" in server.log_text()


def test_serv_certificate_gets_no_imap_login(server, deployment, serv_context):
    m = imaplib.IMAP4_SSL(server.host, server.port("imaps"), ssl_context=serv_context, timeout=20)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            m.authenticate("EXTERNAL", lambda _: b"")
    finally:
        m.shutdown()


def test_structure_certificate_reaches_only_its_org_and_app_mailboxes(server, deployment):
    app = deployment.mailbox("APP")
    claire = deployment.mailbox("PER", 0)
    with smtplib.SMTP_SSL(
        server.host, server.port("submissions"), context=deployment.client_context(app), timeout=20
    ) as c:
        c.ehlo("lps.test")
        assert c.mail(app["address"])[0] == 250
        c.rset()
        assert c.mail(claire["address"])[0] == 550
