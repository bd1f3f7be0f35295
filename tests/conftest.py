"""Shared fixtures. Deployment-based tests run once per database backend: SQLite always,
PostgreSQL too when MSS_TEST_DATABASE_URL is set (`.ci/run` sets it when PostgreSQL answers).

- `deployment`: a demo deployment (`mss demo`), one per backend for the session.
- `server`: a running `mss serve` for that deployment, with its real ports.
- `fresh_deployment`: a private deployment for tests that kill or restart the server.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support import (
    Deployment,
    ServerProcess,
    backends,
    create_pg_database,
    drop_pg_database,
    make_deployment,
    start_server,
)


@pytest.fixture(scope="session", params=backends())
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def deployment(backend, tmp_path_factory) -> Deployment:
    dep, pg_name = make_deployment(tmp_path_factory.mktemp(f"demo-{backend}"), backend, patients=True)
    yield dep
    if pg_name:
        drop_pg_database(pg_name)


@pytest.fixture(scope="session")
def server(deployment) -> ServerProcess:
    srv = start_server(deployment)
    yield srv
    srv.stop()


@pytest.fixture
def fresh_deployment(backend, tmp_path) -> Deployment:
    dep, pg_name = make_deployment(tmp_path / "demo", backend)
    yield dep
    if pg_name:
        drop_pg_database(pg_name)


@pytest.fixture
async def empty_database_url(backend, tmp_path):
    """A database of this backend with nothing in it (migration tests build on it)."""
    pg_name = None
    if backend == "postgresql":
        pg_name, url = await asyncio.to_thread(create_pg_database)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    yield url
    if pg_name:
        await asyncio.to_thread(drop_pg_database, pg_name)
