"""Test support: demo deployments on SQLite or PostgreSQL and real `mss serve` processes.

Everything here is real: the PKI is made by `mss demo`, the server runs as its own process
on ephemeral ports of 127.0.0.1, and clients connect over TLS with client certificates.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"ready host=(\S+) ports=(\{.*\})")


def pg_admin_url() -> str | None:
    return os.environ.get("MSS_TEST_DATABASE_URL")


def backends() -> list[str]:
    return ["sqlite"] + (["postgresql"] if pg_admin_url() else [])


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(pg_admin_url()))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_pg_database() -> tuple[str, str]:
    """A fresh database for one deployment: (its name, its SQLAlchemy URL)."""
    name = "mss_test_" + uuid.uuid4().hex[:12]
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    base = pg_admin_url().rsplit("/", 1)[0]
    return name, f"{base}/{name}"


def drop_pg_database(name: str) -> None:
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@asynccontextmanager
async def scratch_database(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a fresh, migrated database of `backend` for one test: a SQLite file under
    `tmp_path`, or a PostgreSQL database of its own, dropped afterwards."""
    from mss.db.engine import upgrade

    pg_name = None
    if backend == "postgresql":
        pg_name, url = await asyncio.to_thread(create_pg_database)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    try:
        await upgrade(url)
        yield url
    finally:
        if pg_name:
            await asyncio.to_thread(drop_pg_database, pg_name)


@dataclass
class Deployment:
    directory: Path
    doc: dict
    database_url: str
    backend: str

    @property
    def config(self) -> Path:
        return self.directory / self.doc["config"]

    @property
    def domain(self) -> str:
        return self.doc["domain"]

    @property
    def trust_anchors(self) -> Path:
        return self.directory / self.doc["trust_anchors"]

    def mailbox(self, kind: str, index: int = 0) -> dict:
        return [m for m in self.doc["mailboxes"] if m["type"] == kind][index]

    def path(self, entry: dict, key: str) -> Path:
        return self.directory / entry[key]

    def client_context(
        self, entry: dict | None = None, *, cert: Path | None = None, key: Path | None = None
    ) -> ssl.SSLContext:
        """A client TLS context trusting the deployment's CA, with a client certificate."""
        ctx = ssl.create_default_context(cafile=str(self.trust_anchors))
        if entry is not None:
            ctx.load_cert_chain(self.path(entry, "tls_cert"), self.path(entry, "tls_key"))
        elif cert is not None:
            ctx.load_cert_chain(cert, key)
        return ctx

    def settings(self):
        from mss.config import load_settings

        return load_settings(self.config)


def make_deployment(tmp: Path, backend: str, *, patients: bool = False) -> tuple[Deployment, str | None]:
    """A demo deployment; `patients` adds the demo's patient spaces (RSA-3072 keys and
    PBKDF2 at full cost: a few seconds, so only where a test needs them)."""
    from mss.demo import create_demo

    pg_name = None
    url = "sqlite+aiosqlite:///mss.db"
    if backend == "postgresql":
        pg_name, url = create_pg_database()
    doc = create_demo(tmp, base_port=0, database_url=url, patients=patients)
    return Deployment(tmp, doc, url, backend), pg_name


@dataclass
class ServerProcess:
    deployment: Deployment
    proc: subprocess.Popen
    host: str
    ports: dict[str, int]
    stderr_path: Path
    extra: dict = field(default_factory=dict)

    def port(self, name: str) -> int:
        return self.ports[name]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log_text(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")


def start_server(deployment: Deployment, *, timeout: float = 60, env: dict | None = None) -> ServerProcess:
    """Start `python -m mss serve -c CONFIG` and wait for its `ready` line."""
    n = len(list(deployment.directory.glob("serve-*.err")))
    err = deployment.directory / f"serve-{n}.err"
    fh = err.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mss", "serve", "-c", str(deployment.config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=fh,
        env={**os.environ, **(env or {})},
    )
    fh.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = err.read_text(encoding="utf-8", errors="replace")
        m = READY.search(text)
        if m:
            return ServerProcess(deployment, proc, m.group(1), json.loads(m.group(2)), err)
        if proc.poll() is not None:
            raise RuntimeError(f"mss serve exited with {proc.returncode}:\n{text}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"mss serve not ready after {timeout}s:\n{err.read_text()}")


async def stored_messages(deployment: Deployment, mailbox: str, folder: str = "INBOX") -> list[bytes]:
    """The stored bytes of every message in a folder, read through the store."""
    from mss.config import resolve_database_url
    from mss.db.engine import create_engine, sessionmaker
    from mss.store import Store

    engine = create_engine(resolve_database_url(deployment.database_url, deployment.directory))
    try:
        store = Store(sessionmaker(engine))
        info = await store.get_folder(mailbox, folder)
        if info is None:
            return []
        metas = await store.messages(mailbox, info.id)
        content = await store.content(mailbox, info.id, [m.uid for m in metas])
        return [content[m.uid] for m in metas]
    finally:
        await engine.dispose()


def new_app_password(deployment: Deployment, address: str, *, label: str = "tests") -> str:
    """A new app password for `address`, made through the core's credential store (as
    `mss mailbox app-password` does), for tests that log in with PLAIN/LOGIN."""
    from mss.config import resolve_database_url
    from mss.credentials import create_app_password
    from mss.db.engine import create_engine, sessionmaker

    async def make() -> str:
        engine = create_engine(resolve_database_url(deployment.database_url, deployment.directory))
        try:
            async with sessionmaker(engine)() as s, s.begin():
                _, password = await create_app_password(s, address, label=label)
            return password
        finally:
            await engine.dispose()

    return asyncio.run(make())


def count_messages(deployment: Deployment, mailbox: str, folder: str = "INBOX") -> int:
    return len(asyncio.run(stored_messages(deployment, mailbox, folder)))


_SCAN = r"""
import json, sys
from pathlib import Path
root, needles = Path(sys.argv[1]), [bytes.fromhex(n) for n in sys.argv[2:]]
scanned, found = [], []
for path in sorted(root.rglob("*")):
    if path.is_file():
        data = path.read_bytes()
        scanned.append(str(path))
        found += [[str(path), n.hex()] for n in needles if n in data]
print(json.dumps({"scanned": scanned, "found": found}))
"""


def scan_files(root: Path, needles: list[bytes]) -> tuple[list[Path], list[tuple[Path, bytes]]]:
    """(every file below `root`, the (file, needle) pairs found), read by a CHILD process.

    Never read a live SQLite file in the test process: closing any descriptor of it drops
    every POSIX lock the process holds on it, including those of the in-process servers'
    connections (sqlite.org/howtocorrupt.html, 2.2), after which their view of the WAL is
    wrong and committed rows look missing.
    """
    out = subprocess.run(
        [sys.executable, "-c", _SCAN, str(root), *(n.hex() for n in needles)],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    doc = json.loads(out)
    return [Path(p) for p in doc["scanned"]], [(Path(p), bytes.fromhex(n)) for p, n in doc["found"]]


def run_alembic(url: str, verb: str, revision: str) -> None:
    """`alembic upgrade|downgrade REVISION` on `url`, as `mss db upgrade` configures it."""
    from alembic import command

    from mss.db.engine import _alembic_config

    getattr(command, verb)(_alembic_config(url), revision)
