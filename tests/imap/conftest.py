"""Fixtures for the sans-IO IMAP tests: a core made of the real `Store` (SQLite in a temp
folder), `Events` and `MailAccess`, the real authentication exchange
(`mss.auth.CoreCredentials`), with stand-ins (`imap_fakes`) only for what needs the PKI:
certificate checks and encryption."""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from dataclasses import dataclass

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from imap_fakes import ALICE_CERT, Driver, FakeAuth, FakeSealer  # noqa: E402
from mss.auth import CoreCredentials  # noqa: E402
from mss.config import Settings  # noqa: E402
from mss.db.engine import create_engine, sessionmaker  # noqa: E402
from mss.db.models import Base  # noqa: E402
from mss.events import Events  # noqa: E402
from mss.mailaccess import MailAccessService  # noqa: E402
from mss.message import outer_headers  # noqa: E402
from mss.records import NewMessage, StoredRef  # noqa: E402
from mss.store import Store  # noqa: E402


@dataclass
class ImapTestCore:
    """The services the IMAP front end is given (`mss.services.ImapServices`), plus the
    store and the sealer for the tests to look behind them."""

    settings: Settings
    store: Store
    events: Events
    auth: FakeAuth
    credentials: CoreCredentials
    sealer: FakeSealer
    mail: MailAccessService

    def server_ssl_context(self):  # pragma: no cover - the sans-IO tests have no sockets
        raise NotImplementedError

    async def deliver(self, mailbox: str, raw: bytes, folder: str = "INBOX", flags=(), when=None) -> StoredRef:
        refs = await self.store.write(
            [NewMessage(mailbox, folder, raw, outer_headers(raw), frozenset(flags),
                        when or datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc))]
        )
        return refs[0]


@pytest.fixture
async def core(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'imap.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    events = Events()
    store = Store(sessionmaker(engine), events)
    sealer = FakeSealer()
    auth = FakeAuth()
    # The real core exchange (`CoreCredentials`) over a fake credential checker.
    c = ImapTestCore(
        Settings(domain="test.mss"), store, events, auth, CoreCredentials(auth), sealer, MailAccessService(store, sealer)
    )
    yield c
    await store.close()
    await engine.dispose()


@pytest.fixture
def make_session(core):
    from imap.session import Session

    def make(*, tls: bool = True, cert: bytes | None = ALICE_CERT) -> Driver:
        s = Session(core, tls=tls, starttls=not tls, peer="test")
        if tls:
            s.tls_started(cert)
        return Driver(s)

    return make


@pytest.fixture
async def alice(make_session):
    """A session authenticated as Alice (default mailbox), nothing selected."""
    d = make_session()
    out = await d.line("a0 AUTHENTICATE EXTERNAL =")
    assert "a0 OK" in out, out
    return d
