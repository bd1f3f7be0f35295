"""Who may send what: MAIL FROM, RCPT TO, recipients and size limits, storage failures.
Each refusal is checked for its exact reply and for leaving the store untouched."""

from __future__ import annotations

import pytest
from smtp_support import MAX_MESSAGE_SIZE, MAX_RECIPIENTS, connect, entry_context, message, raw_command

DOMAIN = "hopital-demo.mssante.test"


@pytest.fixture(params=[False, True], ids=["starttls", "smtps"])
def claire_session(request, smtp_server, deployment):
    with connect(smtp_server, entry_context(deployment, deployment.mailbox("PER", 0)), request.param) as c:
        yield c


def test_spoofed_mail_from_is_550_5_7_1(claire_session, deployment, smtp_server):
    paul = deployment.mailbox("PER", 1)
    total = smtp_server.total_stored()
    code, text = claire_session.mail(paul["address"])
    assert code == 550
    assert text == f"5.7.1 Sender <{paul['address']}> is not a mailbox of the authenticated user".encode()
    assert claire_session.rcpt(paul["address"])[0] == 503  # no transaction was opened
    assert smtp_server.total_stored() == total


def test_member_may_send_as_the_org_mailbox(claire_session, deployment):
    assert claire_session.mail(deployment.mailbox("ORG")["address"]) == (250, b"2.1.0 Sender ok")


def test_unknown_recipient_is_550_5_1_1(claire_session, deployment):
    claire = deployment.mailbox("PER", 0)
    claire_session.mail(claire["address"])
    assert claire_session.rcpt(f"nobody@{DOMAIN}") == (550, f"5.1.1 Mailbox <nobody@{DOMAIN}> does not exist".encode())


@pytest.mark.parametrize("rcpt", ["someone@gmail.com", "dr.who@autre-hopital.mssante.fr", f"x@sub.{DOMAIN}"])
def test_relay_attempt_is_550_5_7_1(claire_session, deployment, smtp_server, rcpt):
    claire = deployment.mailbox("PER", 0)
    total = smtp_server.total_stored()
    claire_session.mail(claire["address"])
    code, text = claire_session.rcpt(rcpt)
    assert (code, text[:6]) == (550, b"5.7.1 ")
    assert b"outside the health trust space" in text
    assert claire_session.docmd("DATA")[0] == 503  # no accepted recipient
    assert smtp_server.total_stored() == total


def test_mixed_recipients_only_the_accepted_ones_get_the_message(claire_session, deployment, smtp_server):
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    before = smtp_server.stored(paul["address"])
    refused = claire_session.sendmail(
        claire["address"], [paul["address"], "x@gmail.com"], message(claire["address"], paul["address"])
    )
    assert refused == {"x@gmail.com": (550, b"5.7.1 Domain gmail.com is outside the health trust space")}
    assert smtp_server.stored(paul["address"]) == before + 1


def test_too_many_recipients_is_452_4_5_3(claire_session, deployment):
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    claire_session.mail(claire["address"])
    for _ in range(MAX_RECIPIENTS):
        assert claire_session.rcpt(paul["address"])[0] == 250
    code, text = claire_session.rcpt(paul["address"])
    assert code == 452 and text.startswith(b"4.5.3 Too many recipients")


def test_size_is_advertised(claire_session):
    assert claire_session.esmtp_features["size"] == str(MAX_MESSAGE_SIZE)


def test_declared_size_over_the_limit_is_552_at_mail(claire_session, deployment):
    claire = deployment.mailbox("PER", 0)
    code, text = claire_session.mail(claire["address"], [f"SIZE={MAX_MESSAGE_SIZE + 1}"])
    assert code == 552
    assert text == f"5.3.4 Message size exceeds the fixed maximum of {MAX_MESSAGE_SIZE} bytes".encode()
    assert claire_session.mail(claire["address"], [f"SIZE={MAX_MESSAGE_SIZE // 2}"])[0] == 250


def test_oversize_data_is_552_and_not_stored(claire_session, deployment, smtp_server):
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    total = smtp_server.total_stored()
    body = ("x" * 76 + "\r\n") * (MAX_MESSAGE_SIZE // 78 + 10)
    claire_session.mail(claire["address"])
    claire_session.rcpt(paul["address"])
    code, text = claire_session.data(message(claire["address"], paul["address"], body))
    assert code == 552 and text.startswith(b"5.3.4 ")
    assert claire_session.noop()[0] == 250  # the session goes on
    assert smtp_server.total_stored() == total


def test_message_just_under_the_limit_is_accepted(claire_session, deployment):
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    body = ("y" * 76 + "\r\n") * (MAX_MESSAGE_SIZE // 78 - 20)
    raw = message(claire["address"], paul["address"], body)
    assert len(raw) < MAX_MESSAGE_SIZE
    assert claire_session.sendmail(claire["address"], [paul["address"]], raw) == {}


def test_message_without_from_header_is_refused_by_the_core(claire_session, deployment, smtp_server):
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    total = smtp_server.total_stored()
    claire_session.mail(claire["address"])
    claire_session.rcpt(paul["address"])
    code, text = claire_session.data(b"Subject: no from\r\n\r\nbody\r\n")
    assert code == 550 and text.startswith(b"5.6.0 ")
    assert smtp_server.total_stored() == total


def test_storage_failure_is_451_never_250(claire_session, deployment, smtp_server):
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    total = smtp_server.total_stored()
    mark = smtp_server.log_mark()

    async def broken_deliver(principal, envelope, raw, **kw):
        raise OSError("disk on fire")

    with smtp_server.patched(smtp_server.core.submission, "deliver", broken_deliver):
        claire_session.mail(claire["address"])
        claire_session.rcpt(paul["address"])
        code, text = claire_session.data(message(claire["address"], paul["address"]))
    assert code == 451 and text.startswith(b"4.3.0 ")
    assert b"disk on fire" not in text  # the reason goes to the log only
    assert "disk on fire" in smtp_server.log_since(mark)
    assert smtp_server.total_stored() == total


def test_directory_failure_on_rcpt_is_451(claire_session, deployment, smtp_server):
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)

    async def broken(address, **kw):
        raise RuntimeError("database unreachable")

    claire_session.mail(claire["address"])
    with smtp_server.patched(smtp_server.core.submission, "resolve", broken):
        code, text = claire_session.rcpt(paul["address"])
    assert code == 451 and text.startswith(b"4.3.0 ") and b"database" not in text


def test_rset_keeps_the_authentication_and_clears_the_transaction(claire_session, deployment):
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    claire_session.mail(claire["address"])
    claire_session.rcpt(paul["address"])
    assert claire_session.rset()[0] == 250
    assert claire_session.docmd("DATA")[0] == 503
    assert claire_session.mail(claire["address"])[0] == 250


def test_auth_during_a_transaction_is_503(claire_session, deployment):
    claire_session.mail(deployment.mailbox("PER", 0)["address"])
    code, text = claire_session.docmd("AUTH", "EXTERNAL =")
    assert code == 503 and text.startswith(b"5.5.1 ")


def test_several_messages_on_one_connection(claire_session, deployment, smtp_server):
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    before = smtp_server.stored(paul["address"])
    for i in range(3):
        assert (
            claire_session.sendmail(
                claire["address"], [paul["address"]], message(claire["address"], paul["address"], subject=f"n{i}")
            )
            == {}
        )
    assert smtp_server.stored(paul["address"]) == before + 3


def test_pipelined_transaction_gets_replies_in_order(claire_session, deployment, smtp_server):
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    before = smtp_server.stored(paul["address"])
    batch = (
        f"MAIL FROM:<{claire['address']}>\r\nRCPT TO:<nobody@{DOMAIN}>\r\nRCPT TO:<{paul['address']}>\r\nDATA\r\n"
    ).encode()
    claire_session.send(batch)
    assert claire_session.getreply()[0] == 250
    assert claire_session.getreply()[0] == 550
    assert claire_session.getreply()[0] == 250
    assert claire_session.getreply()[0] == 354
    code, _ = raw_command(claire_session, message(claire["address"], paul["address"]) + b".\r\n")
    assert code == 250
    assert smtp_server.stored(paul["address"]) == before + 1
