"""`mss queue list/show/retry/delete/stats` on a demo deployment of each backend, with
entries put in the queue through RelayQueue as a delivery would; `delete` sends the sender
its failure DSN, which lands sealed in the sender's INBOX."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from mail import openssl_decrypt
from support import drop_pg_database, make_deployment, scan_files, stored_messages

from mss.cli.queue import queue
from mss.db.engine import create_engine, sessionmaker
from mss.queue import OutboundMessage, OutboundRecipient, RelayQueue
from mss.records import MailDsn, RcptDsn

CANARY = b"CANARY-queue-cli-4d1c"


@pytest.fixture(scope="module")
def dep(backend, tmp_path_factory):
    d, pg_name = make_deployment(tmp_path_factory.mktemp(f"queue-cli-{backend}"), backend)
    yield d
    if pg_name:
        drop_pg_database(pg_name)


def enqueue(dep, messages, *, now: datetime | None = None) -> list[int]:
    settings = dep.settings()

    async def go() -> list[int]:
        engine = create_engine(settings.resolved_database_url)
        try:
            q = RelayQueue(settings, sessionmaker(engine))
            async with q.sessions() as s, s.begin():
                return await q.enqueue(s, messages, now=now)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def outbound(sender: str, *, rcpts=(("bob@peer.test", None),), dsn=None) -> OutboundMessage:
    content = (
        f"From: {sender}\r\nTo: bob@peer.test\r\nSubject: Compte rendu\r\nMessage-ID: <q1@demo>\r\n\r\n".encode()
        + CANARY
        + b"\r\n"
    )
    return OutboundMessage(
        domain="peer.test",
        mail_from=sender,
        recipients=tuple(OutboundRecipient(a, d) for a, d in rcpts),
        content=content,
        end_to_end=False,
        dsn=dsn,
    )


def mss_queue(dep, *args: str):
    return CliRunner().invoke(queue, [*args, "-c", str(dep.config)], catch_exceptions=False)


def as_json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_list_show_and_stats(dep):
    sender = dep.mailbox("PER")["address"]
    (eid,) = enqueue(
        dep,
        [
            outbound(
                sender,
                rcpts=(
                    ("bob@peer.test", RcptDsn(frozenset({"FAILURE", "DELAY"}), "rfc822;Bob@Peer.test")),
                    ("carol@peer.test", RcptDsn(frozenset())),
                ),
                dsn=MailDsn("HDRS", "ENV-1"),
            )
        ],
    )
    doc = as_json(mss_queue(dep, "list", "--json"))
    (entry,) = [e for e in doc["entries"] if e["id"] == eid]
    assert entry["domain"] == "peer.test" and entry["mail_from"] == sender and entry["attempts"] == 0
    assert [r["address"] for r in entry["recipients"]] == ["bob@peer.test", "carol@peer.test"]

    text = mss_queue(dep, "list")
    assert text.exit_code == 0 and f"{eid}  peer.test  from <{sender}>  2/2 pending" in text.stdout

    shown = as_json(mss_queue(dep, "show", str(eid), "--json"))
    assert shown["envid"] == "ENV-1" and shown["ret"] == "HDRS" and shown["end_to_end"] is False
    bob, carol = shown["recipients"]
    assert (
        bob["notify"] == ["DELAY", "FAILURE"] and bob["orcpt"] == "rfc822;Bob@Peer.test" and bob["state"] == "pending"
    )
    assert carol["notify"] == ["NEVER"]
    human = mss_queue(dep, "show", str(eid))
    assert human.exit_code == 0 and "<carol@peer.test>  pending  notify NEVER" in human.stdout
    # The content is never shown, in any form.
    for res in (text, human):
        assert CANARY.decode() not in res.output and "Compte rendu" not in res.output

    stats = as_json(mss_queue(dep, "stats", "--json"))
    assert stats["entries"] >= 1 and stats["recipients"] >= 2 and stats["oldest_age_s"] is not None
    assert "entries" in mss_queue(dep, "stats").stdout

    if dep.backend == "sqlite":
        _, found = scan_files(dep.directory, [CANARY])  # the database files, WAL included
        assert found == []


def test_missing_entries(dep):
    for args in (("show", "999999"), ("delete", "999999"), ("retry", "999999")):
        res = mss_queue(dep, *args)
        assert res.exit_code == 1 and "no queue entry 999999" in res.output


def test_retry(dep):
    sender = dep.mailbox("PER")["address"]
    future = datetime.now(UTC) + timedelta(hours=3)
    a, b = enqueue(dep, [outbound(sender), outbound(sender)], now=future)
    res = mss_queue(dep, "retry", str(a), "--json")
    assert as_json(res) == {"retried": 1}
    shown = as_json(mss_queue(dep, "show", str(a), "--json"))
    assert datetime.fromisoformat(shown["next_attempt_at"]) <= datetime.now(UTC)
    assert datetime.fromisoformat(as_json(mss_queue(dep, "show", str(b), "--json"))["next_attempt_at"]) > datetime.now(
        UTC
    )
    everything = as_json(mss_queue(dep, "retry", "--all", "--json"))["retried"]
    assert everything >= 2
    assert datetime.fromisoformat(as_json(mss_queue(dep, "show", str(b), "--json"))["next_attempt_at"]) <= datetime.now(
        UTC
    )
    for bad in ((), (str(a), "--all")):
        res = CliRunner().invoke(queue, ["retry", *bad, "-c", str(dep.config)])
        assert res.exit_code == 2 and "give an ID or --all" in res.output


def test_delete_sends_the_sender_a_failure_dsn(dep, tmp_path):
    entry = dep.mailbox("PER")
    sender = entry["address"]
    (eid,) = enqueue(
        dep,
        [
            outbound(
                sender,
                rcpts=(
                    ("bob@peer.test", None),
                    ("carol@peer.test", RcptDsn(frozenset())),  # NOTIFY=NEVER: not in the report
                    ("dan@peer.test", RcptDsn(frozenset({"SUCCESS", "FAILURE"}), "rfc822;Dan@Peer.test")),
                ),
                dsn=MailDsn("FULL", "ENV-DEL"),
            )
        ],
    )
    before = asyncio.run(stored_messages(dep, sender))
    res = mss_queue(dep, "delete", str(eid), "--json")
    doc = as_json(res)
    assert doc == {"deleted": eid, "dsn_to": sender, "recipients": ["bob@peer.test", "dan@peer.test"]}
    assert mss_queue(dep, "show", str(eid)).exit_code == 1  # gone

    after = asyncio.run(stored_messages(dep, sender))
    assert len(after) == len(before) + 1
    new = next(m for m in after if m not in before)
    assert CANARY not in new  # sealed in the store like any mail
    clear = openssl_decrypt(dep, entry, new, tmp_path)
    report = email.message_from_bytes(clear, policy=email.policy.default)
    if report.get_content_type() != "multipart/report":  # the sealer's protected-header wrapper
        inner = [p for p in report.walk() if p.get_content_type() == "multipart/report"]
        assert inner, clear[:2000]
        report = inner[0]
    parts = list(report.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "message/rfc822"]
    per_message, *blocks = parts[1].get_payload()
    assert per_message["Original-Envelope-Id"] == "ENV-DEL"
    assert [(b["Final-Recipient"], b["Action"], b["Status"]) for b in blocks] == [
        ("rfc822;bob@peer.test", "failed", "5.0.0"),
        ("rfc822;dan@peer.test", "failed", "5.0.0"),
    ]
    assert blocks[1]["Original-Recipient"] == "rfc822;Dan@Peer.test"
    assert "removed from the relay queue by the operator" in " ".join(parts[0].get_content().split())
    (returned,) = parts[2].get_payload()
    assert CANARY.decode() in returned.get_content()  # RET=FULL: the sender gets the message back


def test_delete_without_dsn(dep):
    sender = dep.mailbox("PER")["address"]
    null, never = enqueue(
        dep,
        [
            OutboundMessage(
                "peer.test", "", (OutboundRecipient("postmaster@peer.test"),), b"Subject: x\r\n\r\nx\r\n", False
            ),
            outbound(sender, rcpts=(("bob@peer.test", RcptDsn(frozenset())),)),
        ],
    )
    before = len(asyncio.run(stored_messages(dep, sender)))
    for eid in (null, never):
        doc = as_json(mss_queue(dep, "delete", str(eid), "--json"))
        assert doc["deleted"] == eid and doc["dsn_to"] is None
    (third,) = enqueue(dep, [outbound(sender, rcpts=(("x@peer.test", RcptDsn(frozenset())),))])
    assert "no DSN" in mss_queue(dep, "delete", str(third)).stdout
    assert len(asyncio.run(stored_messages(dep, sender))) == before
