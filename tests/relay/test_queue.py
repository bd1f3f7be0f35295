"""The relay queue (mss.queue) on a real database of each backend: written inside the
caller's transaction, encrypted at rest, leased without duplicates, finished by the lease
owner only; and the 0008 migration both ways."""

from __future__ import annotations

import asyncio
import os
import stat
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from support import run_alembic, scan_files

from mss.config import Settings
from mss.db.engine import create_engine, sessionmaker, upgrade
from mss.queue import OutboundMessage, OutboundRecipient, QueueBusy, RecipientResult, RelayQueue
from mss.queue_key import QueueKey, QueueKeyError
from mss.records import MailDsn, RcptDsn

T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
CANARY = b"CANARY-clinical-note-7f3a9e"


def message(domain: str = "b.test", *, rcpts: tuple[str, ...] = ("bob@b.test",), body: bytes = b"hello", **kw):
    content = b"From: alice@a.test\r\nTo: bob@b.test\r\nSubject: test\r\n\r\n" + body + b"\r\n"
    return OutboundMessage(
        domain=domain,
        mail_from=kw.pop("mail_from", "alice@a.test"),
        recipients=tuple(OutboundRecipient(r, kw.pop("dsn", None)) for r in rcpts),
        content=content,
        end_to_end=kw.pop("end_to_end", False),
        **kw,
    )


class Env:
    def __init__(self, url: str, tmp) -> None:
        self.url = url
        self.tmp = tmp
        self.settings = Settings(domain="a.test", base_dir=tmp, database_url=url)
        self.engine = create_engine(url)
        self.sessions = sessionmaker(self.engine)
        self.queue = RelayQueue(self.settings, self.sessions)

    async def add(self, messages, *, now=T0) -> list[int]:
        async with self.sessions() as s, s.begin():
            return await self.queue.enqueue(s, messages, now=now)


@pytest.fixture
async def env(empty_database_url, tmp_path):
    await upgrade(empty_database_url)
    e = Env(empty_database_url, tmp_path)
    yield e
    await e.engine.dispose()


async def test_enqueue_runs_in_the_callers_transaction_and_never_commits(env):
    async with env.sessions() as s:
        async with s.begin():
            ids = await env.queue.enqueue(s, [message()], now=T0)
            assert len(ids) == 1
            # Visible inside the transaction, through the caller's own session...
            assert (await s.execute(sa.text("SELECT count(*) FROM queue_message"))).scalar_one() == 1
            await s.rollback()
    # ... gone with its rollback: enqueue did not commit on its own.
    assert await env.queue.list() == []

    ids = await env.add([message(rcpts=("bob@b.test", "carol@b.test")), message("c.test", rcpts=("dan@c.test",))])
    entries = {e.id: e for e in await env.queue.list()}
    assert set(entries) == set(ids)
    first = entries[ids[0]]
    assert first.domain == "b.test" and first.mail_from == "alice@a.test"
    assert [r.address for r in first.recipients] == ["bob@b.test", "carol@b.test"]
    assert all(r.state == "pending" and r.last_reply is None for r in first.recipients)
    assert first.created_at == T0 and first.next_attempt_at == T0 and first.attempts == 0
    assert first.lease_owner is None and first.lease_until is None and not first.delay_notified


async def test_enqueue_with_no_recipient_is_refused(env):
    async with env.sessions() as s, s.begin():
        with pytest.raises(ValueError):
            await env.queue.enqueue(s, [message(rcpts=())])


async def test_dsn_parameters_round_trip(env):
    msgs = [
        message(dsn=RcptDsn(notify=None, orcpt=None)),
        message(dsn=RcptDsn(notify=frozenset(), orcpt="rfc822;Bob@B.test")),
        message(dsn=RcptDsn(notify=frozenset({"DELAY", "FAILURE", "SUCCESS"}))),
        message(dsn=None, mail_from="", end_to_end=True),
        OutboundMessage(
            "b.test", "alice@a.test", (OutboundRecipient("x@b.test"),), b"x", False, MailDsn("FULL", "Env+Id")
        ),
    ]
    ids = await env.add(msgs)
    got = [await env.queue.get(i) for i in ids]
    assert got[0].recipients[0].notify is None and got[0].recipients[0].orcpt is None
    assert got[1].recipients[0].notify == frozenset() and got[1].recipients[0].orcpt == "rfc822;Bob@B.test"
    assert got[2].recipients[0].notify == frozenset({"DELAY", "FAILURE", "SUCCESS"})
    assert got[3].mail_from == "" and got[3].end_to_end
    assert got[4].ret == "FULL" and got[4].envid == "Env+Id"
    async with env.engine.connect() as c:
        stored = sorted(
            (await c.execute(sa.text("SELECT notify FROM queue_recipient WHERE notify IS NOT NULL"))).scalars()
        )
    assert stored == ["DELAY,FAILURE,SUCCESS", "NEVER"]


async def test_clear_content_is_encrypted_at_rest(env):
    (clear_id,) = await env.add([message(body=CANARY)])
    s_mime = b"MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime\r\n\r\nMIIB..\r\n"
    (e2e_id,) = await env.add(
        [OutboundMessage("b.test", "alice@a.test", (OutboundRecipient("bob@b.test"),), s_mime, True)]
    )
    # What the relay sends is the clear message, decrypted with the queue key.
    assert CANARY in await env.queue.content(clear_id)
    assert await env.queue.content(e2e_id) == s_mime  # already encrypted end to end: kept as is
    entry = await env.queue.get(clear_id)
    assert entry.size == len(message(body=CANARY).content)

    # The key: 32 bytes, owner-only.
    key_path = env.settings.path(env.settings.relay.queue_key)
    assert key_path.read_bytes() and len(key_path.read_bytes()) == 32
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600

    async with env.engine.connect() as c:
        raw = (
            await c.execute(sa.text("SELECT content FROM queue_message WHERE id = :i"), {"i": clear_id})
        ).scalar_one()
    assert CANARY not in bytes(raw) and bytes(raw)[:2] == b"\x01\x01"
    if env.url.startswith("sqlite"):
        # The database files themselves (main file and WAL), read by another process.
        await env.engine.dispose()
        scanned, found = await asyncio.to_thread(scan_files, env.tmp, [CANARY])
        assert any(p.name == "empty.db" for p in scanned)
        assert found == []
    # Another queue object (another node, a restart) reads it with the same key file.
    assert CANARY in await RelayQueue(env.settings, env.sessions).content(clear_id)


async def test_content_of_a_missing_entry(env):
    with pytest.raises(LookupError):
        await env.queue.content(12345)


def test_queue_key_refuses_altered_or_foreign_blobs(tmp_path):
    key = QueueKey.load_or_create(tmp_path / "pki" / "queue.key")
    assert QueueKey.load_or_create(tmp_path / "pki" / "queue.key").open(key.seal(b"abc")) == b"abc"
    blob = bytearray(key.seal(b"secret text"))
    blob[-1] ^= 1
    with pytest.raises(QueueKeyError, match="authenticate"):
        key.open(bytes(blob))
    with pytest.raises(QueueKeyError, match="authenticate"):
        QueueKey(os.urandom(32)).open(key.seal(b"x"))  # same id, another key
    with pytest.raises(QueueKeyError, match="key 1"):
        QueueKey(os.urandom(32), key_id=2).open(key.seal(b"x"))
    with pytest.raises(QueueKeyError, match="format"):
        key.open(b"\x02\x01" + bytes(40))
    with pytest.raises(QueueKeyError, match="short"):
        key.open(b"\x01\x01")
    (tmp_path / "bad.key").write_bytes(b"short")
    with pytest.raises(QueueKeyError, match="32 bytes"):
        QueueKey.load_or_create(tmp_path / "bad.key")
    assert not list((tmp_path / "pki").glob(".*.tmp"))


async def test_lease_takes_due_entries_once_and_gives_back_expired_leases(env):
    due, later = await env.add([message()]), await env.add([message()], now=T0 + timedelta(hours=1))
    lease_s = env.settings.relay.lease_s
    got = await env.queue.lease("node-a", 10, now=T0)
    assert [e.id for e in got] == due  # the later one is not due yet
    assert got[0].lease_owner == "node-a" and got[0].lease_until == T0 + timedelta(seconds=lease_s)
    assert await env.queue.lease("node-b", 10, now=T0 + timedelta(seconds=1)) == []  # leased
    # The lease runs out (node-a died): another node takes it, with the later one now due.
    after = T0 + timedelta(hours=2)
    got = await env.queue.lease("node-b", 10, now=after)
    assert sorted(e.id for e in got) == sorted(due + later)
    assert {e.lease_owner for e in got} == {"node-b"}
    assert await env.queue.lease("node-c", 0, now=after) == []


async def test_release_gives_a_restarted_node_its_own_leases_back_at_once(env):
    ids = await env.add([message(), message()])
    assert len(await env.queue.lease("node-a", 1, now=T0)) == 1
    assert len(await env.queue.lease("node-b", 1, now=T0)) == 1
    # node-a restarts (kill -9): its entry is leasable again at once, node-b's stays leased.
    assert await env.queue.release("node-a") == 1
    again = await env.queue.lease("node-a", 10, now=T0 + timedelta(seconds=1))
    assert len(again) == 1 and again[0].id in ids
    assert await env.queue.release("nobody") == 0


async def test_lease_respects_its_limit_and_queue_order(env):
    ids = []
    for i in range(5):
        ids += await env.add([message()], now=T0 + timedelta(seconds=i))
    got = await env.queue.lease("n", 2, now=T0 + timedelta(minutes=1))
    assert [e.id for e in got] == ids[:2]


async def test_concurrent_leases_never_share_an_entry(env):
    ids = []
    for _ in range(4):
        ids += await env.add([message() for _ in range(10)])
    # Several "nodes", each with its own engine (its own connections), leasing at once.
    engines = [create_engine(env.url) for _ in range(4)]
    try:
        queues = [RelayQueue(env.settings, sessionmaker(e)) for e in engines]
        now = T0 + timedelta(seconds=5)
        rounds = await asyncio.gather(*(q.lease(f"node-{i % 4}-{i}", 3, now=now) for i, q in enumerate(queues * 4)))
    finally:
        for e in engines:
            await e.dispose()
    leased = [e.id for r in rounds for e in r]
    assert len(leased) == len(set(leased)) == 40  # 16 leases of 3 on 40 entries: all taken, none twice
    owners = {e.id: e.lease_owner for r in rounds for e in r}
    for entry in await env.queue.list():
        assert entry.lease_owner == owners[entry.id]


async def test_a_stale_attempt_of_the_same_node_cannot_record_its_outcome(env):
    """The lease ran out under a slow attempt and the same node leased the entry again: only
    the attempt holding the current lease token may record (review finding: a stale finish
    would clear the new lease and let a third attempt start)."""
    (eid,) = await env.add([message()])
    (first,) = await env.queue.lease("node-a", 1, now=T0)
    later = T0 + timedelta(seconds=env.settings.relay.lease_s + 5)
    (second,) = await env.queue.lease("node-a", 1, now=later)
    assert first.lease_token and second.lease_token and first.lease_token != second.lease_token
    rc = first.recipients[0]
    stale = await env.queue.finish_attempt(
        eid, "node-a", {rc.id: RecipientResult("sent", "250 ok")}, retry_at=None, token=first.lease_token
    )
    assert stale is None
    still = await env.queue.get(eid)
    assert still is not None and still.lease_token == second.lease_token and still.recipients[0].state == "pending"
    done = await env.queue.finish_attempt(
        eid, "node-a", {rc.id: RecipientResult("sent", "250 ok")}, retry_at=None, token=second.lease_token
    )
    assert done is None and await env.queue.get(eid) is None


async def test_delete_refuses_an_entry_being_relayed_unless_forced(env):
    (eid,) = await env.add([message()])
    await env.queue.lease("node-a", 1, now=T0)
    with pytest.raises(QueueBusy):
        await env.queue.delete(eid, now=T0 + timedelta(seconds=1))
    assert await env.queue.get(eid) is not None
    gone = await env.queue.delete(eid, force=True, now=T0 + timedelta(seconds=1))
    assert gone is not None and gone.id == eid and await env.queue.get(eid) is None


async def test_end_to_end_content_is_sealed_at_rest_too(env):
    """S/MIME content keeps its outer header (Subject, X- fields) in clear: sealed as well."""
    (eid,) = await env.add([message(body=b"CANARY-E2E-OUTER", end_to_end=True)])
    async with env.sessions() as s:
        raw = (await s.execute(sa.text("SELECT content FROM queue_message WHERE id = :i"), {"i": eid})).scalar_one()
    assert b"CANARY-E2E-OUTER" not in bytes(raw) and b"Subject: test" not in bytes(raw)
    assert b"CANARY-E2E-OUTER" in await env.queue.content(eid)


async def test_finish_attempt_by_another_owner_changes_nothing(env):
    (eid,) = await env.add([message()])
    (entry,) = await env.queue.lease("node-a", 1, now=T0)
    rc = entry.recipients[0]
    res = await env.queue.finish_attempt(
        eid, "node-b", {rc.id: RecipientResult("sent", "250 ok")}, retry_at=None, error=None
    )
    assert res is None
    now = await env.queue.get(eid)
    assert now == entry  # not finished, still leased by node-a
    # Not leased at all: nobody may finish it either.
    await env.queue.finish_attempt(eid, "node-a", {rc.id: RecipientResult("pending", "451 later")}, retry_at=T0)
    assert await env.queue.finish_attempt(eid, "node-a", {rc.id: RecipientResult("sent", "250")}, retry_at=None) is None
    assert (await env.queue.get(eid)).recipients[0].state == "pending"


async def test_finish_attempt_records_outcomes_then_removes_the_entry(env):
    (eid,) = await env.add([message(rcpts=("bob@b.test", "carol@b.test", "dan@b.test"))])
    (entry,) = await env.queue.lease("node-a", 1, now=T0)
    bob, carol, dan = entry.recipients
    retry = T0 + timedelta(minutes=5)
    after = await env.queue.finish_attempt(
        eid,
        "node-a",
        {
            bob.id: RecipientResult("sent", "250 2.0.0 Ok"),
            carol.id: RecipientResult("failed", "550 5.1.1 no such user"),
            dan.id: RecipientResult("pending", "451 4.3.0 try later"),
        },
        retry_at=retry,
        error="partial",
        delay_notified=True,
    )
    assert after is not None and after == await env.queue.get(eid)
    assert after.attempts == 1 and after.next_attempt_at == retry and after.last_error == "partial"
    assert after.lease_owner is None and after.lease_until is None and after.delay_notified
    assert [(r.address, r.state, r.last_reply) for r in after.recipients] == [
        ("bob@b.test", "sent", "250 2.0.0 Ok"),
        ("carol@b.test", "failed", "550 5.1.1 no such user"),
        ("dan@b.test", "pending", "451 4.3.0 try later"),
    ]
    assert await env.queue.lease("node-a", 1, now=retry - timedelta(seconds=1)) == []  # not due yet
    (again,) = await env.queue.lease("node-b", 1, now=retry)
    # The last pending recipient is done: the entry and its recipients are gone.
    done = await env.queue.finish_attempt(eid, "node-b", {dan.id: RecipientResult("sent", "250 ok")}, retry_at=None)
    assert done is None and await env.queue.get(eid) is None
    async with env.engine.connect() as c:
        assert (await c.execute(sa.text("SELECT count(*) FROM queue_recipient"))).scalar_one() == 0


async def test_finish_attempt_ignores_results_of_other_entries(env):
    a, b = await env.add([message(), message()])
    leased = {e.id: e for e in await env.queue.lease("n", 2, now=T0)}
    foreign = leased[b].recipients[0].id
    after = await env.queue.finish_attempt(a, "n", {foreign: RecipientResult("sent", "250")}, retry_at=T0)
    assert after.recipients[0].state == "pending"
    assert (await env.queue.get(b)).recipients[0].state == "pending"


async def test_retry_delete_and_stats(env):
    a, b = await env.add([message(rcpts=("x@b.test", "y@b.test")), message(end_to_end=True)])
    (c,) = await env.add([message()], now=T0 + timedelta(minutes=1))
    (ea,) = await env.queue.lease("n", 1, now=T0)
    await env.queue.finish_attempt(a, "n", {}, retry_at=T0 + timedelta(hours=1), error="connection refused")
    stats = await env.queue.stats(now=T0 + timedelta(minutes=10))
    assert stats == {
        "entries": 3,
        "recipients": 4,
        "leased": 0,
        "due": 2,
        "deferred": 1,
        "end_to_end": 1,
        "bytes": sum(e.size for e in await env.queue.list()),
        "oldest_age_s": 600.0,
    }
    await env.queue.lease("m", 1, now=T0 + timedelta(minutes=10))
    assert (await env.queue.stats(now=T0 + timedelta(minutes=10)))["leased"] == 1

    env.queue.wakeup.clear()
    later = T0 + timedelta(minutes=20)
    assert await env.queue.retry(a, now=later) == 1
    assert env.queue.wakeup.is_set()
    assert (await env.queue.get(a)).next_attempt_at == later
    assert await env.queue.retry(999, now=later) == 0
    assert await env.queue.retry(now=later) == 3
    assert {e.next_attempt_at for e in await env.queue.list()} == {later}

    gone = await env.queue.delete(c)
    assert gone is not None and gone.id == c and gone.recipients[0].address == "bob@b.test"
    assert await env.queue.delete(c) is None and await env.queue.get(c) is None
    assert [e.id for e in await env.queue.list()] == [a, b]
    await env.queue.delete(a)
    await env.queue.delete(b)
    assert await env.queue.stats() == {
        "entries": 0,
        "recipients": 0,
        "leased": 0,
        "due": 0,
        "deferred": 0,
        "end_to_end": 0,
        "bytes": 0,
        "oldest_age_s": None,
    }


async def test_migration_0008_up_and_down(empty_database_url):
    url = empty_database_url
    await asyncio.to_thread(run_alembic, url, "upgrade", "head")

    async def tables() -> set[str]:
        engine = create_engine(url)
        try:
            async with engine.connect() as c:
                return set(await c.run_sync(lambda sc: sa.inspect(sc).get_table_names()))
        finally:
            await engine.dispose()

    assert {"queue_message", "queue_recipient"} <= await tables()
    await asyncio.to_thread(run_alembic, url, "downgrade", "0007")
    assert not {"queue_message", "queue_recipient"} & await tables()
    await asyncio.to_thread(run_alembic, url, "upgrade", "head")
    engine = create_engine(url)
    try:
        async with engine.connect() as c:
            idx = await c.run_sync(lambda sc: {i["name"] for i in sa.inspect(sc).get_indexes("queue_message")})
        assert "ix_queue_message_next_attempt_at" in idx
    finally:
        await engine.dispose()


async def test_enqueue_through_the_stores_group_commit_with_and_without_local_copies(env):
    """The delivery path: `Store.write(items, then=enqueue)`; the queue rows and the local
    copies commit together, or neither does."""
    from mss.records import NewMessage, OuterHeaders
    from mss.store import Store

    store = Store(env.sessions)
    queued: list[int] = []

    async def then(s, refs):
        queued[:] = await env.queue.enqueue(s, [message(arrival=T0 - timedelta(seconds=3))], now=T0)

    try:
        assert await store.write([], then=then) == []  # zero local items
        assert [e.id for e in await env.queue.list()] == queued
        assert (await env.queue.get(queued[0])).arrival == T0 - timedelta(seconds=3)

        class Boom(Exception):
            pass

        async def failing(s, refs):
            await env.queue.enqueue(s, [message("c.test")], now=T0)
            raise Boom

        local = NewMessage("alice@a.test", "INBOX", b"sealed", OuterHeaders())
        with pytest.raises(Boom):
            await store.write([local], then=failing)
        assert [e.domain for e in await env.queue.list()] == ["b.test"]  # c.test rolled back
        assert await store.get_folder("alice@a.test", "INBOX") is None or not await store.messages(
            "alice@a.test", (await store.get_folder("alice@a.test", "INBOX")).id
        )
        # Without an arrival, the entry's own creation time stands for it.
        (eid,) = await env.add([message()], now=T0)
        assert (await env.queue.get(eid)).arrival == T0
    finally:
        await store.close()


async def test_postgresql_lease_skips_rows_another_node_is_holding(env):
    """FOR UPDATE SKIP LOCKED: a row locked by another transaction (another node leasing or
    finishing it) is passed over at once, not waited for."""
    if not env.url.startswith("postgresql"):
        pytest.skip("row locks are PostgreSQL's; SQLite has a single writer")
    a, b = await env.add([message(), message()])
    async with env.sessions() as held, held.begin():
        await held.execute(sa.text("SELECT id FROM queue_message WHERE id = :i FOR UPDATE"), {"i": a})
        got = await asyncio.wait_for(env.queue.lease("node-b", 10, now=T0), 10)
        assert [e.id for e in got] == [b]
    got = await env.queue.lease("node-c", 10, now=T0)
    assert [e.id for e in got] == [a]  # released by the other transaction: leasable again
