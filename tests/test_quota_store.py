"""Mailbox quotas in the store, on each backend: the usage row follows every write that adds
or removes messages (checked against the message rows themselves), and a write that would
take a mailbox over its limit is refused whole, before anything is written."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from support import scratch_database

from mss.db.engine import create_engine, sessionmaker
from mss.db.models import Folder, Message
from mss.records import NewMessage, OuterHeaders, QuotaLimits
from mss.refusals import Reason, Refusal
from mss.store import Store, set_quota_limits

A = "a@x.test"


@pytest.fixture
async def make_store(backend, tmp_path):
    """`make_store(limits)`: a store on a fresh database with those default limits."""
    async with scratch_database(backend, tmp_path) as url:
        engine = create_engine(url)
        stores: list[Store] = []

        def make(limits: QuotaLimits | None = None) -> Store:
            store = Store(sessionmaker(engine), quota=limits)
            stores.append(store)
            return store

        yield make
        for store in stores:
            await store.close()
        await engine.dispose()


def item(n: int, size: int = 100, mailbox: str = A, folder: str = "INBOX") -> NewMessage:
    content = (b"%d:" % n).ljust(size, b"x")
    return NewMessage(mailbox=mailbox, folder=folder, content=content, headers=OuterHeaders(subject="[...]"))


async def rows_of(store: Store, mailbox: str) -> tuple[int, int]:
    """What the message rows of the mailbox add up to: (octets, messages)."""
    async with store.sessions() as s:
        octets, count = (
            await s.execute(
                select(func.coalesce(func.sum(Message.size), 0), func.count())
                .join(Folder, Folder.id == Message.folder_id)
                .where(Folder.mailbox == mailbox)
            )
        ).one()
    return int(octets), int(count)


async def usage(store: Store, mailbox: str = A) -> tuple[int, int]:
    q = await store.quota(mailbox)
    return q.storage_used, q.messages_used


async def test_usage_follows_write_copy_move_expunge_and_delete_folder(make_store):
    store = make_store()
    await store.ensure_default_folders(A)
    await store.create_folder(A, "Work")
    refs = await store.write([item(1, 100), item(2, 250), item(3, 50, folder="Work")])
    assert await usage(store) == (400, 3) == await rows_of(store, A)
    inbox, work = refs[0].folder_id, refs[2].folder_id

    assert len(await store.copy(A, inbox, [1, 2], work)) == 2
    assert await usage(store) == (750, 5) == await rows_of(store, A)

    await store.move(A, work, [1], inbox)  # within one mailbox: nothing changes
    assert await usage(store) == (750, 5) == await rows_of(store, A)
    await store.move(A, inbox, [1], inbox)  # into the folder itself: COPY + EXPUNGE
    assert await usage(store) == (750, 5) == await rows_of(store, A)

    await store.set_flags(A, inbox, [2], {"\\Deleted"}, "add")
    assert await store.expunge(A, inbox) == [2]
    assert await usage(store) == (500, 4) == await rows_of(store, A)

    await store.delete_folder(A, "Work")
    assert await usage(store) == await rows_of(store, A) == (150, 2)

    assert await store.delete_mailbox(A) == 2
    assert await usage(store) == (0, 0) == await rows_of(store, A)


async def test_usage_is_per_mailbox(make_store):
    store = make_store()
    await store.write([item(1, 100), item(2, 70, mailbox="b@x.test")])
    assert await usage(store, A) == (100, 1)
    assert await usage(store, "b@x.test") == (70, 1)
    assert await usage(store, "nobody@x.test") == (0, 0)


async def test_a_write_over_the_storage_limit_is_refused_and_stores_nothing(make_store):
    store = make_store(QuotaLimits(storage=1000))
    await store.write([item(1, 600)])
    with pytest.raises(Refusal) as err:
        await store.write([item(2, 300), item(3, 200)])  # the second would take it to 1100
    assert err.value.reason is Reason.OVER_QUOTA
    assert await usage(store) == (600, 1) == await rows_of(store, A)
    await store.write([item(4, 400)])  # exactly the limit is allowed
    assert await usage(store) == (1000, 2)
    with pytest.raises(Refusal):
        await store.write([item(5, 1)])
    info = await store.get_folder(A, "INBOX")
    assert info.exists == 2 and info.uidnext == 3  # the refused writes took no UID either


async def test_the_message_count_limit(make_store):
    store = make_store(QuotaLimits(messages=3))
    await store.write([item(i) for i in range(3)])
    with pytest.raises(Refusal) as err:
        await store.write([item(9, 1)])
    assert err.value.reason is Reason.OVER_QUOTA
    assert await usage(store) == (300, 3)


async def test_copy_all_repeated_stops_at_the_limit(make_store):
    store = make_store(QuotaLimits(storage=1000))
    refs = await store.write([item(1, 100), item(2, 100)])
    fid = refs[0].folder_id
    grown = []
    for _ in range(5):
        uids = [m.uid for m in await store.messages(A, fid)]
        try:
            await store.copy(A, fid, uids, fid)
        except Refusal as exc:
            assert exc.reason is Reason.OVER_QUOTA
            break
        grown.append(len(uids))
    assert grown == [2, 4]  # 200 -> 400 -> 800; doubling to 1600 is refused
    assert await usage(store) == (800, 8) == await rows_of(store, A)
    assert (await store.get_folder(A, "INBOX")).exists == 8


async def test_move_is_never_refused_for_the_quota(make_store):
    store = make_store(QuotaLimits(storage=200))
    await store.ensure_default_folders(A)
    refs = await store.write([item(1, 200)])
    trash = (await store.get_folder(A, "Trash")).id
    assert await store.move(A, refs[0].folder_id, [1], trash) == [(1, 1)]
    assert await usage(store) == (200, 1)
    with pytest.raises(Refusal):
        await store.copy(A, trash, [1], refs[0].folder_id)


async def test_an_operator_limit_overrides_the_default_and_zero_is_none(make_store):
    store = make_store(QuotaLimits(storage=1000, messages=10))
    async with store.sessions() as s, s.begin():
        await set_quota_limits(s, A, {"storage": 150})
    q = await store.quota(A)
    assert (q.storage_limit, q.messages_limit, q.storage_override, q.messages_override) == (150, 10, 150, None)
    await store.write([item(1, 150)])
    with pytest.raises(Refusal):
        await store.write([item(2, 1)])
    async with store.sessions() as s, s.begin():
        await set_quota_limits(s, A, {"storage": 0, "messages": 0})
    await store.write([item(i, 5000) for i in range(12)])  # no limit at all now
    async with store.sessions() as s, s.begin():
        await set_quota_limits(s, A, {"storage": None, "messages": None})
    q = await store.quota(A)
    assert (q.storage_limit, q.messages_limit, q.storage_used, q.messages_used) == (1000, 10, 60_150, 13)
    assert q.full
    with pytest.raises(ValueError):
        async with store.sessions() as s, s.begin():
            await set_quota_limits(s, A, {"storage": -1})


async def test_optional_messages_are_left_out_and_required_ones_refuse(make_store):
    store = make_store(QuotaLimits(storage=500))
    await store.write([item(1, 400)])
    # Batch order: the first fits (400 + 100), the optional second is left out, the third
    # (another mailbox) is stored.
    refs = await store.write_some([item(2, 100), item(3, 50), item(4, 50, mailbox="b@x.test")], optional=[1])
    assert refs[0] is not None and refs[1] is None and refs[2] is not None
    assert await usage(store) == (500, 2) and await usage(store, "b@x.test") == (50, 1)
    with pytest.raises(Refusal):
        await store.write_some([item(5, 10, mailbox="b@x.test"), item(6, 10)], optional=[0])
    assert await usage(store, "b@x.test") == (50, 1)  # refused whole: its optional message too


async def test_a_refusal_for_the_quota_does_not_fail_the_rest_of_the_batch(make_store):
    store = make_store(QuotaLimits(storage=1000))
    await store.write([item(0, 1000)])  # A is full
    results = await asyncio.gather(
        *[store.write([item(i, 10, mailbox="b@x.test")]) for i in range(5)],
        store.write([item(9, 10)]),
        *[store.write([item(i, 10, mailbox="c@x.test")]) for i in range(5)],
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == 1 and isinstance(refused[0], Refusal) and refused[0].reason is Reason.OVER_QUOTA
    assert await usage(store, "b@x.test") == (50, 5) == await rows_of(store, "b@x.test")
    assert await usage(store, "c@x.test") == (50, 5)
    assert store.commit.failed_batches == 0


async def test_concurrent_writers_never_exceed_the_limit(make_store):
    store = make_store(QuotaLimits(messages=7))
    results = await asyncio.gather(*[store.write([item(i, 10)]) for i in range(20)], return_exceptions=True)
    assert sum(1 for r in results if not isinstance(r, BaseException)) == 7
    assert await usage(store) == (70, 7) == await rows_of(store, A)
