"""The patient bridge end to end: a real `mss serve`, real SMTP clients, the `mss patient`
command, the demo's patients (one activated by the reference client, one pending)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid

import pytest
from mail import build_message, find_stored, smtp_submission
from support import ROOT, drop_pg_database, make_deployment, scan_files, start_server, stored_messages

from crypto.ins import ins_key
from crypto.patient_client import PatientClient


def _rcpt(client, address: str) -> tuple[int, bytes]:
    return client.rcpt(address)


def _unlock(deployment, patient: dict):
    from mss.core import Core

    async def go():
        core = await Core.open(deployment.settings(), migrate=False)
        try:
            return await core.patients.key_record(patient["ins"])
        finally:
            await core.close()

    record = asyncio.run(go())
    return PatientClient().unlock(patient["password"], record)


def test_patient_addresses_get_their_replies_and_mail_is_opened_only_with_the_password(server, deployment):
    claire, paul = deployment.mailbox("PER", 0), deployment.mailbox("PER", 1)
    active, pending = deployment.doc["patients"]
    domain = active["address"].rpartition("@")[2]
    body13 = "2750175999001"
    with smtp_submission(server, claire) as c:
        c.mail(claire["address"])
        code, text = _rcpt(c, f"{body13}{(int(ins_key(body13)) + 1) % 97:02d}@{domain}")
        assert code == 553 and text.startswith(b"5.1.3 "), text
        code, text = _rcpt(c, f"{body13}{ins_key(body13)}@{domain}")
        assert code == 550 and text.startswith(b"5.1.1 "), text
        assert _rcpt(c, pending["address"])[0] == 250  # pending spaces receive at once
        c.rset()

    canary = f"CANARY-{uuid.uuid4().hex}"
    raw, msgid = build_message(
        claire["address"], [active["address"], paul["address"]], f"Bilan {canary}", f"{canary}\n"
    )
    with smtp_submission(server, claire) as c:
        assert c.sendmail(claire["address"], [active["address"], paul["address"]], raw) == {}  # mixed recipients
    stored = find_stored(asyncio.run(stored_messages(deployment, active["address"])), msgid)
    assert canary.encode() not in stored and b"smime-type=authEnveloped-data" in stored
    assert find_stored(asyncio.run(stored_messages(deployment, paul["address"])), msgid)
    inner = PatientClient().open(stored, _unlock(deployment, active))
    assert f"Subject: Bilan {canary}".encode() in inner

    # The notification arrives, content-free; and the canary is in no byte the server wrote.
    notifications = deployment.directory / "notifications"
    deadline = time.monotonic() + 15
    while not list(notifications.glob("*.eml")) and time.monotonic() < deadline:
        time.sleep(0.2)
    notes = [p.read_bytes() for p in notifications.glob("*.eml")]
    assert notes, "no notification was written"
    for note in notes:
        for secret in (canary, "Bilan", claire["address"], "MARTIN"):
            assert secret.encode() not in note
    scanned, found = scan_files(deployment.directory, [canary.encode()])
    assert not found and any(p.parent == notifications for p in scanned)


def _mss(dep, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "mss", *args, "-c", str(dep.config), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


@pytest.fixture
def patient_deployment(backend, tmp_path):
    dep, pg_name = make_deployment(tmp_path / "demo", backend, patients=True)
    yield dep
    if pg_name:
        drop_pg_database(pg_name)


@pytest.mark.slow
def test_operator_commands_blocks_and_closing_refuse_mail_with_their_codes(patient_deployment):
    dep = patient_deployment
    claire = dep.mailbox("PER", 0)
    active, _pending = dep.doc["patients"]
    new_ins = "2960275123456" + ins_key("2960275123456")
    created = _mss(dep, "patient", "create", new_ins, "--email", "nouveau@example.org", "--name", "Nouveau")
    assert created["state"] == "pending" and created["activation_code"]
    bad = subprocess.run(
        [sys.executable, "-m", "mss", "patient", "create", "123", "--email", "x@example.org", "-c", str(dep.config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "Invalid INS" in bad.stderr, bad.stderr
    listed = {p["ins"]: p["state"] for p in _mss(dep, "patient", "list")["patients"]}
    assert listed[active["ins"]] == "active" and listed[created["ins"]] == "pending"
    shown = _mss(dep, "patient", "block", active["ins"], "--professional", claire["address"])
    assert shown["blocked"] == [claire["address"]]

    srv = start_server(dep)
    try:
        with smtp_submission(srv, claire) as c:
            c.mail(claire["address"])
            code, text = c.rcpt(active["address"])
            assert code == 550 and text.startswith(b"5.7.1 ") and b"not possible" in text  # neutral
            c.rset()
        _mss(dep, "patient", "unblock", active["ins"], "--professional", claire["address"])
        closed = _mss(dep, "patient", "close", active["ins"])
        assert closed["state"] == "closed"
        opposed = _mss(dep, "patient", "oppose", created["ins"])
        assert opposed["state"] == "opposed"
        with smtp_submission(srv, claire) as c:
            for address in (active["address"], created["address"]):
                c.mail(claire["address"])
                code, text = c.rcpt(address)
                assert code == 550 and text.startswith(b"5.2.1 "), text
                c.rset()
    finally:
        srv.stop()
    journal = _mss(dep, "patient", "journal", active["ins"])["journal"]
    assert journal == []  # destroyed with the space
