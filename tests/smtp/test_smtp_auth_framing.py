"""AUTH (RFC 4954) as the SMTP front end frames the core's exchange: `334` challenges, the reply
of each outcome, the close after too many refusals, and what reaches the log."""

from __future__ import annotations

import base64
import smtplib

import pytest
from smtp_support import entry_context, smtps_client


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


@pytest.fixture
def claire_client(smtp_server, deployment):
    with smtps_client(smtp_server, entry_context(deployment, deployment.mailbox("PER", 0))) as c:
        yield c


def test_login_challenges_and_cancel(claire_client):
    c = claire_client
    address = "nobody@x.test"
    assert c.docmd("AUTH", "LOGIN") == (334, b64("Username:").encode())
    assert c.docmd(b64(address)) == (334, b64("Password:").encode())
    assert c.docmd("*") == (501, b"5.7.0 Authentication aborted")  # RFC 4954 4
    assert c.docmd("AUTH", f"LOGIN {b64(address)}") == (334, b64("Password:").encode())
    assert c.docmd("=") == (501, b"5.5.2 Empty password")
    assert c.docmd("AUTH", "PLAIN") == (334, b"")
    assert c.docmd("*") == (501, b"5.7.0 Authentication aborted")
    # none of these counted: EXTERNAL still works afterwards
    assert c.docmd("AUTH", "EXTERNAL =") == (235, b"2.7.0 Authentication successful")


def test_malformed_and_cancelled_exchanges_are_not_counted(claire_client):
    c = claire_client
    for _ in range(2):  # aiosmtpd allows 5 AUTH commands per connection (command_call_limit)
        assert c.docmd("AUTH", "PLAIN " + b64("no-separators"))[0] == 501
        assert c.docmd("AUTH", "OAUTHBEARER " + b64("n,,auth=Bearer x"))[0] == 501
    assert c.docmd("AUTH", "EXTERNAL =")[0] == 235


def test_temporary_failures_are_454_and_not_counted(smtp_server, deployment):
    claire = deployment.mailbox("PER", 0)

    async def down(*args, **kwargs):
        raise ConnectionError("database is unreachable")

    with smtp_server.patched(smtp_server.core.auth, "from_app_password", down):
        with smtps_client(smtp_server, entry_context(deployment, claire)) as c:
            for _ in range(4):  # more than the 3 refusals that close a connection
                code, text = c.docmd("AUTH", "PLAIN " + b64(f"\0{claire['address']}\0whatever"))
                assert (code, text) == (454, b"4.7.0 Temporary authentication failure, try again later")
            assert c.noop()[0] == 250


def test_crlf_in_an_authzid_forges_no_reply_and_no_log_line(smtp_server, deployment):
    claire = deployment.mailbox("PER", 0)
    forged = "paul@x.test\r\n250 2.0.0 forged\r\n2026-11-02 10:00:00 INFO mss.auth auth ok peer=10.0.0.1:1"
    mark = smtp_server.log_mark()
    with smtps_client(smtp_server, entry_context(deployment, claire)) as c:
        code, text = c.docmd("AUTH", "EXTERNAL " + b64(forged))
        assert code == 535 and b"forged" not in text
        code, text = c.docmd("AUTH", "EXTERNAL " + b64(forged + "\0"))
        assert code == 501 and b"forged" not in text
        code, text = c.docmd("AUTH", "PLAIN " + b64(f"{forged}\0{claire['address']}\0whatever"))
        assert code == 535 and b"forged" not in text
        assert c.noop()[0] == 250  # no stray reply was queued: the next one is NOOP's
    records = smtp_server.records.lines[mark:]
    auth_lines = [r for r in records if r.startswith("mss.auth ") and " auth " in r]
    assert len(auth_lines) == 3, auth_lines
    for line in records:
        assert "\r" not in line and "\n" not in line and "\x00" not in line, line
    assert sum("forged" in line and "\\r\\n" in line for line in auth_lines) == 2  # EXTERNAL and PLAIN


def test_refusal_limit_closes_after_the_535(claire_client):
    c = claire_client
    for _ in range(2):
        assert c.docmd("AUTH", "EXTERNAL " + b64("nobody@x.test"))[0] == 535  # unauthorized counts
    assert c.docmd("AUTH", "LOGIN " + b64("nobody@x.test")) == (334, b64("Password:").encode())
    assert c.docmd(b64("wrong"))[0] == 535
    code, text = c.getreply()
    assert (code, text) == (421, b"4.7.0 Too many failed authentication attempts, closing connection")
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
        c.noop()
