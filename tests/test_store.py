"""The store on each backend: UIDs, MODSEQs, flags, expunge, and group commit."""
from __future__ import annotations

import asyncio

import pytest

from mss.db.engine import create_engine, sessionmaker, upgrade
from mss.delivery import GroupCommitter
from mss.store import NewMessage, OuterHeaders, Store, StoreError
from support import create_pg_database, drop_pg_database


@pytest.fixture
async def store(backend, tmp_path):
    pg_name = None
    if backend == "postgresql":
        pg_name, url = await asyncio.to_thread(create_pg_database)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    await upgrade(url)
    engine = create_engine(url)
    yield Store(sessionmaker(engine))
    await engine.dispose()
    if pg_name:
        await asyncio.to_thread(drop_pg_database, pg_name)


def item(mailbox: str, n: int, folder: str = "INBOX") -> NewMessage:
    return NewMessage(mailbox=mailbox, folder=folder, content=b"ciphertext-%d" % n, headers=OuterHeaders(subject="[...]"))


async def test_uids_are_consecutive_and_counters_advance(store: Store):
    refs = await store.write([item("a@x.test", i) for i in range(3)])
    assert [r.uid for r in refs] == [1, 2, 3]
    info = await store.get_folder("a@x.test", "inbox")
    assert info.name == "INBOX" and info.exists == 3 and info.uidnext == 4 and info.unseen == 3
    more = await store.write([item("a@x.test", 9)])
    assert more[0].uid == 4 and more[0].uidvalidity == refs[0].uidvalidity
    metas = await store.messages(info.id)
    assert [m.uid for m in metas] == [1, 2, 3, 4]
    assert len({m.modseq for m in metas}) == 4


async def test_flags_bump_modseq_and_expunge_removes_only_deleted(store: Store):
    refs = await store.write([item("b@x.test", i) for i in range(3)])
    fid = refs[0].folder_id
    before = {m.uid: m.modseq for m in await store.messages(fid)}
    changed = await store.set_flags(fid, [1, 2], {"\\Seen", "\\Deleted"}, "add")
    assert all("\\Deleted" in m.flags for m in changed)
    assert all(m.modseq > before[m.uid] for m in changed)
    await store.set_flags(fid, [2], {"\\Deleted"}, "remove")
    assert await store.expunge(fid) == [1]
    assert [m.uid for m in await store.messages(fid)] == [2, 3]
    assert (await store.get_folder("b@x.test", "INBOX")).unseen == 1


async def test_folders_are_per_mailbox_and_inbox_cannot_be_deleted(store: Store):
    await store.ensure_default_folders("c@x.test")
    names = {f.name for f in await store.list_folders("c@x.test")}
    assert {"INBOX", "Sent", "Drafts", "Trash"} <= names
    await store.create_folder("c@x.test", "Patients/2026")
    with pytest.raises(StoreError):
        await store.create_folder("c@x.test", "Patients/2026")
    with pytest.raises(StoreError):
        await store.delete_folder("c@x.test", "INBOX")
    assert await store.get_folder("d@x.test", "Patients/2026") is None
    with pytest.raises(StoreError):
        await store.write([item("c@x.test", 1, folder="Nope")])


async def test_group_commit_batches_concurrent_writers(store: Store):
    gc = GroupCommitter(store, max_batch=64, wait_ms=5)
    gc.start()
    calls = 0
    real = store.write

    async def counting(batch):
        nonlocal calls
        calls += 1
        return await real(batch)

    store.write = counting
    try:
        results = await asyncio.gather(*(gc.write([item("e@x.test", i)]) for i in range(40)))
    finally:
        await gc.stop()
        store.write = real
    uids = sorted(r[0].uid for r in results)
    assert uids == list(range(1, 41))
    assert calls < 40  # several sessions shared a transaction


async def test_group_commit_isolates_a_failing_message(store: Store):
    gc = GroupCommitter(store, max_batch=64, wait_ms=5)
    gc.start()
    try:
        good = [gc.write([item("f@x.test", i)]) for i in range(3)]
        bad = gc.write([item("f@x.test", 99, folder="Missing")])
        results = await asyncio.gather(*good, bad, return_exceptions=True)
    finally:
        await gc.stop()
    assert isinstance(results[-1], StoreError)
    assert sorted(r[0].uid for r in results[:-1]) == [1, 2, 3]


async def test_keywords_that_contain_deleted_or_seen_are_not_mistaken_for_them(store: Store):
    refs = await store.write([item("g@x.test", i) for i in range(3)])
    fid = refs[0].folder_id
    await store.set_flags(fid, [1], {"$NotDeleted", "Deleted", "NotSeen"}, "add")
    await store.set_flags(fid, [2], {"\\Deleted"}, "add")
    assert await store.expunge(fid) == [2]
    assert [m.uid for m in await store.messages(fid)] == [1, 3]
    assert (await store.get_folder("g@x.test", "INBOX")).unseen == 2


async def test_concurrent_flag_changes_are_all_kept(store: Store):
    refs = await store.write([item("h@x.test", 0)])
    fid = refs[0].folder_id
    keywords = [f"k{i}" for i in range(12)]
    await asyncio.gather(*(store.set_flags(fid, [1], {k}, "add") for k in keywords))
    (meta,) = await store.messages(fid)
    assert set(keywords) <= meta.flags


async def test_move_is_one_transaction_and_keeps_the_ciphertext(store: Store):
    refs = await store.write([item("i@x.test", i) for i in range(3)])
    src = refs[0].folder_id
    dest = (await store.get_folder("i@x.test", "Trash")).id
    pairs = await store.move(src, [1, 3], dest)
    assert [p[0] for p in pairs] == [1, 3]
    assert [m.uid for m in await store.messages(src)] == [2]
    moved = await store.content(dest, [p[1] for p in pairs])
    assert sorted(moved.values()) == [b"ciphertext-0", b"ciphertext-2"]
    with pytest.raises(StoreError):
        await store.move(src, [2], src)


async def test_first_use_of_a_mailbox_from_many_sessions_at_once(store: Store):
    """A login and deliveries racing to create a new mailbox's folders all succeed."""
    results = await asyncio.gather(
        *(store.write([item("new@x.test", i)]) for i in range(6)),
        *(store.list_folders("new@x.test") for _ in range(3)),
        return_exceptions=True,
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    names = [f.name for f in await store.list_folders("new@x.test")]
    assert sorted(names) == sorted(set(names)) and "INBOX" in names
    inbox = await store.get_folder("new@x.test", "INBOX")
    assert inbox.exists == 6


async def test_crossing_moves_and_deliveries_do_not_deadlock(store: Store):
    """MOVE INBOX->Sent, MOVE Sent->INBOX and deliveries to INBOX and Sent, all at once:
    every folder lock is taken in one global order, so none of them deadlocks (PostgreSQL
    would abort one with 'deadlock detected')."""
    box = "lock@x.test"
    await store.write([item(box, i) for i in range(40)] + [item(box, 100 + i, folder="Sent") for i in range(40)])
    inbox = (await store.get_folder(box, "INBOX")).id
    sent = (await store.get_folder(box, "Sent")).id
    inbox_uids = [m.uid for m in await store.messages(inbox)]
    sent_uids = [m.uid for m in await store.messages(sent)]
    ops = []
    for i in range(20):
        ops.append(store.move(inbox, [inbox_uids[i]], sent))
        ops.append(store.move(sent, [sent_uids[i]], inbox))
        ops.append(store.write([item(box, 200 + i, folder="Sent"), item(box, 300 + i)]))
    results = await asyncio.gather(*ops, return_exceptions=True)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors[:3]
    total = len(await store.messages(inbox)) + len(await store.messages(sent))
    assert total == 80 + 40


async def test_a_commit_cut_short_by_shutdown_fails_its_sessions_instead_of_stranding_them(store: Store):
    never = asyncio.Event()

    async def hanging_write(batch):
        await never.wait()

    gc = GroupCommitter(store, max_batch=8, wait_ms=1)
    gc.start()
    store.write = hanging_write
    try:
        waiting = [asyncio.create_task(gc.write([item("j@x.test", i)])) for i in range(3)]
        await asyncio.sleep(0.05)
        await gc.stop(timeout=0.2)
        results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)
    finally:
        del store.write
    assert all(isinstance(r, RuntimeError) and "stopping" in str(r) for r in results), results
