"""Directory tests run on a real SQLite file, and on PostgreSQL too when
MSS_TEST_DATABASE_URL names a server (each test gets its own scratch database there)."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

from mss.db.engine import create_engine, sessionmaker, upgrade

sys.path.insert(0, str(Path(__file__).parent))

from annuaire_support import ACTIVITY_FILE, MAILBOX_FILE

PG_URL = os.environ.get("MSS_TEST_DATABASE_URL", "")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


async def _pg_scratch() -> tuple[str, str]:
    import asyncpg

    name = "mss_ann_" + uuid.uuid4().hex[:12]
    raw = PG_URL.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(raw)
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    return PG_URL.rsplit("/", 1)[0] + "/" + name, name


async def _pg_drop(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
    await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await conn.close()


@pytest.fixture(params=BACKENDS)
async def db_url(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'mss.db'}"
        await upgrade(url)
        yield url
    else:
        url, name = await _pg_scratch()
        await upgrade(url)
        yield url
        await _pg_drop(name)


@pytest.fixture
async def engine(db_url):
    e = create_engine(db_url)
    yield e
    await e.dispose()


@pytest.fixture
def session_factory(engine):
    return sessionmaker(engine)


@pytest.fixture
async def loaded(engine):
    """The fixture files imported."""
    from annuaire.importer import import_files

    return await import_files(engine, [MAILBOX_FILE, ACTIVITY_FILE])
