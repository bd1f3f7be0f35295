"""The RFC 3464 report builder (mss.dsn): what a sender's mail client and a peer's parser
read back from it, parsed with the standard library."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta

import pytest

from mss.dsn import RecipientOutcome, build_report

NOW = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)
ARRIVAL = NOW - timedelta(minutes=30)
ORIGINAL = (
    b"Received: from a.test by mx.a.test; Wed, 2 Dec 2026 10:00:00 +0000\r\n"
    b"From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject: Compte rendu\r\n"
    b"Message-ID: <m1@a.test>\r\nX-MSS-Trace: kept\r\n\r\n"
    b"BODY-CANARY the clinical text\r\n"
)


def failed(addr="bob@b.test", **kw) -> RecipientOutcome:
    return RecipientOutcome(
        final_recipient=addr,
        original_recipient=kw.pop("orcpt", None),
        action=kw.pop("action", "failed"),
        status=kw.pop("status", "5.1.1"),
        remote_mta=kw.pop("remote_mta", "mx.b.test"),
        diagnostic=kw.pop("diagnostic", "550 5.1.1 <bob@b.test>: no such user"),
        last_attempt=kw.pop("last_attempt", NOW),
        **kw,
    )


def build(outcomes, **kw) -> bytes:
    args = {
        "reporting_mta": "mx.a.test",
        "domain": "a.test",
        "to": "alice@a.test",
        "original": ORIGINAL,
        "outcomes": outcomes,
        "arrival": ARRIVAL,
        "now": NOW,
    }
    args.update(kw)
    return build_report(**args)


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def parts(raw: bytes):
    msg = parse(raw)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    return msg, list(msg.iter_parts())


def status_blocks(raw: bytes):
    _, ps = parts(raw)
    ds = ps[1]
    assert ds.get_content_type() == "message/delivery-status"
    blocks = ds.get_payload()
    return blocks[0], blocks[1:]


def assert_wire_clean(raw: bytes) -> None:
    """CRLF everywhere, no bare CR or LF, no line over 998 octets (RFC 5322 2.1.1, 2.3)."""
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_failure_report_fields():
    raw = build([failed(orcpt="rfc822;Bob@B.test")], envid="QQ314159", ret="HDRS")
    assert_wire_clean(raw)
    msg, ps = parts(raw)
    assert msg["From"] == "Mail Delivery System <MAILER-DAEMON@a.test>"
    assert msg["To"] == "alice@a.test"
    assert msg["Subject"] == "Delivery Status Notification (Failure)"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["MIME-Version"] == "1.0"
    assert msg["Message-ID"].endswith("@a.test>")
    assert email.utils.parsedate_to_datetime(msg["Date"]) == NOW
    assert [p.get_content_type() for p in ps] == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    human = " ".join(ps[0].get_content().split())  # wrapped at 78
    assert "bob@b.test" in human and "5.1.1" in human and "no such user" in human

    per_message, (rcpt,) = status_blocks(raw)
    assert per_message["Reporting-MTA"] == "dns; mx.a.test"
    assert per_message["Original-Envelope-Id"] == "QQ314159"
    assert email.utils.parsedate_to_datetime(per_message["Arrival-Date"]) == ARRIVAL
    assert rcpt["Original-Recipient"] == "rfc822;Bob@B.test"
    assert rcpt["Final-Recipient"] == "rfc822;bob@b.test"
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "5.1.1"
    assert rcpt["Remote-MTA"] == "dns; mx.b.test"
    assert rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@b.test>: no such user"
    assert email.utils.parsedate_to_datetime(rcpt["Last-Attempt-Date"]) == NOW
    assert rcpt["Will-Retry-Until"] is None

    # HDRS: the header section only, never the body.
    returned = ps[2].get_payload()
    assert "Subject: Compte rendu" in returned and "X-MSS-Trace: kept" in returned
    assert b"BODY-CANARY" not in raw


def test_no_orcpt_means_no_original_recipient_and_a_bare_orcpt_gets_its_type():
    _, (rcpt,) = status_blocks(build([failed()]))
    assert rcpt["Original-Recipient"] is None
    _, (rcpt,) = status_blocks(build([failed(orcpt="Bob@B.test")]))
    assert rcpt["Original-Recipient"] == "rfc822;Bob@B.test"


def test_ret_full_returns_the_whole_message_on_failure():
    raw = build([failed()], ret="FULL")
    assert_wire_clean(raw)
    _, ps = parts(raw)
    assert ps[2].get_content_type() == "message/rfc822"
    (inner,) = ps[2].get_payload()
    assert inner["Subject"] == "Compte rendu" and inner["Message-ID"] == "<m1@a.test>"
    assert "BODY-CANARY" in inner.get_content()


def test_ret_full_success_and_delay_reports_carry_headers_only():
    # RFC 3461 4.3: a report of no failure returns the headers only.
    delivered = RecipientOutcome("bob@b.test", None, "delivered", "2.0.0", last_attempt=NOW)
    raw = build([delivered], ret="FULL")
    msg, ps = parts(raw)
    assert msg["Subject"] == "Delivery Status Notification (Success)"
    assert ps[2].get_content_type() == "text/rfc822-headers" and b"BODY-CANARY" not in raw
    _, (rcpt,) = status_blocks(raw)
    assert rcpt["Action"] == "delivered" and rcpt["Status"] == "2.0.0" and rcpt["Diagnostic-Code"] is None

    until = NOW + timedelta(days=5)
    delayed = failed(action="delayed", status="4.4.1", diagnostic="421 4.4.1 try later", will_retry_until=until)
    raw = build([delayed], ret="FULL")
    msg, ps = parts(raw)
    assert msg["Subject"] == "Delivery Status Notification (Delay)"
    assert ps[2].get_content_type() == "text/rfc822-headers"
    _, (rcpt,) = status_blocks(raw)
    assert rcpt["Action"] == "delayed" and rcpt["Status"] == "4.4.1"
    assert email.utils.parsedate_to_datetime(rcpt["Will-Retry-Until"]) == until


def test_several_recipients_each_get_a_block_and_a_failure_wins_the_subject():
    outcomes = [
        failed("bob@b.test"),
        RecipientOutcome("carol@b.test", "rfc822;carol@b.test", "relayed", "2.0.0", remote_mta="mx.b.test"),
        failed("dan@b.test", status="5.2.2", diagnostic="552 5.2.2 mailbox full"),
    ]
    raw = build(outcomes)
    assert parse(raw)["Subject"] == "Delivery Status Notification (Failure)"
    _, blocks = status_blocks(raw)
    assert [(b["Final-Recipient"], b["Action"], b["Status"]) for b in blocks] == [
        ("rfc822;bob@b.test", "failed", "5.1.1"),
        ("rfc822;carol@b.test", "relayed", "2.0.0"),
        ("rfc822;dan@b.test", "failed", "5.2.2"),
    ]


def test_header_injection_in_the_diagnostic_and_addresses_is_neutralised():
    evil = "550 5.1.1 no such user\r\nBcc: victim@evil.test\r\n\r\n--fake\r\nContent-Type: text/html\n\rX-Injected: 1"
    raw = build(
        [failed(diagnostic=evil, remote_mta="mx.b.test\r\nX-Injected: 2")],
        to="alice@a.test\r\nBcc: victim@evil.test",
        envid="id\r\nX-Injected: 3",
    )
    assert_wire_clean(raw)
    msg, ps = parts(raw)
    assert msg["Bcc"] is None and msg["X-Injected"] is None
    assert len(ps) == 3
    per_message, (rcpt,) = status_blocks(raw)
    assert set(rcpt.keys()) == {
        "Final-Recipient",
        "Action",
        "Status",
        "Remote-MTA",
        "Diagnostic-Code",
        "Last-Attempt-Date",
    }
    assert rcpt["Bcc"] is None and rcpt["X-Injected"] is None and per_message["X-Injected"] is None
    assert rcpt["Diagnostic-Code"].startswith("smtp; 550 5.1.1 no such user Bcc: victim@evil.test")
    # No line of the message's header section or of the report part starts a field of its
    # own (the human part is text: a wrapped line there is inert, and still no boundary).
    boundary = msg.get_boundary().encode()
    head, _, rest = raw.partition(b"\r\n\r\n")
    report = rest.split(b"--" + boundary)[2]
    for line in head.split(b"\r\n") + report.split(b"\r\n"):
        assert not line.startswith((b"Bcc:", b"X-Injected:", b"--fake"))
    assert raw.count(b"--" + boundary) == 4
    assert rcpt["Remote-MTA"] == "dns; mx.b.test"


def test_long_values_are_folded_under_998_octets():
    long_reply = "550 5.1.1 " + " ".join(["word"] * 400) + " " + "x" * 3000
    raw = build([failed(diagnostic=long_reply, orcpt="rfc822;" + "l" * 1200 + "@b.test")])
    assert_wire_clean(raw)
    _, (rcpt,) = status_blocks(raw)
    # Unfolded, the value is the reply (a word cut at 900 octets gains a space, nothing else).
    assert rcpt["Diagnostic-Code"].replace(" ", "") == ("smtp; " + long_reply).replace(" ", "")


def test_an_original_with_long_lines_or_bare_lf_is_returned_safely():
    original = b"From: a@a.test\nSubject: s\n\n" + b"y" * 2000 + b"\nend\n"
    raw = build([failed()], original=original, ret="FULL")
    assert_wire_clean(raw)
    _, ps = parts(raw)
    # A message/rfc822 part may not be re-encoded: headers only, rather than a broken part.
    assert ps[2].get_content_type() == "text/rfc822-headers"
    assert "Subject: s" in ps[2].get_payload()

    raw = build([failed()], original=b"From: a@a.test\nSubject: s\n\nshort body\n", ret="FULL")
    assert_wire_clean(raw)
    (inner,) = parts(raw)[1][2].get_payload()
    assert inner["Subject"] == "s" and "short body" in inner.get_content()


def test_utf8_addresses_and_text_are_8bit():
    raw = build([failed("médecin@b.test", diagnostic="550 5.1.1 adresse inconnue: médecin")], to="élise@a.test")
    assert_wire_clean(raw)
    _, ps = parts(raw)
    assert ps[0]["Content-Transfer-Encoding"] == "8bit"
    assert "médecin@b.test" in ps[0].get_content()
    _, (rcpt,) = status_blocks(raw)
    assert rcpt["Final-Recipient"] == "rfc822;médecin@b.test"


@pytest.mark.parametrize(
    "outcomes",
    [
        [],
        [RecipientOutcome("b@b.test", None, "failed", "5.1")],
        [RecipientOutcome("b@b.test", None, "failed", "6.0.0")],
        [RecipientOutcome("b@b.test", None, "bounced", "5.0.0")],  # type: ignore[arg-type]
    ],
)
def test_refuses_what_is_not_a_report(outcomes):
    with pytest.raises(ValueError):
        build(outcomes)
