"""Migration 0004 converts a store written by earlier versions: flags text -> system flag
columns + keyword rows, UIDVALIDITY counter above every value handed out; and back."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from support import run_alembic

from mss.db.engine import create_engine, sessionmaker
from mss.records import NewMessage, OuterHeaders
from mss.store import Store


@pytest.fixture
def url(empty_database_url: str) -> str:
    return empty_database_url


_alembic = run_alembic


OLD_ROWS = [
    # uid, flags as the old schema kept them
    (1, ""),
    (2, "\\Seen"),
    (3, "$Forwarded \\Answered \\Seen"),
    (4, "$NotDeleted Work \\Deleted"),
    (5, "k" * 300 + "a " + "k" * 300 + "b"),  # two keywords the 255-character cut makes one
]


async def test_0004_converts_flags_and_starts_the_counter_above_old_uidvalidities(url):
    await asyncio.to_thread(_alembic, url, "upgrade", "0003")
    engine = create_engine(url)
    try:
        async with engine.begin() as c:
            await c.execute(
                text(
                    "INSERT INTO folder (mailbox, name, uidvalidity, uidnext, highestmodseq, subscribed) "
                    "VALUES ('old@x.test', 'INBOX', 3999999000, 6, 6, true)"
                )
            )
            fid = (await c.execute(text("SELECT id FROM folder"))).scalar_one()
            for uid, flags in OLD_ROWS:
                await c.execute(
                    text(
                        "INSERT INTO message (folder_id, uid, modseq, flags, internaldate, size, content, hdr_from, "
                        "hdr_to, hdr_cc, hdr_subject, hdr_date, hdr_message_id) VALUES (:f, :uid, :uid, :flags, "
                        "'2026-11-02 10:00:00+00:00', 1, :c, '', '', '', '[...]', '', '')"
                    ),
                    {"f": fid, "uid": uid, "flags": flags, "c": b"x"},
                )
    finally:
        await engine.dispose()

    await asyncio.to_thread(_alembic, url, "upgrade", "head")
    engine = create_engine(url)
    store = Store(sessionmaker(engine))
    try:
        metas = {m.uid: m.flags for m in await store.messages("old@x.test", fid)}
        assert metas == {
            1: frozenset(),
            2: frozenset({"\\Seen"}),
            3: frozenset({"$Forwarded", "\\Answered", "\\Seen"}),
            4: frozenset({"$NotDeleted", "Work", "\\Deleted"}),
            5: frozenset({"k" * 255}),
        }
        assert (await store.get_folder("old@x.test", "INBOX")).unseen == 3
        assert await store.expunge("old@x.test", fid) == [4]  # $NotDeleted is not \Deleted
        new = await store.create_folder("old@x.test", "Later")
        assert new.uidvalidity == 4_000_000_001  # above any time-based value, deleted folders' too
        async with engine.connect() as c:
            tables = await c.run_sync(lambda sc: __import__("sqlalchemy").inspect(sc).get_table_names())
        assert "mail_event" not in tables and "message_keyword" in tables
        await store.write([NewMessage("old@x.test", "INBOX", b"y", OuterHeaders(), frozenset({"\\Flagged", "k"}))])
    finally:
        await store.close()
        await engine.dispose()

    # And back: the flags come home as text.
    await asyncio.to_thread(_alembic, url, "downgrade", "0003")
    engine = create_engine(url)
    try:
        async with engine.connect() as c:
            rows = dict((await c.execute(text("SELECT uid, flags FROM message ORDER BY uid"))).all())
        assert rows == {1: "", 2: "\\Seen", 3: "$Forwarded \\Answered \\Seen", 5: "k" * 255, 6: "\\Flagged k"}
    finally:
        await engine.dispose()


async def test_0012_decodes_modified_utf7_folder_names(url):
    from imap.mutf7 import encode

    await asyncio.to_thread(_alembic, url, "upgrade", "0011")
    names = {
        encode("Envoyés"): "Envoyés",
        encode("Patients/Éric & Zoé"): "Patients/Éric & Zoé",
        "A&B": "A&B",  # not modified UTF-7: kept
        "&AGE-": "&AGE-",  # encodes printable ASCII: not canonical, kept
        encode("Reçus"): encode("Reçus"),  # "Reçus" exists already: kept, no collision
        "Reçus": "Reçus",
        "INBOX": "INBOX",
    }
    engine = create_engine(url)
    try:
        async with engine.begin() as c:
            for i, name in enumerate(names):
                await c.execute(
                    text(
                        "INSERT INTO folder (mailbox, name, uidvalidity, uidnext, highestmodseq, subscribed) "
                        "VALUES ('n@x.test', :n, :v, 1, 1, true)"
                    ),
                    {"n": name, "v": 100 + i},
                )
            await c.execute(
                text(
                    "INSERT INTO folder (mailbox, name, uidvalidity, uidnext, highestmodseq, subscribed) "
                    "VALUES ('other@x.test', :n, 1, 1, 1, true)"
                ),
                {"n": encode("Envoyés")},
            )
    finally:
        await engine.dispose()
    await asyncio.to_thread(_alembic, url, "upgrade", "head")
    engine = create_engine(url)
    try:
        async with engine.begin() as c:
            got = {(m, n) for m, n in (await c.execute(text("SELECT mailbox, name FROM folder"))).all()}
    finally:
        await engine.dispose()
    assert got == {("n@x.test", v) for v in names.values()} | {("other@x.test", "Envoyés")}


async def test_0013_counts_the_stored_messages_of_each_mailbox_and_goes_back(url):
    await asyncio.to_thread(_alembic, url, "upgrade", "0012")
    engine = create_engine(url)
    try:
        async with engine.begin() as c:
            for mailbox, name, uidvalidity in (
                ("a@x.test", "INBOX", 1),
                ("a@x.test", "Work", 2),
                ("b@x.test", "INBOX", 3),
            ):
                await c.execute(
                    text(
                        "INSERT INTO folder (mailbox, name, uidvalidity, uidnext, highestmodseq, subscribed) "
                        "VALUES (:m, :n, :v, 2, 2, true)"
                    ),
                    {"m": mailbox, "n": name, "v": uidvalidity},
                )
            ids = dict((await c.execute(text("SELECT mailbox || '/' || name, id FROM folder"))).all())
            for key, uid, size in (("a@x.test/INBOX", 1, 100), ("a@x.test/Work", 1, 250), ("b@x.test/INBOX", 1, 7)):
                await c.execute(
                    text(
                        "INSERT INTO message (folder_id, uid, modseq, internaldate, size, content, hdr_from, hdr_to, "
                        "hdr_cc, hdr_subject, hdr_date, hdr_message_id) VALUES (:f, :uid, 1, "
                        "'2026-11-02 10:00:00+00:00', :size, :c, '', '', '', '[...]', '', '')"
                    ),
                    {"f": ids[key], "uid": uid, "size": size, "c": b"x" * size},
                )
    finally:
        await engine.dispose()

    await asyncio.to_thread(_alembic, url, "upgrade", "head")
    await asyncio.to_thread(_alembic, url, "upgrade", "head")  # a second run changes nothing
    engine = create_engine(url)
    store = Store(sessionmaker(engine))
    try:
        a, b = await store.quota("a@x.test"), await store.quota("b@x.test")
        assert (a.storage_used, a.messages_used, b.storage_used, b.messages_used) == (350, 2, 7, 1)
        await store.write([NewMessage("a@x.test", "INBOX", b"y" * 50, OuterHeaders())])
        assert (await store.quota("a@x.test")).storage_used == 400
    finally:
        await store.close()
        await engine.dispose()

    await asyncio.to_thread(_alembic, url, "downgrade", "0012")
    engine = create_engine(url)
    try:
        async with engine.connect() as c:
            tables = await c.run_sync(lambda sc: __import__("sqlalchemy").inspect(sc).get_table_names())
            messages = (await c.execute(text("SELECT count(*) FROM message"))).scalar_one()
        assert "mailbox_usage" not in tables and messages == 4
    finally:
        await engine.dispose()
    await asyncio.to_thread(_alembic, url, "upgrade", "head")  # and up again, counted anew
    engine = create_engine(url)
    store = Store(sessionmaker(engine))
    try:
        assert (await store.quota("a@x.test")).storage_used == 400
    finally:
        await store.close()
        await engine.dispose()


async def test_0014_gives_existing_members_the_write_grant_and_goes_back(url):
    await asyncio.to_thread(_alembic, url, "upgrade", "0013")
    engine = create_engine(url)
    try:
        async with engine.begin() as c:
            for address, kind in (("org@x.test", "ORG"), ("a@x.test", "PER")):
                await c.execute(
                    text(
                        "INSERT INTO local_mailbox (address, type, display_name, sent_copy, red_list, created_at) "
                        "VALUES (:a, :t, '', false, false, '2026-11-02 10:00:00+00:00')"
                    ),
                    {"a": address, "t": kind},
                )
            await c.execute(
                text("INSERT INTO local_mailbox_member (mailbox, member) VALUES ('org@x.test', 'a@x.test')")
            )
    finally:
        await engine.dispose()

    await asyncio.to_thread(_alembic, url, "upgrade", "head")
    engine = create_engine(url)
    store = Store(sessionmaker(engine))
    try:
        async with engine.connect() as c:
            rights = (await c.execute(text("SELECT rights FROM local_mailbox_member"))).scalar_one()
        assert rights == "lrswikxte"
        refs = await store.write([NewMessage("org@x.test", "INBOX", b"y", OuterHeaders())])
        await store.set_flags("org@x.test", refs[0].folder_id, [1], {"\\Seen"}, "add", reader="810000000001")
        async with engine.begin() as c:
            await c.execute(text("UPDATE local_mailbox_member SET rights = 'lr'"))
    finally:
        await store.close()
        await engine.dispose()
    # 0014 run a second time for real (SQLite runs DDL outside the migration's transaction,
    # so a crash can leave it half done): it changes nothing, keeps the rows written since.
    await asyncio.to_thread(_alembic, url, "stamp", "0013")
    await asyncio.to_thread(_alembic, url, "upgrade", "head")
    engine = create_engine(url)
    store = Store(sessionmaker(engine))
    try:
        async with engine.connect() as c:
            rights = (await c.execute(text("SELECT rights FROM local_mailbox_member"))).scalar_one()
            version = (await c.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        assert (rights, version) == ("lr", "0014")
        (meta,) = await store.messages("org@x.test", refs[0].folder_id, reader="810000000001")
        assert "\\Seen" in meta.flags
    finally:
        await store.close()
        await engine.dispose()

    await asyncio.to_thread(_alembic, url, "downgrade", "0013")
    engine = create_engine(url)
    try:
        async with engine.connect() as c:
            tables = await c.run_sync(lambda sc: __import__("sqlalchemy").inspect(sc).get_table_names())
            columns = await c.run_sync(
                lambda sc: [
                    col["name"] for col in __import__("sqlalchemy").inspect(sc).get_columns("local_mailbox_member")
                ]
            )
            members = (await c.execute(text("SELECT count(*) FROM local_mailbox_member"))).scalar_one()
        assert "message_seen" not in tables and "member_subscription" not in tables
        assert "rights" not in columns and members == 1
    finally:
        await engine.dispose()
    await asyncio.to_thread(_alembic, url, "upgrade", "head")  # and up again
