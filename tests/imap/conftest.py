"""Fixtures for the sans-IO IMAP tests: a core made of the real `Store` (SQLite in a temp
folder), `Events` and `MailAccess`, the real authentication exchange
(`mss.auth.CoreCredentials`), with stand-ins (`imap_fakes`) only for what needs the PKI:
certificate checks and encryption."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from imap_fakes import ALICE_CERT, Driver, open_test_core


@pytest.fixture
async def core(tmp_path):
    c = await open_test_core(tmp_path / "imap.db")
    yield c
    await c.aclose()


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
