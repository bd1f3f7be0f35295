"""mss.relay.RelayWorker over the real RelayQueue (SQLite, and PostgreSQL when configured).

The transport is a scripted fake (the SMTP side has its own tests against a real TLS peer,
tests/relay/test_relay_client.py); the reports are the real `mss.dsn.build_report` bytes,
caught where the worker hands them to `Delivery.send_report`. Assertions read the queue's
rows after each attempt and the DSN fields (RFC 3464) in the reports.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest

from mss import metrics
from mss.config import Settings
from mss.db.engine import create_engine, sessionmaker, upgrade
from mss.queue import OutboundMessage, OutboundRecipient, RelayQueue
from mss.records import MailDsn, RcptDsn
from mss.relay import RelayWorker, status_of
from mss.services import RelayReply, RelayRoute, RelayUnavailable, SendResult

T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
CONTENT = b"From: alice@a.test\r\nTo: bob@b.test\r\nSubject: test\r\nMessage-ID: <m1@a.test>\r\n\r\nhello\r\n"
OWNER = "node-1"


class Transport:
    """Answers each send with the next scripted item: {address: "code text"}, a flag for
    peer DSN support, or an exception to raise."""

    def __init__(self, *script) -> None:
        self.script = list(script)
        self.calls: list[dict] = []

    async def send(self, route, *, mail_from, recipients, content, dsn=None) -> SendResult:
        self.calls.append(dict(route=route, mail_from=mail_from, recipients=list(recipients), content=content, dsn=dsn))
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        replies, offers_dsn = item if isinstance(item, tuple) else (item, False)
        out = {a: RelayReply(int(t[:3]), t[4:]) for a, t in replies.items()}
        return SendResult(replies=out, peer_offers_dsn=offers_dsn, remote_host=route.host)


class Reports:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send_report(self, to: str, raw: bytes) -> None:
        self.sent.append((to, raw))


class Env:
    def __init__(self, url: str, tmp, **relay) -> None:
        relay.setdefault("routes", {"b.test": "mx.b.test:2525"})
        relay.setdefault("retry_schedule_s", [60, 300, 900])
        self.settings = Settings(domain="a.test", base_dir=tmp, database_url=url, relay=relay)
        self.engine = create_engine(url)
        self.sessions = sessionmaker(self.engine)
        self.queue = RelayQueue(self.settings, self.sessions)
        self.reports = Reports()

    def worker(self, transport, **kw) -> RelayWorker:
        return RelayWorker(self.settings, self.queue, self.reports, transport, OWNER, **kw)

    async def add(self, rcpts=("bob@b.test",), *, dsn=None, mail_dsn=None, mail_from="alice@a.test", now=T0) -> int:
        m = OutboundMessage(
            domain="b.test",
            mail_from=mail_from,
            recipients=tuple(OutboundRecipient(r, dsn) for r in rcpts),
            content=CONTENT,
            end_to_end=False,
            dsn=mail_dsn,
        )
        async with self.sessions() as s, s.begin():
            (entry_id,) = await self.queue.enqueue(s, [m], now=now)
        return entry_id


@pytest.fixture
async def env(empty_database_url, tmp_path):
    await upgrade(empty_database_url)
    e = Env(empty_database_url, tmp_path)
    yield e
    await e.engine.dispose()


def report_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


async def test_sent_entry_leaves_the_queue_without_report(env, caplog) -> None:
    entry_id = await env.add(("bob@b.test", "carol@b.test"))
    t = Transport({"bob@b.test": "250 2.0.0 Ok", "carol@b.test": "250 2.0.0 Ok"})
    caplog.set_level(logging.INFO, "mss.relay")
    assert await env.worker(t).run_once(now=T0) == 1
    assert await env.queue.get(entry_id) is None
    assert env.reports.sent == []
    (call,) = t.calls
    assert call["route"] == RelayRoute("mx.b.test", 2525, "static")
    assert call["content"] == CONTENT  # decrypted from the queue's at-rest encryption
    assert [r.address for r in call["recipients"]] == ["bob@b.test", "carol@b.test"]
    assert f"relay id={entry_id} domain=b.test route=mx.b.test:2525 attempt=1 outcome=sent" in caplog.text


def _count(name: str, **labels) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_unknown_recipient_failed_with_failure_dsn(env) -> None:
    before = (_count("mss_relay_recipients_total", outcome="failed"), _count("mss_relay_reports_total", kind="failure"))
    entry_id = await env.add(("bob@b.test", "nobody@b.test"), mail_dsn=MailDsn(ret="HDRS", envid="E-1"))
    t = Transport({"bob@b.test": "250 2.0.0 Ok", "nobody@b.test": "550 5.1.1 no such user"})
    await env.worker(t).run_once(now=T0)
    assert await env.queue.get(entry_id) is None  # nothing pending any more
    assert t.calls[0]["dsn"] == MailDsn(ret="HDRS", envid="E-1")
    ((to, raw),) = env.reports.sent
    text = report_text(raw)
    assert to == "alice@a.test"
    assert "report-type=delivery-status" in text
    assert "Final-Recipient: rfc822;nobody@b.test" in text
    assert "Action: failed" in text and "Status: 5.1.1" in text
    assert "550 5.1.1 no such user" in text
    assert "Original-Envelope-Id: E-1" in text
    assert "bob@b.test\r\nAction" not in text  # the delivered one is not reported
    after = (_count("mss_relay_recipients_total", outcome="failed"), _count("mss_relay_reports_total", kind="failure"))
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


@pytest.mark.parametrize("case", ["never", "null-sender"])
async def test_no_failure_dsn_when_never_or_for_a_dsn(env, case) -> None:
    if case == "never":
        await env.add(("nobody@b.test",), dsn=RcptDsn(notify=frozenset()))
    else:
        await env.add(("nobody@b.test",), mail_from="")
    t = Transport({"nobody@b.test": "550 5.1.1 no such user"})
    await env.worker(t).run_once(now=T0)
    assert env.reports.sent == []
    assert await env.queue.list() == []


async def test_temporary_failures_follow_the_retry_schedule(env) -> None:
    entry_id = await env.add()
    t = Transport(*[{"bob@b.test": "451 4.3.0 try later"}] * 5)
    w = env.worker(t)
    now = T0
    expected = [60, 300, 900, 900]  # the last delay repeats
    for attempt, delay in enumerate(expected, start=1):
        assert await w.run_once(now=now) == 1
        entry = await env.queue.get(entry_id)
        assert entry.attempts == attempt
        assert entry.next_attempt_at.replace(tzinfo=UTC) == now + timedelta(seconds=delay)
        assert entry.recipients[0].state == "pending" and entry.recipients[0].last_reply == "451 4.3.0 try later"
        assert await w.run_once(now=now + timedelta(seconds=delay - 1)) == 0  # not due yet
        now += timedelta(seconds=delay)
    assert env.reports.sent == []


async def test_next_route_tried_when_one_is_unavailable(env) -> None:
    async def two_routes(domain, settings):
        return [RelayRoute("mx1.b.test", 25, "mx"), RelayRoute("mx2.b.test", 25, "mx")]

    entry_id = await env.add()
    t = Transport(RelayUnavailable("cannot connect to mx1.b.test:25"), {"bob@b.test": "250 2.0.0 Ok"})
    await env.worker(t, resolve=two_routes).run_once(now=T0)
    assert [c["route"].host for c in t.calls] == ["mx1.b.test", "mx2.b.test"]
    assert await env.queue.get(entry_id) is None


async def test_permanent_session_refusal_stops_at_the_first_route(env) -> None:
    async def two_routes(domain, settings):
        return [RelayRoute("mx1.b.test", 25, "mx"), RelayRoute("mx2.b.test", 25, "mx")]

    await env.add()
    refusal = RelayUnavailable("MAIL refused", permanent=True, reply=RelayReply(550, "5.7.1 sender refused"))
    t = Transport(refusal)
    await env.worker(t, resolve=two_routes).run_once(now=T0)
    assert len(t.calls) == 1
    ((_, raw),) = env.reports.sent
    assert "Status: 5.7.1" in report_text(raw)


async def test_null_mx_fails_at_once(env) -> None:
    async def null_mx(domain, settings):
        raise RelayUnavailable("accepts no mail (null MX)", permanent=True, reply=RelayReply(556, "5.1.10 null MX"))

    await env.add()
    t = Transport()
    await env.worker(t, resolve=null_mx).run_once(now=T0)
    assert t.calls == []
    ((_, raw),) = env.reports.sent
    assert "Status: 5.1.10" in report_text(raw)
    assert await env.queue.list() == []


async def test_expiry_fails_pending_with_4_4_7(env) -> None:
    entry_id = await env.add()
    t = Transport(RelayUnavailable("cannot connect to mx.b.test:2525"))
    later = T0 + timedelta(seconds=env.settings.relay.max_age_s + 1)
    await env.worker(t).run_once(now=later)
    assert await env.queue.get(entry_id) is None
    ((to, raw),) = env.reports.sent
    text = report_text(raw)
    assert to == "alice@a.test"
    assert "Action: failed" in text and "Status: 4.4.7" in text


async def test_last_retry_lands_on_the_expiry(env, tmp_path) -> None:
    entry_id = await env.add()
    t = Transport({"bob@b.test": "451 4.3.0 later"})
    almost = T0 + timedelta(seconds=env.settings.relay.max_age_s - 10)
    await env.worker(t).run_once(now=almost)
    entry = await env.queue.get(entry_id)
    assert entry.next_attempt_at.replace(tzinfo=UTC) == T0 + timedelta(seconds=env.settings.relay.max_age_s)


async def test_delay_dsn_once_when_asked(env) -> None:
    entry_id = await env.add(dsn=RcptDsn(notify=frozenset({"DELAY", "FAILURE"}), orcpt="rfc822;Bob@b.test"))
    t = Transport(*[{"bob@b.test": "451 4.2.2 mailbox full"}] * 3)
    w = env.worker(t)
    await w.run_once(now=T0)  # young: no delay report
    assert env.reports.sent == []
    late = T0 + timedelta(seconds=env.settings.relay.delay_warning_s + 1)
    await w.run_once(now=late)
    ((to, raw),) = env.reports.sent
    text = report_text(raw)
    assert "Action: delayed" in text and "Status: 4.2.2" in text
    assert "Original-Recipient: rfc822;Bob@b.test" in text
    assert "Will-Retry-Until:" in text
    assert (await env.queue.get(entry_id)).delay_notified
    await w.run_once(now=late + timedelta(hours=1))
    assert len(env.reports.sent) == 1  # once


async def test_no_delay_dsn_unasked(env) -> None:
    await env.add()  # NOTIFY not given: failures only (RFC 3461 4.1)
    t = Transport({"bob@b.test": "451 4.2.2 mailbox full"})
    await env.worker(t).run_once(now=T0 + timedelta(seconds=env.settings.relay.delay_warning_s + 1))
    assert env.reports.sent == []


@pytest.mark.parametrize("peer_offers_dsn", [False, True])
async def test_success_dsn_relayed_only_when_the_peer_lacks_dsn(env, peer_offers_dsn) -> None:
    await env.add(dsn=RcptDsn(notify=frozenset({"SUCCESS"})))
    t = Transport(({"bob@b.test": "250 2.0.0 Ok"}, peer_offers_dsn))
    await env.worker(t).run_once(now=T0)
    if peer_offers_dsn:
        assert env.reports.sent == []  # the peer reports the final delivery (RFC 3461 5.2.2)
    else:
        ((_, raw),) = env.reports.sent
        assert "Action: relayed" in report_text(raw) and "Status: 2.0.0" in report_text(raw)


async def test_transport_bug_is_a_temporary_failure(env) -> None:
    entry_id = await env.add()
    t = Transport(RuntimeError("boom"))
    await env.worker(t).run_once(now=T0)
    entry = await env.queue.get(entry_id)
    assert entry.attempts == 1 and entry.lease_owner is None
    assert "internal error" in entry.last_error


async def test_run_survives_errors_wakes_up_and_stops_on_cancel(env, caplog) -> None:
    env.settings.relay.poll_interval_s = 0.05
    t = Transport({"bob@b.test": "250 2.0.0 Ok"})
    w = env.worker(t)
    real_lease = env.queue.lease
    failures = {"n": 0}

    async def flaky_lease(owner, limit, *, now=None):
        if failures["n"] == 0:
            failures["n"] += 1
            raise OSError("database went away")
        return await real_lease(owner, limit, now=now)

    env.queue.lease = flaky_lease  # type: ignore[method-assign]
    task = asyncio.create_task(w.run())
    await asyncio.sleep(0.2)
    assert "relay round failed" in caplog.text and not task.done()
    await env.add(now=datetime.now(UTC))
    env.queue.wakeup.set()
    for _ in range(100):
        if t.calls:
            break
        await asyncio.sleep(0.05)
    assert len(t.calls) == 1
    for _ in range(40):
        if not await env.queue.list():
            break
        await asyncio.sleep(0.05)
    assert await env.queue.list() == []
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_status_of() -> None:
    assert status_of("550 5.1.1 no such user") == "5.1.1"
    assert status_of("550 no such user") == "5.0.0"
    assert status_of("451 5.1.1 inconsistent") == "4.0.0"  # class must match the code
    assert status_of("cannot connect", "4.4.1") == "4.4.1"
