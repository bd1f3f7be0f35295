"""Engines for SQLite (embedded default) and PostgreSQL, and migrations at start-up."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from mss.db.sqlite_cursor import use_one_trip_cursors

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine; SQLite gets WAL with full fsync so that a commit is durable."""
    if is_sqlite(url):
        # A pool large enough for the concurrent sessions: with aiosqlite each connection is
        # a thread, and overflow connections are opened and closed per checkout (churn).
        engine = create_async_engine(url, echo=echo, pool_size=20, max_overflow=10, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # One trip to the connection's thread per statement (mss.db.sqlite_cursor).
            use_one_trip_cursors(dbapi_conn)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at every commit, so a 250 survives a power cut.
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # pre_ping: a pooled connection that died while PostgreSQL was away is replaced, not used;
    # a 10 s connect timeout (asyncpg waits 60 s) turns an unreachable server into a temporary
    # reply soon (docs/scale.md).
    return create_async_engine(
        url, echo=echo, pool_size=20, max_overflow=10, pool_pre_ping=True, connect_args={"timeout": 10}
    )


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade_sync(url: str) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    from alembic import command

    command.upgrade(_alembic_config(url), "head")


async def upgrade(url: str) -> None:
    await asyncio.to_thread(upgrade_sync, url)
