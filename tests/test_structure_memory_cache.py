"""The per-process cache of kept structures (`mss.structure_cache`): values come back by
(mailbox, folder, UIDVALIDITY) and UID, the bound in bytes evicts the least recently used
folder, and a store serves a second read from memory, on either backend."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from support import scratch_database

from mss.db.engine import create_engine, sessionmaker
from mss.records import NewMessage, OuterHeaders
from mss.store import Store
from mss.structure_cache import StructureCache


def test_values_come_back_by_folder_and_uid_and_the_rest_is_missing() -> None:
    c = StructureCache()
    c.put(("a@x", 1, 7), {1: b"one", 2: b"two"})
    assert c.get(("a@x", 1, 7), [1, 2, 3]) == ({1: b"one", 2: b"two"}, [3])
    # Another UIDVALIDITY (a folder made again with the same id), another mailbox: nothing.
    assert c.get(("a@x", 1, 8), [1]) == ({}, [1])
    assert c.get(("b@x", 1, 7), [1]) == ({}, [1])


def test_the_bound_evicts_the_least_recently_used_folder_and_counts_replacements() -> None:
    c = StructureCache(max_bytes=3 * (100 + 10))
    c.put(("m", 1, 1), {1: b"x" * 10})
    c.put(("m", 2, 1), {1: b"y" * 10})
    c.get(("m", 1, 1), [1])  # folder 1 is now the most recent
    c.put(("m", 1, 1), {1: b"z" * 10})  # a replacement: same size held
    assert c.held == 2 * 110
    c.put(("m", 3, 1), {1: b"w" * 10, 2: b"v" * 10})  # over the bound: folder 2 goes
    assert c.get(("m", 2, 1), [1]) == ({}, [1])
    assert c.get(("m", 1, 1), [1]) == ({1: b"z" * 10}, [])
    assert c.held == 3 * 110


@pytest.fixture
async def store(backend, tmp_path):
    async with scratch_database(backend, tmp_path) as url:
        engine = create_engine(url)
        st = Store(sessionmaker(engine))
        yield st, engine
        await st.close()
        await engine.dispose()


async def test_a_kept_structure_is_read_from_memory_and_only_by_its_mailbox(store) -> None:
    st, engine = store
    await st.write(
        [NewMessage(mailbox="c@x.test", folder="INBOX", content=b"m%d" % i, headers=OuterHeaders()) for i in range(3)]
    )
    inbox = await st.get_folder("c@x.test", "INBOX")
    assert await st.structures("c@x.test", inbox.id, [1, 2, 3]) == {}
    await st.keep_structures("c@x.test", inbox.id, {1: b"s1", 2: b"s2"})
    async with engine.begin() as c:  # the database changes behind the cache's back
        await c.execute(text("UPDATE message SET structure = :v"), {"v": b"db"})
    assert await st.structures("c@x.test", inbox.id, [1, 2, 3]) == {1: b"s1", 2: b"s2", 3: b"db"}
    assert await st.structures("other@x.test", inbox.id, [1, 2, 3]) == {}  # not its folder
    assert await st.structures("C@X.test", inbox.id, [3]) == {3: b"db"}  # now held too
