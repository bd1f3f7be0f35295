"""The store on each backend: UIDs, MODSEQs, UIDVALIDITY, flags and keywords, expunge,
folder ids checked against their mailbox, and group commit for every write."""

from __future__ import annotations

import asyncio

import pytest
from support import scratch_database

from mss.db.engine import create_engine, sessionmaker
from mss.records import NewMessage, OuterHeaders
from mss.refusals import Reason, Refusal
from mss.store import Store


@pytest.fixture
async def store(backend, tmp_path):
    async with scratch_database(backend, tmp_path) as url:
        engine = create_engine(url)
        store = Store(sessionmaker(engine))
        yield store
        await store.close()
        await engine.dispose()


def item(mailbox: str, n: int, folder: str = "INBOX") -> NewMessage:
    return NewMessage(
        mailbox=mailbox, folder=folder, content=b"ciphertext-%d" % n, headers=OuterHeaders(subject="[...]")
    )


async def test_uids_are_consecutive_and_counters_advance(store: Store):
    refs = await store.write([item("a@x.test", i) for i in range(3)])
    assert [r.uid for r in refs] == [1, 2, 3]
    info = await store.get_folder("a@x.test", "inbox")
    assert info.name == "INBOX" and info.exists == 3 and info.uidnext == 4 and info.unseen == 3
    more = await store.write([item("a@x.test", 9)])
    assert more[0].uid == 4 and more[0].uidvalidity == refs[0].uidvalidity
    metas = await store.messages("a@x.test", info.id)
    assert [m.uid for m in metas] == [1, 2, 3, 4]
    assert len({m.modseq for m in metas}) == 4


async def test_flags_bump_modseq_and_expunge_removes_only_deleted(store: Store):
    refs = await store.write([item("b@x.test", i) for i in range(3)])
    fid = refs[0].folder_id
    before = {m.uid: m.modseq for m in await store.messages("b@x.test", fid)}
    changed = await store.set_flags("b@x.test", fid, [1, 2], {"\\Seen", "\\Deleted"}, "add")
    assert all("\\Deleted" in m.flags for m in changed)
    assert all(m.modseq > before[m.uid] for m in changed)
    await store.set_flags("b@x.test", fid, [2], {"\\Deleted"}, "remove")
    assert await store.expunge("b@x.test", fid) == [1]
    assert [m.uid for m in await store.messages("b@x.test", fid)] == [2, 3]
    assert (await store.get_folder("b@x.test", "INBOX")).unseen == 1


async def test_folders_are_per_mailbox_and_inbox_cannot_be_deleted(store: Store):
    await store.ensure_default_folders("c@x.test")
    names = {f.name for f in await store.list_folders("c@x.test")}
    assert {"INBOX", "Sent", "Drafts", "Trash"} <= names
    await store.create_folder("c@x.test", "Patients/2026")
    with pytest.raises(Refusal) as err:
        await store.create_folder("c@x.test", "Patients/2026")
    assert err.value.reason is Reason.FOLDER_EXISTS
    with pytest.raises(Refusal) as err:
        await store.delete_folder("c@x.test", "INBOX")
    assert err.value.reason is Reason.CANNOT
    assert await store.get_folder("d@x.test", "Patients/2026") is None
    with pytest.raises(Refusal) as err:
        await store.write([item("c@x.test", 1, folder="Nope")])
    assert err.value.reason is Reason.NO_SUCH_FOLDER


async def test_group_commit_batches_concurrent_writers(store: Store):
    results = await asyncio.gather(*(store.write([item("e@x.test", i)]) for i in range(40)))
    uids = sorted(r[0].uid for r in results)
    assert uids == list(range(1, 41))
    assert store.commit.operations == 40
    assert store.commit.commits < 40  # several sessions shared a transaction


async def test_a_lone_writer_is_committed_at_once(store: Store):
    """No timer: a write that finds nothing in flight is its own batch, at once."""
    await store.write([item("e2@x.test", 0)])
    commits = store.commit.commits
    for i in range(5):
        await store.write([item("e2@x.test", i + 1)])
    assert store.commit.commits == commits + 5


async def test_every_kind_of_write_shares_the_group_commit(store: Store):
    box = "e3@x.test"
    await store.write([item(box, i) for i in range(4)])
    inbox = (await store.get_folder(box, "INBOX")).id
    trash = (await store.get_folder(box, "Trash")).id
    ops = [
        store.set_flags(box, inbox, [1], {"\\Seen"}, "add"),
        store.set_flags(box, inbox, [2], {"$Label"}, "add"),
        store.copy(box, inbox, [3], trash),
        store.move(box, inbox, [4], trash),
        store.write([item(box, 9)]),
        store.create_folder(box, "Archive"),
    ]
    before = store.commit.commits
    await asyncio.gather(*ops)
    assert store.commit.commits - before < len(ops)
    assert [m.uid for m in await store.messages(box, inbox)] == [1, 2, 3, 5]
    assert len(await store.messages(box, trash)) == 2


async def test_group_commit_isolates_a_failing_write(store: Store):
    good = [store.write([item("f@x.test", i)]) for i in range(3)]
    bad = store.write([item("f@x.test", 99, folder="Missing")])
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert isinstance(results[-1], Refusal) and results[-1].reason is Reason.NO_SUCH_FOLDER
    assert sorted(r[0].uid for r in results[:-1]) == [1, 2, 3]


async def test_keywords_that_contain_deleted_or_seen_are_not_mistaken_for_them(store: Store):
    refs = await store.write([item("g@x.test", i) for i in range(3)])
    fid = refs[0].folder_id
    await store.set_flags("g@x.test", fid, [1], {"$NotDeleted", "Deleted", "NotSeen"}, "add")
    await store.set_flags("g@x.test", fid, [2], {"\\Deleted"}, "add")
    assert await store.expunge("g@x.test", fid) == [2]
    assert [m.uid for m in await store.messages("g@x.test", fid)] == [1, 3]
    assert (await store.get_folder("g@x.test", "INBOX")).unseen == 2


async def test_concurrent_flag_changes_are_all_kept(store: Store):
    refs = await store.write([item("h@x.test", 0)])
    fid = refs[0].folder_id
    keywords = [f"k{i}" for i in range(12)]
    await asyncio.gather(*(store.set_flags("h@x.test", fid, [1], {k}, "add") for k in keywords))
    (meta,) = await store.messages("h@x.test", fid)
    assert set(keywords) <= meta.flags


async def test_move_is_one_transaction_and_keeps_the_ciphertext(store: Store):
    refs = await store.write([item("i@x.test", i) for i in range(3)])
    src = refs[0].folder_id
    dest = (await store.get_folder("i@x.test", "Trash")).id
    pairs = await store.move("i@x.test", src, [1, 3], dest)
    assert [p[0] for p in pairs] == [1, 3]
    assert [m.uid for m in await store.messages("i@x.test", src)] == [2]
    moved = await store.content("i@x.test", dest, [p[1] for p in pairs])
    assert sorted(moved.values()) == [b"ciphertext-0", b"ciphertext-2"]
    # Into the folder itself: copied under a new UID, the original gone, the bytes the same.
    ((old, new),) = await store.move("i@x.test", src, [2], src)
    assert old == 2 and new > 2
    assert [m.uid for m in await store.messages("i@x.test", src)] == [new]
    assert await store.content("i@x.test", src, [new]) == {new: b"ciphertext-1"}


async def test_first_use_of_a_mailbox_from_many_sessions_at_once(store: Store):
    """A login and deliveries racing to create a new mailbox's folders all succeed."""
    results = await asyncio.gather(
        *(store.write([item("new@x.test", i)]) for i in range(6)),
        *(store.ensure_default_folders("new@x.test") for _ in range(3)),
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
    inbox_uids = [m.uid for m in await store.messages(box, inbox)]
    sent_uids = [m.uid for m in await store.messages(box, sent)]
    ops = []
    for i in range(20):
        ops.append(store.move(box, inbox, [inbox_uids[i]], sent))
        ops.append(store.move(box, sent, [sent_uids[i]], inbox))
        ops.append(store.write([item(box, 200 + i, folder="Sent"), item(box, 300 + i)]))
    results = await asyncio.gather(*ops, return_exceptions=True)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors[:3]
    total = len(await store.messages(box, inbox)) + len(await store.messages(box, sent))
    assert total == 80 + 40


async def test_a_commit_cut_short_by_shutdown_fails_its_sessions_instead_of_stranding_them(store: Store):
    never = asyncio.Event()
    real = store._write

    async def hanging_write(s, batch, *rest):
        await never.wait()

    store._write = hanging_write
    try:
        waiting = [asyncio.create_task(store.write([item("j@x.test", i)])) for i in range(3)]
        await asyncio.sleep(0.05)
        await store.commit.stop(timeout=0.2)
        results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)
    finally:
        store._write = real
    assert all(isinstance(r, RuntimeError) and "stopping" in str(r) for r in results), results
    with pytest.raises(RuntimeError, match="stopping"):
        await store.write([item("j@x.test", 9)])


async def test_uidvalidity_only_grows_even_for_a_recreated_folder(store: Store):
    """RFC 9051 2.3.1.1: a folder created again under a name used before gets a greater
    UIDVALIDITY, whatever the clock says (it comes from a counter)."""
    box = "k@x.test"
    await store.ensure_default_folders(box)
    first = await store.create_folder(box, "Patients")
    await store.delete_folder(box, "Patients")
    again = await store.create_folder(box, "Patients")
    assert first.uidvalidity < again.uidvalidity
    values = [f.uidvalidity for f in await store.list_folders(box)]
    assert len(set(values)) == len(values)
    # Each mailbox draws from its own counter: nobody can use up another's values.
    for i in range(20):
        await store.create_folder(box, f"Spam{i}")
    other = await store.create_folder("l@x.test", "Patients")
    assert other.uidvalidity == 1


async def test_system_flags_are_columns_and_keywords_rows(store: Store):
    from sqlalchemy import text

    box = "m@x.test"
    (ref,) = await store.write([NewMessage(box, "INBOX", b"c", OuterHeaders(), frozenset({"\\Seen", "$Forwarded"}))])
    await store.set_flags(box, ref.folder_id, [ref.uid], {"\\Flagged", "Work"}, "add")
    async with store.sessions() as s:
        row = (
            await s.execute(
                text("SELECT seen, flagged, deleted FROM message WHERE uid = :u AND folder_id = :f"),
                {"u": ref.uid, "f": ref.folder_id},
            )
        ).one()
        words = sorted((await s.execute(text("SELECT keyword FROM message_keyword"))).scalars())
    assert tuple(bool(v) for v in row) == (True, True, False)
    assert words == ["$Forwarded", "Work"]
    await store.set_flags(box, ref.folder_id, [ref.uid], {"\\Seen"}, "replace")
    (meta,) = await store.messages(box, ref.folder_id)
    assert meta.flags == frozenset({"\\Seen"})
    async with store.sessions() as s:
        assert (await s.execute(text("SELECT count(*) FROM message_keyword"))).scalar_one() == 0


async def test_one_write_over_several_folders_gives_each_message_its_own_keywords(store: Store):
    """The multi-row insert gives back the new ids in its rows' order: each message's keywords
    go to it, whichever folder and mailbox it is in, with or without keywords of its own."""

    def kw(mailbox: str, folder: str, n: int, flags: set[str]) -> NewMessage:
        return NewMessage(mailbox, folder, b"c-%d" % n, OuterHeaders(), frozenset(flags))

    batch = [
        kw("a@x.test", "INBOX", 1, {"$Label1"}),
        kw("b@x.test", "INBOX", 2, set()),
        kw("a@x.test", "Sent", 3, {"\\Seen", "Work", "$Label2"}),
        kw("a@x.test", "INBOX", 4, {"Home"}),
        kw("b@x.test", "INBOX", 5, {"$Forwarded"}),
    ]
    refs = await store.write(batch)
    got = {}
    for ref, n in zip(refs, range(1, 6), strict=True):
        (meta,) = [m for m in await store.messages(ref.mailbox, ref.folder_id) if m.uid == ref.uid]
        got[n] = meta.flags
    assert got == {n: frozenset(batch[n - 1].flags) for n in range(1, 6)}
    assert [r.uid for r in refs] == [1, 1, 1, 2, 2]


async def test_a_folder_id_of_another_mailbox_matches_nothing(store: Store):
    """The store checks every folder id against the mailbox named with it, in SQL."""
    (ref,) = await store.write([item("victim@x.test", 0)])
    await store.ensure_default_folders("mallory@x.test")
    fid = ref.folder_id
    assert await store.messages("mallory@x.test", fid) == []
    assert await store.content("mallory@x.test", fid, [ref.uid]) == {}
    assert await store.headers("mallory@x.test", fid, [ref.uid]) == {}
    assert await store.folder_state("mallory@x.test", fid) is None
    mallory_inbox = (await store.get_folder("mallory@x.test", "INBOX")).id
    for attempt in (
        store.set_flags("mallory@x.test", fid, [ref.uid], {"\\Deleted"}, "add"),
        store.expunge("mallory@x.test", fid),
        store.copy("mallory@x.test", fid, [ref.uid], mallory_inbox),
        store.move("mallory@x.test", fid, [ref.uid], mallory_inbox),
    ):
        with pytest.raises(Refusal) as err:
            await attempt
        assert err.value.reason is Reason.NO_SUCH_FOLDER
    (meta,) = await store.messages("victim@x.test", fid)
    assert meta.flags == frozenset() and await store.messages("mallory@x.test", mallory_inbox) == []


async def test_a_refused_operation_does_not_split_the_batch(store: Store):
    """Refusals are answered inside the shared transaction: the deliveries beside them still
    commit together (a refused CREATE used to turn group commit into one commit per write)."""
    box = "n@x.test"
    await store.ensure_default_folders(box)
    before = store.commit.commits
    deliveries = [store.write([item(box, i)]) for i in range(60)]
    clashes = [store.create_folder(box, "Sent") for _ in range(4)]
    results = await asyncio.gather(*deliveries, *clashes, return_exceptions=True)
    refused = results[60:]
    assert all(isinstance(r, Refusal) and r.reason is Reason.FOLDER_EXISTS for r in refused)
    assert sorted(r[0].uid for r in results[:60]) == list(range(1, 61))
    assert store.commit.commits - before <= 5


async def test_bulk_flags_copy_and_expunge_over_many_messages(store: Store):
    """Thousands of UIDs: IN lists are chunked under the databases' parameter caps, and the
    copy happens inside the database."""
    box = "bulk@x.test"
    n = 2500
    for start in range(0, n, 500):
        await store.write([item(box, i) for i in range(start, start + 500)])
    inbox = (await store.get_folder(box, "INBOX")).id
    trash = (await store.get_folder(box, "Trash")).id
    uids = list(range(1, n + 1))
    changed = await store.set_flags(box, inbox, uids, {"\\Deleted", "$Bulk"}, "add")
    assert len(changed) == n and all({"\\Deleted", "$Bulk"} <= m.flags for m in changed)
    pairs = await store.copy(box, inbox, uids, trash)
    assert [p[1] for p in pairs] == uids
    copied = await store.messages(box, trash)
    assert len(copied) == n and copied[-1].flags == frozenset({"\\Deleted", "$Bulk"})
    assert (await store.content(box, trash, [n]))[n] == b"ciphertext-%d" % (n - 1)
    assert len(await store.expunge(box, inbox, uids)) == n
    assert await store.messages(box, inbox) == []


async def test_two_nodes_crossing_writes_do_not_deadlock(backend, tmp_path):
    """Two stores (two nodes) on one database: STORE then SUBSCRIBE on one, delivery then
    STORE on the other, crossing folders. Per-mailbox locks taken in one order first: no
    'deadlock detected' on PostgreSQL, no lost write anywhere."""
    if backend != "postgresql":
        pytest.skip("one writer at a time on SQLite: nothing to deadlock")
    async with scratch_database(backend, tmp_path) as url:
        engines = [create_engine(url), create_engine(url)]
        a, b = (Store(sessionmaker(e)) for e in engines)
        box1, box2 = "one@x.test", "two@x.test"
        await a.write([item(box1, i) for i in range(5)] + [item(box2, i) for i in range(5)])
        f1 = (await a.get_folder(box1, "INBOX")).id
        f2 = (await a.get_folder(box2, "INBOX")).id
        for i in range(15):
            # Node a: STORE on box2's INBOX, then SUBSCRIBE on box1's; node b: a delivery to
            # box1's INBOX, then STORE on box2's. Each pair is one batch of its node.
            ops = [
                a.set_flags(box2, f2, [1 + i % 5], {f"k{i}"}, "add"),
                a.set_subscribed(box1, "INBOX", i % 2 == 0),
                b.write([item(box1, 100 + i)]),
                b.set_flags(box2, f2, [1 + (i + 2) % 5], {f"j{i}"}, "add"),
            ]
            results = await asyncio.gather(*ops, return_exceptions=True)
            assert not [r for r in results if isinstance(r, Exception)], results
        assert len(await a.messages(box1, f1)) == 20
        assert (a.commit.failed_batches, b.commit.failed_batches) == (0, 0)  # no deadlock to recover from
        await a.close()
        await b.close()
        for e in engines:
            await e.dispose()


async def test_expunges_and_moves_leave_tombstones_at_their_modseq(store: Store):
    """QRESYNC's VANISHED (EARLIER) comes from these (RFC 7162 3.2.5.1)."""
    refs = await store.write([item("v@x.test", i) for i in range(5)])
    fid = refs[0].folder_id
    await store.ensure_default_folders("v@x.test")
    trash = await store.get_folder("v@x.test", "Trash")
    start = (await store.folder_state("v@x.test", fid))[1]
    assert await store.vanished("v@x.test", fid, 0) == []
    await store.set_flags("v@x.test", fid, [2, 4], {"\\Deleted"}, "add")
    assert await store.expunge("v@x.test", fid) == [2, 4]
    after_expunge = (await store.folder_state("v@x.test", fid))[1]
    await store.move("v@x.test", fid, [5], trash.id)
    assert await store.vanished("v@x.test", fid, start) == [2, 4, 5]
    assert await store.vanished("v@x.test", fid, after_expunge) == [5]
    assert await store.vanished("v@x.test", fid, after_expunge + 1) == []
    # Another mailbox naming this folder's id sees nothing.
    assert await store.vanished("w@x.test", fid, 0) == []
    # The tombstones go with their folder.
    await store.create_folder("v@x.test", "Old")
    old = await store.get_folder("v@x.test", "Old")
    await store.copy("v@x.test", fid, [1], old.id)
    await store.set_flags("v@x.test", old.id, [1], {"\\Deleted"}, "add")
    await store.expunge("v@x.test", old.id)
    assert await store.vanished("v@x.test", old.id, 0) == [1]
    await store.delete_folder("v@x.test", "Old")
    assert await store.vanished("v@x.test", old.id, 0) == []


async def test_conditional_flags_leave_messages_changed_since(store: Store):
    """RFC 7162 3.1.3 UNCHANGEDSINCE: the test and the write are one transaction."""
    refs = await store.write([item("u@x.test", i) for i in range(3)])
    fid = refs[0].folder_id
    since = (await store.folder_state("u@x.test", fid))[1]
    await store.set_flags("u@x.test", fid, [2], {"\\Seen"}, "add")
    done, modified = await store.set_flags_unchanged_since("u@x.test", fid, [1, 2, 3], {"\\Flagged"}, "add", since)
    assert modified == [2]
    assert [m.uid for m in done] == [1, 3] and all("\\Flagged" in m.flags for m in done)
    flags = {m.uid: m.flags for m in await store.messages("u@x.test", fid)}
    assert flags[2] == frozenset({"\\Seen"})
    done, modified = await store.set_flags_unchanged_since("u@x.test", fid, [1, 2, 3], {"\\Draft"}, "add", 0)
    assert done == [] and modified == [1, 2, 3]
