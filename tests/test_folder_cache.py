"""The per-process folder cache (`mss.folder_cache`): a folder's message list is reused while
the folder's (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ) stays, and brought up to date (or re-read)
as soon as a change moves it, even a change made by another process (another node) on the
same database."""

from __future__ import annotations

import pytest
from support import scratch_database

from mss.db.engine import create_engine, sessionmaker
from mss.folder_cache import FolderCache, ListState
from mss.records import MessageMeta, NewMessage, OuterHeaders
from mss.store import Store


@pytest.fixture
async def two_stores(backend, tmp_path):
    """Two stores on one database, as two nodes would have."""
    async with scratch_database(backend, tmp_path) as url:
        engines = [create_engine(url), create_engine(url)]
        stores = [Store(sessionmaker(e)) for e in engines]
        yield stores
        for st in stores:
            await st.close()
        for e in engines:
            await e.dispose()


def _item(n: int) -> NewMessage:
    return NewMessage(mailbox="c@x.test", folder="INBOX", content=b"x%d" % n, headers=OuterHeaders(subject="s"))


async def test_reused_until_another_node_changes_the_folder(two_stores) -> None:
    a, b = two_stores
    refs = await a.write([_item(i) for i in range(3)])
    fid = refs[0].folder_id
    first = await a.messages("c@x.test", fid)
    assert (a.folder_cache.misses, a.folder_cache.hits) == (1, 0)
    assert await a.messages("C@x.test", fid) == first
    assert a.folder_cache.hits == 1
    info = await a.get_folder("c@x.test", "INBOX")  # counted from the cache
    assert (info.exists, info.unseen) == (3, 3) and a.folder_cache.hits == 2

    await b.set_flags("c@x.test", fid, [2], {"\\Seen", "$Work"}, "add")
    again = await a.messages("c@x.test", fid)
    assert {m.uid: m.flags for m in again}[2] == frozenset({"\\Seen", "$Work"})
    assert (await a.get_folder("c@x.test", "INBOX")).unseen == 2

    await b.set_flags("c@x.test", fid, [1], {"\\Deleted"}, "add")
    await b.expunge("c@x.test", fid)
    assert [m.uid for m in await a.messages("c@x.test", fid)] == [2, 3]
    await b.write([_item(9)])
    assert [m.uid for m in await a.messages("c@x.test", fid)] == [2, 3, 4]
    # Another mailbox naming the id gets nothing, cached or not.
    assert await a.messages("d@x.test", fid) == []


async def test_a_returned_list_is_a_copy(two_stores) -> None:
    a, _ = two_stores
    refs = await a.write([_item(i) for i in range(2)])
    got = await a.messages("c@x.test", refs[0].folder_id)
    got.clear()
    assert len(await a.messages("c@x.test", refs[0].folder_id)) == 2


def _metas(n: int) -> list[MessageMeta]:
    from datetime import UTC, datetime

    return [MessageMeta(i, i, frozenset(), datetime(2026, 1, 1, tzinfo=UTC), 1) for i in range(1, n + 1)]


def test_bounded_by_messages_least_recently_used_first() -> None:
    cache = FolderCache(max_messages=10)
    cache.put(1, "m", ListState(7, 1, 1), _metas(4))
    cache.put(2, "m", ListState(7, 1, 1), _metas(4))
    assert cache.get(1, "m", ListState(7, 1, 1)) is not None  # 1 is now the most recently used
    cache.put(3, "m", ListState(7, 1, 1), _metas(4))  # 12 > 10: the least recently used (2) goes
    assert cache.get(2, "m", ListState(7, 1, 1)) is None
    assert cache.get(1, "m", ListState(7, 1, 1)) is not None and cache.get(3, "m", ListState(7, 1, 1)) is not None
    cache.put(4, "m", ListState(7, 1, 1), _metas(11))  # larger than the whole cache: not kept
    assert cache.get(4, "m", ListState(7, 1, 1)) is None
    assert cache.get(1, "m", ListState(7, 2, 1)) is None  # another state: a miss...
    assert cache.base(1, "m", 7)[0] == (7, 1, 1)  # ...and the list stays, the base of an update
    assert cache.base(1, "m", 8) is None  # not for another folder that took the id
    assert cache.get(1, "other", ListState(7, 1, 1)) is None and cache.base(1, "m", 7) is None  # dropped
    cache.put(3, "m", ListState(7, 9, 9), _metas(11))  # outgrew the cache: its older list goes too
    assert cache.base(3, "m", 7) is None


async def test_a_store_of_this_node_advances_the_list_instead_of_a_reload(two_stores) -> None:
    a, b = two_stores
    refs = await a.write([_item(i) for i in range(4)])
    fid = refs[0].folder_id
    await a.messages("c@x.test", fid)
    misses = a.folder_cache.misses
    await a.set_flags("c@x.test", fid, [2, 3], {"\\Seen", "$Done"}, "add")
    info = await a.get_folder("c@x.test", "INBOX")
    advanced = await a.messages("c@x.test", fid, ListState(info.uidvalidity, info.uidnext, info.highestmodseq))
    assert a.folder_cache.misses == misses  # answered from the advanced list, no reload
    assert advanced == await b.messages("c@x.test", fid)  # what a fresh read finds
    assert [m.uid for m in advanced if "\\Seen" in m.flags] == [2, 3] and info.unseen == 2
    # A change by the other node moves the state past the list: read again, not advanced.
    await b.set_flags("c@x.test", fid, [1], {"\\Flagged"}, "add")
    await a.set_flags("c@x.test", fid, [4], {"\\Seen"}, "add")
    assert await a.messages("c@x.test", fid) == await b.messages("c@x.test", fid)
    assert a.folder_cache.misses == misses + 1


def test_advance_takes_only_the_list_of_the_state_before_and_not_a_newer_one() -> None:
    cache = FolderCache()
    metas = _metas(3)
    cache.put(1, "m", ListState(7, 4, 3), metas)
    changed = [MessageMeta(2, 4, frozenset({"\\Seen"}), metas[1].internaldate, 1)]
    assert not cache.advance(1, "m", ListState(7, 4, 2), ListState(7, 4, 4), changed)  # not the state held
    assert not cache.advance(1, "other", ListState(7, 4, 3), ListState(7, 4, 4), changed)
    assert cache.advance(1, "m", ListState(7, 4, 3), ListState(7, 4, 4), changed)
    assert cache.get(1, "m", ListState(7, 4, 4)) == (metas[0], changed[0], metas[2])
    cache.put(1, "m", ListState(7, 4, 4), [*metas[:2], MessageMeta(3, 9, frozenset(), metas[2].internaldate, 1)])
    assert not cache.advance(1, "m", ListState(7, 4, 4), ListState(7, 4, 5), changed)  # holds a MODSEQ above its key


async def test_a_list_of_an_older_state_is_brought_up_to_date_not_read_again(two_stores) -> None:
    """What another node (or worker) changes reaches this one's list as a delta: the rows
    whose MODSEQ moved, and the tombstones of what was expunged; the result is exactly the
    list a full read gives."""
    a, b = two_stores
    refs = await a.write([_item(i) for i in range(6)])
    fid = refs[0].folder_id
    await a.messages("c@x.test", fid)
    assert a.folder_cache.deltas == 0
    await b.set_flags("c@x.test", fid, [2], {"\\Flagged", "$Label1"}, "add")
    await b.set_flags("c@x.test", fid, [3, 5], {"\\Deleted"}, "add")
    await b.expunge("c@x.test", fid)
    await b.write([_item(7), _item(8)])
    await b.set_flags("c@x.test", fid, [7], {"\\Seen"}, "add")
    await b.set_flags("c@x.test", fid, [2], {"$Label1"}, "remove")
    updated = await a.messages("c@x.test", fid)
    assert a.folder_cache.deltas == 1
    fresh = await Store(b.sessions).messages("c@x.test", fid)  # a store with nothing cached
    assert updated == fresh
    assert [m.uid for m in updated] == [1, 2, 4, 6, 7, 8]
    assert {m.uid: m.flags for m in updated}[2] == frozenset({"\\Flagged"})
    assert "\\Seen" in {m.uid: m.flags for m in updated}[7]
    # Everything expunged, then new mail: the held list empties and refills.
    await b.set_flags("c@x.test", fid, [m.uid for m in updated], {"\\Deleted"}, "add")
    await b.expunge("c@x.test", fid)
    await b.write([_item(9)])
    assert [m.uid for m in await a.messages("c@x.test", fid)] == [9]
    assert a.folder_cache.deltas == 2


async def test_a_folder_that_takes_a_deleted_folders_id_never_gets_its_list(two_stores) -> None:
    """SQLite gives a new folder the id of the folder deleted last; with the same number of
    messages the two share UIDNEXT and HIGHESTMODSEQ. Their UIDVALIDITY differs, so the list
    held for the first is neither served for nor brought up to date into the second's."""
    a, b = two_stores
    await a.create_folder("c@x.test", "Projets")
    old = await a.write(
        [NewMessage(mailbox="c@x.test", folder="Projets", content=b"old", headers=OuterHeaders(subject="o"))]
    )
    fid = old[0].folder_id
    held = await a.messages("c@x.test", fid)
    assert [m.size for m in held] == [3]
    before = await a.get_folder("c@x.test", "Projets")
    await b.delete_folder("c@x.test", "Projets")
    await b.create_folder("c@x.test", "Projets")
    new = await b.write(
        [NewMessage(mailbox="c@x.test", folder="Projets", content=b"newer!", headers=OuterHeaders(subject="n"))]
    )
    info = await a.get_folder("c@x.test", "Projets")
    assert info.uidvalidity != old[0].uidvalidity
    if new[0].folder_id == fid:  # the id was reused (SQLite): the counters met, the key did not
        assert (info.uidnext, info.highestmodseq) == (before.uidnext, before.highestmodseq)
    got = await a.messages("c@x.test", new[0].folder_id)
    assert [m.size for m in got] == [6] and got == await Store(b.sessions).messages("c@x.test", new[0].folder_id)
    assert a.folder_cache.deltas == 0
