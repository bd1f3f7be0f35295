"""Another operator's MTA delivering to a full mailbox (the `mta` listener, real STARTTLS and
SERV certificates, the real core in process): `552 5.2.2` at RCPT, a permanent refusal its
queue reports to its sender; at DATA the recipients with room get the message and the
failure DSN is queued back to the peer with the null reverse-path (RFC 3461 6.2)."""

from __future__ import annotations

import asyncio
import smtplib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "smtp"))

from smtp_support import SmtpServer, client_context, message
from support import drop_pg_database, make_deployment

from annuaire.whitelist import import_whitelist
from crypto.pki import TestPKI
from mss.config import resolve_database_url
from mss.db.engine import create_engine, sessionmaker
from mss.demo import PEER_OPERATOR, whitelist_xml
from mss.queue import RelayQueue
from mss.store import Store, set_quota_limits

PEER = "peer.test"


@pytest.fixture(scope="module")
def env(backend, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"mta-quota-{backend}")
    dep, pg_name = make_deployment(tmp / "demo", backend)
    wl = tmp / "whitelist.xml"
    wl.write_bytes(whitelist_xml([dep.domain, PEER]))

    async def load() -> None:
        engine = create_engine(resolve_database_url(dep.database_url, dep.directory))
        try:
            await import_whitelist(engine, wl)
        finally:
            await engine.dispose()

    asyncio.run(load())
    pki = TestPKI.load(dep.directory / "pki" / "ca")
    good = pki.issue_serv(["mx.peer.test", PEER], PEER_OPERATOR.structure_id, PEER_OPERATOR.structure_name)
    cert, key = tmp / "good.crt", tmp / "good.key"
    good.write_pem(cert, key, with_chain=True)
    server = SmtpServer(dep).start()
    yield dep, server, cert, key
    server.close()
    if pg_name:
        drop_pg_database(pg_name)


async def _db(dep, work):
    engine = create_engine(resolve_database_url(dep.database_url, dep.directory))
    try:
        return await work(sessionmaker(engine))
    finally:
        await engine.dispose()


def set_storage(dep, address: str, limit: int | None) -> int:
    """Set the mailbox's storage limit (None: the default); returns its usage."""

    async def work(sessions):
        async with sessions() as s, s.begin():
            await set_quota_limits(s, address, {"storage": limit})
        store = Store(sessions)
        try:
            return (await store.quota(address)).storage_used
        finally:
            await store.close()

    return asyncio.run(_db(dep, work))


def usage(dep, address: str) -> int:
    async def work(sessions):
        store = Store(sessions)
        try:
            return (await store.quota(address)).storage_used
        finally:
            await store.close()

    return asyncio.run(_db(dep, work))


def queued_reports(dep) -> list:
    async def work(sessions):
        return [e for e in await RelayQueue(dep.settings(), sessions).list() if e.mail_from == "" and e.domain == PEER]

    return asyncio.run(_db(dep, work))


def peer(env) -> smtplib.SMTP:
    dep, server, cert, key = env
    client = smtplib.SMTP(server.host, server.port("mta"), local_hostname="mx.peer.test", timeout=20)
    client.ehlo()
    client.starttls(context=client_context(dep, cert, key))
    client.ehlo()
    return client


def test_a_full_mailbox_is_refused_at_rcpt_for_good(env):
    dep, server, _, _ = env
    paul, claire = dep.mailbox("PER", 1)["address"], dep.mailbox("PER", 0)["address"]
    client = peer(env)
    try:
        assert client.sendmail(f"claire@{PEER}", [paul], message(f"claire@{PEER}", paul)) == {}
    finally:
        client.quit()
    set_storage(dep, paul, usage(dep, paul))  # exactly full
    try:
        before = server.stored(claire)
        client = peer(env)
        try:
            assert client.mail(f"claire@{PEER}")[0] == 250
            code, text = client.rcpt(paul)
            assert (code, text) == (552, f"5.2.2 Mailbox <{paul}> is full".encode())
            assert client.rcpt(claire)[0] == 250
            assert client.data(message(f"claire@{PEER}", claire, subject="quota"))[0] == 250
        finally:
            client.quit()
        assert server.stored(claire) == before + 1
    finally:
        set_storage(dep, paul, None)


def test_at_data_the_others_get_it_and_the_peer_gets_a_dsn(env):
    dep, server, _, _ = env
    app, claire = dep.mailbox("APP")["address"], dep.mailbox("PER", 0)["address"]
    set_storage(dep, app, usage(dep, app) + 5000)  # room for a short message only
    try:
        app_before, claire_before, reports = server.stored(app), server.stored(claire), len(queued_reports(dep))
        long = message(f"claire@{PEER}", claire, subject="long", body=("y" * 99 + "\r\n") * 200)
        client = peer(env)
        try:
            assert client.mail(f"claire@{PEER}")[0] == 250
            assert client.rcpt(app)[0] == 250
            assert client.rcpt(claire)[0] == 250
            code, text = client.data(long)
            assert code == 250 and b"mailbox full: 1 recipient" in text, text
            # Alone, that recipient makes the message refused whole, permanently.
            assert client.mail(f"claire@{PEER}")[0] == 250
            assert client.rcpt(app)[0] == 250
            code, text = client.data(long)
            assert code == 552 and text.startswith(b"5.2.2 "), text
        finally:
            client.quit()
        assert server.stored(app) == app_before
        assert server.stored(claire) == claire_before + 1
        new = queued_reports(dep)[reports:]
        assert len(new) == 1 and [r.address for r in new[0].recipients] == [f"claire@{PEER}"]
    finally:
        set_storage(dep, app, None)
