"""The one-trip SQLite cursor (mss.db.sqlite_cursor) gives SQLAlchemy what the adapter's own
cursor gave: rows, rowcount (RETURNING included), lastrowid, executemany, translated errors,
and transactions that commit or roll back; with one trip to the connection's thread per
statement (counted on aiosqlite's queue)."""

from __future__ import annotations

import pytest
from sqlalchemy import exc, text

from mss.db.engine import create_engine
from mss.db.sqlite_cursor import OneTripConnection


@pytest.fixture
async def engine(tmp_path):
    e = create_engine(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    async with e.begin() as c:
        await c.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE)"))
    yield e
    await e.dispose()


async def test_rows_counts_and_ids_are_the_statements(engine):
    async with engine.begin() as c:
        assert type((await c.get_raw_connection()).dbapi_connection) is OneTripConnection
        r = await c.execute(text("INSERT INTO t (v) VALUES ('a')"))
        assert r.lastrowid == 1 and r.rowcount == 1
        r = await c.execute(text("INSERT INTO t (v) VALUES ('b'), ('c') RETURNING id, v"))
        assert r.all() == [(2, "b"), (3, "c")]
        await c.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "d"}, {"v": "e"}])  # executemany
        r = await c.execute(text("UPDATE t SET v = v || '!' WHERE id > 1"))
        assert r.rowcount == 4
        assert (await c.execute(text("SELECT count(*) FROM t"))).scalar() == 5
        assert (await c.execute(text("SELECT v FROM t WHERE id = 99"))).first() is None


async def test_errors_are_translated_and_the_transaction_rolls_back(engine):
    with pytest.raises(exc.IntegrityError):
        async with engine.begin() as c:
            await c.execute(text("INSERT INTO t (v) VALUES ('x')"))
            await c.execute(text("INSERT INTO t (v) VALUES ('x')"))
    with pytest.raises(exc.OperationalError):
        async with engine.connect() as c:
            await c.execute(text("SELECT * FROM missing"))
    async with engine.connect() as c:
        assert (await c.execute(text("SELECT count(*) FROM t"))).scalar() == 0


async def test_one_trip_per_statement(engine):
    async with engine.connect() as c:
        aconn = (await c.get_raw_connection()).driver_connection
        trips = 0
        execute = aconn._execute

        async def counting(fn, *args, **kwargs):
            nonlocal trips
            trips += 1
            return await execute(fn, *args, **kwargs)

        aconn._execute = counting
        try:
            for _ in range(10):
                (await c.execute(text("SELECT 1"))).scalar()
        finally:
            del aconn._execute
        assert trips == 10
