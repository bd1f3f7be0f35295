"""Mailbox quotas end to end, on a real `mss serve` with smtplib and imaplib and the demo's
certificates, the limits set with `mss mailbox quota` as an operator does: SMTP refuses a
full mailbox at RCPT (552 5.2.2) and, at DATA, a message that does not fit, while the other
recipients of the same transaction get it and the sender gets a failure DSN; IMAP shows
the quota (RFC 9208)."""

from __future__ import annotations

import asyncio
import imaplib
import json
import os
import subprocess
import sys
import uuid

import pytest
from mail import build_message, openssl_decrypt, smtp_submission
from support import ROOT, start_server, stored_messages

pytestmark = pytest.mark.timeout(300)


def mss(dep, *args: str) -> dict:
    """`python -m mss ARGS --json -c CONFIG`, as an operator runs it."""
    res = subprocess.run(
        [sys.executable, "-m", "mss", *args, "--json", "-c", str(dep.config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert res.returncode == 0, f"mss {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return json.loads(res.stdout)


def count(dep, address: str, folder: str = "INBOX") -> int:
    return len(asyncio.run(stored_messages(dep, address, folder)))


def test_smtp_refuses_full_mailboxes_at_rcpt_and_at_data_and_delivers_to_the_others(fresh_deployment, tmp_path):
    dep = fresh_deployment
    claire, paul, org, app = dep.mailbox("PER", 0), dep.mailbox("PER", 1), dep.mailbox("ORG"), dep.mailbox("APP")
    srv = start_server(dep)
    try:
        # Paul gets one message, then his mailbox is made exactly full.
        first, _ = build_message(claire["address"], [paul["address"]], "first", "hello\n")
        with smtp_submission(srv, claire) as smtp:
            assert smtp.sendmail(claire["address"], [paul["address"]], first) == {}
        used = mss(dep, "mailbox", "quota", paul["address"])["storage"]["used"]
        assert used > 0
        doc = mss(dep, "mailbox", "quota", paul["address"], "--storage", str(used))
        assert doc["storage"] == {"used": used, "limit": used, "default": False}
        # The APP mailbox has room for a short message, not for a long one.
        app_used = mss(dep, "mailbox", "quota", app["address"])["storage"]["used"]
        mss(dep, "mailbox", "quota", app["address"], "--storage", str(app_used + 8000))

        # RCPT: a full mailbox is refused, the other recipient is not, and gets the message.
        raw, msgid = build_message(claire["address"], [paul["address"], org["address"]], "rcpt", "short\n")
        org_before = count(dep, org["address"])
        with smtp_submission(srv, claire) as smtp:
            assert smtp.mail(claire["address"])[0] == 250
            code, text = smtp.rcpt(paul["address"])
            assert (code, text) == (552, f"5.2.2 Mailbox <{paul['address']}> is full".encode())
            assert smtp.rcpt(org["address"])[0] == 250
            assert smtp.data(raw)[0] == 250
        assert count(dep, paul["address"]) == 1
        assert count(dep, org["address"]) == org_before + 1
        assert any(msgid.encode() in m for m in asyncio.run(stored_messages(dep, org["address"])))

        # RCPT with a declared SIZE (RFC 1870) that cannot fit.
        with smtp_submission(srv, claire) as smtp:
            assert smtp.mail(claire["address"], ["SIZE=50000"])[0] == 250
            code, text = smtp.rcpt(app["address"])
            assert code == 552 and text.startswith(b"5.2.2 ") and b"no room" in text, text
            assert smtp.rcpt(org["address"])[0] == 250

        # DATA: no SIZE, so RCPT accepts; the long message does not fit the APP mailbox: it is
        # left out, ORG gets the message, and Claire a failure DSN (5.2.2) in her INBOX.
        canary = uuid.uuid4().hex
        raw, msgid = build_message(
            claire["address"], [app["address"], org["address"]], "data", f"{canary}\n" + ("x" * 99 + "\n") * 200
        )
        app_before, org_before, claire_before = (count(dep, m["address"]) for m in (app, org, claire))
        with smtp_submission(srv, claire) as smtp:
            assert smtp.mail(claire["address"])[0] == 250
            assert smtp.rcpt(app["address"])[0] == 250
            assert smtp.rcpt(org["address"])[0] == 250
            code, text = smtp.data(raw)
            assert code == 250 and b"mailbox full: 1 recipient" in text, text
        assert count(dep, app["address"]) == app_before
        assert count(dep, org["address"]) == org_before + 1
        inbox = asyncio.run(stored_messages(dep, claire["address"]))
        assert len(inbox) == claire_before + 1
        report = openssl_decrypt(dep, claire, inbox[-1], tmp_path)
        assert b"multipart/report" in report and b"report-type=delivery-status" in report
        assert f"Final-Recipient: rfc822;{app['address']}".encode() in report
        assert b"Action: failed" in report and b"Status: 5.2.2" in report
        assert b"Diagnostic-Code: smtp; 552 5.2.2" in report

        # DATA with that recipient alone: refused whole, nothing stored, no DSN.
        with smtp_submission(srv, claire) as smtp:
            assert smtp.mail(claire["address"])[0] == 250
            assert smtp.rcpt(app["address"])[0] == 250
            code, text = smtp.data(raw)
            assert (code, text) == (552, f"5.2.2 Mailbox <{app['address']}> has no room for this message".encode())
        assert count(dep, app["address"]) == app_before
        assert count(dep, claire["address"]) == claire_before + 1

        # Back to the defaults: Paul receives again.
        assert mss(dep, "mailbox", "quota", paul["address"], "--default")["storage"]["default"] is True
        with smtp_submission(srv, claire) as smtp:
            assert smtp.sendmail(claire["address"], [paul["address"]], first) == {}
        assert count(dep, paul["address"]) == 2
    finally:
        srv.stop()
    log = srv.log_text()
    assert f"over_quota={app['address']}" in log


def test_imap_shows_the_configured_quota(fresh_deployment):
    dep = fresh_deployment
    claire = dep.mailbox("PER", 0)
    mss(dep, "mailbox", "quota", claire["address"], "--messages", "500")
    srv = start_server(dep)
    try:
        m = imaplib.IMAP4_SSL(srv.host, srv.port("imaps"), ssl_context=dep.client_context(claire), timeout=20)
        m.authenticate("EXTERNAL", lambda _: b"")
        caps = m.capabilities
        assert {"QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE"} <= set(caps)
        status, data = m.getquotaroot("INBOX")
        assert status == "OK"
        roots, quotas = data
        q = mss(dep, "mailbox", "quota", claire["address"])
        kib = -(-q["storage"]["used"] // 1024)
        assert roots == [b'"INBOX" ""']
        # [limits] mailbox_quota's default, 10 GiB, and this mailbox's own 500 messages.
        assert quotas == [f'"" (STORAGE {kib} 10485760 MESSAGE {q["messages"]["used"]} 500)'.encode()]
        assert m._simple_command("SETQUOTA", '""', "(STORAGE 1)")[0] == "NO"
        m.logout()
    finally:
        srv.stop()
