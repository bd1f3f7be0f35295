"""A full disk is a temporary refusal: IMAP APPEND answers `NO [UNAVAILABLE]` (RFC 5530 3),
SMTP DATA `452 4.3.1` (RFC 3463 3.4 "mail system full"), nothing is stored, and once space
is back the same client succeeds.

The end-to-end test fills a real file system: the database (the SQLite file, or the
PostgreSQL database moved to a tablespace there) lives on a small tmpfs that the test fills
with a filler file. Mounting needs root (CAP_SYS_ADMIN); without it that test is skipped and
the detection tests below still run on the real errors: SQLite's SQLITE_FULL raised by
`PRAGMA max_page_count` (the same error code a full disk gives), and PostgreSQL's 53100
`disk_full` as asyncpg raises it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import imaplib
import re
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from mail import build_message, smtp_submission
from support import _pg_admin, drop_pg_database, start_server, stored_messages

from mss.refusals import Reason
from mss.storage_full import is_storage_full, storage_full_refusal

BIG = 6 * 1024 * 1024  # more than the SQLite WAL holds after the migrations: it must grow


# -- the errors themselves -----------------------------------------------------------------------


def _sqlite_full(tmp_path: Path) -> sqlite3.OperationalError:
    conn = sqlite3.connect(tmp_path / "tiny.db")
    try:
        conn.execute("PRAGMA max_page_count = 8")
        conn.execute("CREATE TABLE t (b BLOB)")
        with pytest.raises(sqlite3.OperationalError) as info:
            conn.execute("INSERT INTO t VALUES (?)", (b"x" * 100_000,))
        return info.value
    finally:
        conn.close()


def test_sqlite_full_is_storage_full_bare_and_wrapped_by_sqlalchemy(tmp_path):
    from sqlalchemy.exc import OperationalError

    exc = _sqlite_full(tmp_path)
    assert exc.sqlite_errorcode == sqlite3.SQLITE_FULL and "full" in str(exc)
    assert is_storage_full(exc)
    wrapped = OperationalError("INSERT ...", {}, exc)
    refusal = storage_full_refusal(wrapped)
    assert refusal is not None and refusal.reason is Reason.STORAGE_FULL and not refusal.reason.permanent


def test_postgresql_disk_full_sqlstate_is_storage_full():
    """Unit-level: asyncpg's own exception class for SQLSTATE 53100, as SQLAlchemy's adapter
    chains it (the end-to-end test below raises the real one on PostgreSQL)."""
    import asyncpg
    from sqlalchemy.exc import OperationalError

    pg = asyncpg.exceptions.DiskFullError("could not extend file: No space left on device")
    assert pg.sqlstate == "53100"
    try:
        raise RuntimeError("adapter") from pg
    except RuntimeError as adapted:
        assert is_storage_full(OperationalError("INSERT ...", {}, adapted))


def test_other_database_errors_are_not_storage_full(tmp_path):
    import asyncpg

    conn = sqlite3.connect(tmp_path / "x.db")
    try:
        with pytest.raises(sqlite3.OperationalError) as info:
            conn.execute("SELECT * FROM missing")
    finally:
        conn.close()
    assert not is_storage_full(info.value)
    assert not is_storage_full(asyncpg.exceptions.DeadlockDetectedError("deadlock"))
    assert storage_full_refusal(RuntimeError("boom")) is None


# -- a real full disk, through imaplib and smtplib ------------------------------------------------


@pytest.fixture
def small_disk():
    # Under /tmp itself: PostgreSQL's server (user postgres) must reach it, and pytest's
    # tmp_path is below a folder only root may enter.
    mount = Path(tempfile.mkdtemp(prefix="mss-full-disk-", dir="/tmp"))
    mount.chmod(0o755)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)
    mount.rmdir()


@pytest.fixture
def full_disk_server(fresh_deployment, small_disk):
    """`mss serve` of a deployment whose database is on `small_disk`."""
    dep = fresh_deployment
    tablespace = None
    if dep.backend == "sqlite":
        for f in dep.directory.glob("mss.db*"):
            shutil.move(str(f), small_disk / f.name)
        url = f"sqlite+aiosqlite:///{small_disk / 'mss.db'}"
        text = dep.config.read_text(encoding="utf-8")
        dep.config.write_text(re.sub(r'(?m)^database_url = ".*"$', f'database_url = "{url}"', text), encoding="utf-8")
        dep = dataclasses.replace(dep, database_url=url)
    else:
        shutil.chown(small_disk, "postgres", "postgres")
        tablespace = "mss_full_" + uuid.uuid4().hex[:8]
        name = dep.database_url.rsplit("/", 1)[1]
        asyncio.run(_pg_admin(f"CREATE TABLESPACE {tablespace} LOCATION '{small_disk}'"))
        asyncio.run(_pg_admin(f'ALTER DATABASE "{name}" SET TABLESPACE {tablespace}'))
    srv = start_server(dep)
    srv.deployment = dep
    try:
        yield srv
    finally:
        srv.stop()
        if tablespace is not None:
            drop_pg_database(dep.database_url.rsplit("/", 1)[1])
            asyncio.run(_pg_admin(f"DROP TABLESPACE IF EXISTS {tablespace}"))


def fill(directory: Path) -> Path:
    """Write a filler file until the file system is full."""
    filler = directory / "filler"
    chunk = b"\0" * (1 << 20)
    with filler.open("wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
    for _ in range(64):  # the last partial pages too
        try:
            with filler.open("ab") as f:
                f.write(b"\0" * 4096)
        except OSError:
            break
    return filler


def test_full_disk_is_a_temporary_refusal_on_imap_and_smtp(full_disk_server, small_disk):
    srv = full_disk_server
    dep = srv.deployment
    claire, paul = dep.mailbox("PER", 0), dep.mailbox("PER", 1)
    big_body = ("Résultats " + "x" * 70 + "\n") * (BIG // 81)
    draft, _ = build_message(claire["address"], [paul["address"]], "gros brouillon", big_body)
    mail, _ = build_message(claire["address"], [paul["address"]], "gros message", big_body)

    def count(address: str, folder: str) -> int:
        return len(asyncio.run(stored_messages(dep, address, folder)))

    drafts, inbox = count(claire["address"], "Drafts"), count(paul["address"], "INBOX")
    filler = fill(small_disk)
    m = imaplib.IMAP4_SSL(srv.host, srv.port("imaps"), ssl_context=dep.client_context(claire), timeout=60)
    try:
        m.authenticate("EXTERNAL", lambda _: b"")
        typ, data = m.append("Drafts", None, None, draft)
        assert typ == "NO" and data[0].startswith(b"[UNAVAILABLE] "), data
        assert b"SERVERBUG" not in data[0]
        with smtp_submission(srv, claire, timeout=60) as c:
            assert c.mail(claire["address"])[0] == 250
            assert c.rcpt(paul["address"])[0] == 250
            code, text = c.data(mail)
            assert (code, text[:6]) == (452, b"4.3.1 "), text
        filler.unlink()  # space is back: the same operations now succeed
        typ, data = m.append("Drafts", None, None, draft)
        assert typ == "OK", data
        with smtp_submission(srv, claire, timeout=60) as c:
            c.sendmail(claire["address"], [paul["address"]], mail)
    finally:
        m.logout()
    assert count(claire["address"], "Drafts") == drafts + 1
    assert count(paul["address"], "INBOX") == inbox + 1
    assert "the database cannot grow" in srv.log_text() + (dep.directory / "mss.log").read_text(errors="replace")
