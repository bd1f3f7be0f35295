"""A node whose PostgreSQL goes away answers with temporary replies and comes back by itself.

The node reaches the database through a TCP relay run by the test (`Cut`), so the outage is
real on the wire (connections reset, new ones refused) without touching the machine's
PostgreSQL, which other tests use. While the link is cut: SMTP submission answers `451`
(RFC 5321 4.2.5: the client keeps the message and tries again), IMAP answers `NO` and the
connection stays usable, and nothing is half-written. Once it is back: the same clients, on new
connections, are served again without restarting the node (the pool's pre-ping replaces dead
connections, and the cluster-events link reconnects).

PostgreSQL only, slow (one server process).
"""

from __future__ import annotations

import asyncio
import imaplib
import re
import smtplib
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from mail import build_message, smtp_submission
from support import Deployment, create_pg_database, drop_pg_database, pg_admin_url, start_server, stored_messages

from mss.demo import create_demo

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(pg_admin_url() is None, reason="needs PostgreSQL (MSS_TEST_DATABASE_URL)"),
]


class Cut:
    """A TCP relay to PostgreSQL that the test can cut (reset every link, refuse new ones)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.links: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.links += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.up = False
        with self.lock:
            for s in self.links:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    s.close()  # RST
                except OSError:
                    pass
            self.links.clear()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[tuple[Deployment, object, Cut]]:
    tmp = tmp_path_factory.mktemp("outage")
    name, url = create_pg_database()
    m = re.match(r"(postgresql\+asyncpg://[^@]*@)([^:/]+):(\d+)(/.*)", url)
    assert m, url
    cut = Cut((m.group(2), int(m.group(3))))
    proxied = f"{m.group(1)}127.0.0.1:{cut.port}{m.group(4)}"
    doc = create_demo(tmp, base_port=0, database_url=proxied, patients=False)
    dep = Deployment(tmp, doc, proxied, "postgresql")
    srv = start_server(dep)
    try:
        yield dep, srv, cut
    finally:
        srv.stop()
        cut.close()
        drop_pg_database(name)


def _imap(srv, dep: Deployment, entry: dict) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL(srv.host, srv.port("imaps"), ssl_context=dep.client_context(entry), timeout=30)
    m.authenticate("EXTERNAL", lambda _: b"")
    return m


def test_an_unreachable_database_gives_temporary_replies_then_service_resumes(node) -> None:
    dep, srv, cut = node
    alice, bob = dep.mailbox("PER", 0), dep.mailbox("PER", 1)
    reader = _imap(srv, dep, alice)
    assert reader.select("INBOX")[0] == "OK"

    cut.cut()
    raw, msgid = build_message(bob["address"], [alice["address"]], "during the outage", "x")
    with pytest.raises((smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused)) as refused:
        with smtp_submission(srv, bob) as client:
            client.sendmail(bob["address"], [alice["address"]], raw)
    exc = refused.value
    codes = (
        [exc.smtp_code] if isinstance(exc, smtplib.SMTPResponseException) else [c for c, _ in exc.recipients.values()]
    )
    assert codes and all(400 <= c < 500 for c in codes), f"a temporary reply, not {exc}"
    # IMAP: a NO for the command, and the connection goes on.
    typ, data = reader.uid("SEARCH", "ALL")
    assert typ == "NO", (typ, data)
    assert b"UNAVAILABLE" in data[0] or b"try again" in data[0].lower(), data

    # HTTP (directory API, portal): 503 with Retry-After, not a 500.
    url = f"http://{srv.host}:{srv.port('http')}/annuaire/resolve?address={alice['address']}"
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(url, timeout=30)
    assert http.value.code == 503 and http.value.headers["Retry-After"], http.value

    cut.restore()
    deadline = time.monotonic() + 30
    while True:
        try:
            with smtp_submission(srv, bob) as client:
                assert client.sendmail(bob["address"], [alice["address"]], raw) == {}
            break
        except (smtplib.SMTPException, OSError):
            assert time.monotonic() < deadline, "the node did not come back after the database did"
            time.sleep(0.5)
    typ, data = reader.uid("SEARCH", "ALL")
    assert typ == "OK", (typ, data)
    assert urllib.request.urlopen(url, timeout=30).status == 200
    reader.logout()
    stored = asyncio.run(stored_messages(dep, alice["address"]))
    assert sum(msgid.encode() in m for m in stored) == 1  # once: nothing was half-written, nothing twice
