"""Two `mss serve` nodes sharing the local PostgreSQL (`mss demo --nodes 2`), end to end.

Each node is its own process with its own ports; they share the database, the PKI and the
keys. What one node commits reaches the other's sessions through LISTEN/NOTIFY
(`mss.cluster_events`): an IDLE session on node 2 sees a delivery made on node 1, and a flag
change made on node 1, within a second. A node killed with SIGKILL mid-load loses no message
it acknowledged, and the other node keeps serving. A revoked certificate is refused by both
nodes once they re-read the CRLs.

PostgreSQL only (SQLite is one process's) and slow: run once, not per backend.
"""

from __future__ import annotations

import asyncio
import imaplib
import json
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from mail import build_message, imap_login, send, smtp_submission
from support import (
    ROOT,
    Deployment,
    ServerProcess,
    create_pg_database,
    drop_pg_database,
    pg_admin_url,
    start_server,
    stored_messages,
)

from mss.demo import _import_whitelist, create_demo, update_relay_config, whitelist_xml

#: Another operator of the trust space, played by an SMTP server in this process (`Sink`).
SINK_DOMAIN = "sink-operator.mssante.test"
#: A lease a killed node gives back within seconds, a short poll (tests/relay/test_two_operators.py).
FAST_RELAY = {"retry_schedule_s": [1.0], "poll_interval_s": 0.5, "lease_s": 5, "connect_timeout_s": 5}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(pg_admin_url() is None, reason="two nodes need PostgreSQL (MSS_TEST_DATABASE_URL)"),
]


class Sink:
    """The other operator's `mta` listener: STARTTLS with a SERV certificate of the same test
    PKI (so MSS's relay client accepts it), every message kept; with `hold` set, DATA is held
    unanswered (the sending node is then killed mid-delivery)."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.held = threading.Event()
        self.received: list[bytes] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.hold.is_set():
            self.held.set()
            await asyncio.sleep(60)  # the sender dies meanwhile: no reply ever reaches it
            return "451 4.3.0 held"
        self.received.append(envelope.content)
        return "250 2.0.0 OK"


def start_sink(pki_dir: Path, folder: Path) -> tuple[Sink, Controller]:
    from crypto.pki import TestPKI
    from mss.demo import structure_id

    serv = TestPKI.load(pki_dir).issue_serv(
        ["localhost", SINK_DOMAIN], structure_id("69000794"), "SINK OPERATOR", ip_addresses=["127.0.0.1"]
    )
    serv.write_pem(folder / "sink.crt", folder / "sink.key", with_chain=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(folder / "sink.crt", folder / "sink.key")
    sink = Sink()
    with socket.socket() as probe:  # aiosmtpd's Controller cannot be told "ephemeral"
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(sink, hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True)
    controller.start()
    return sink, controller


class Cluster:
    def __init__(self, nodes: list[Deployment], pg_name: str, sink: Sink, controller: Controller) -> None:
        self.nodes = nodes
        self.pg_name = pg_name
        self.sink = sink
        self.controller = controller
        self.servers: list[ServerProcess | None] = [None] * len(nodes)

    def start(self, k: int) -> ServerProcess:
        srv = start_server(self.nodes[k])
        self.servers[k] = srv
        return srv

    def server(self, k: int) -> ServerProcess:
        srv = self.servers[k]
        assert srv is not None and srv.proc.poll() is None, f"node {k + 1} is not running"
        return srv

    def stop_all(self) -> None:
        for srv in self.servers:
            if srv is not None:
                srv.stop()
        self.controller.stop()
        drop_pg_database(self.pg_name)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("nodes")
    name, url = create_pg_database()
    doc = create_demo(tmp, base_port=0, database_url=url, patients=False, nodes=2)
    assert [n["config"] for n in doc["nodes"]] == ["mss.toml", "node2.toml"]
    sink, controller = start_sink(tmp / "pki" / "ca", tmp)
    (tmp / "whitelist.xml").write_bytes(whitelist_xml([doc["domain"], SINK_DOMAIN]))
    asyncio.run(_import_whitelist(url, tmp / "whitelist.xml"))
    for n in doc["nodes"]:
        # CRLs re-read every second, so the revocation test does not wait a minute.
        path = tmp / n["config"]
        path.write_text(path.read_text().replace("crl_refresh_s = 60", "crl_refresh_s = 1"))
        update_relay_config(path, routes={SINK_DOMAIN: f"localhost:{controller.port}"}, **FAST_RELAY)
    nodes = [Deployment(tmp, {**doc, "config": n["config"]}, url, "postgresql") for n in doc["nodes"]]
    c = Cluster(nodes, name, sink, controller)
    try:
        c.start(0)
        c.start(1)
        yield c
    finally:
        c.stop_all()


def test_idle_on_one_node_sees_a_delivery_made_on_the_other(cluster: Cluster) -> None:
    dep = cluster.nodes[0]
    alice, bob = dep.mailbox("PER", 0), dep.mailbox("PER", 1)
    watcher = imap_login(cluster.server(1), alice)
    try:
        exists = int(re.search(rb"\* (\d+) EXISTS", b"\n".join(watcher.command("SELECT INBOX"))).group(1))
        watcher.idle()
        _, acked = send(cluster.server(0), bob, alice["address"], "across nodes")
        line, seen = watcher.wait_for(rb"^\* \d+ EXISTS", timeout=10)
        assert int(line.split()[1]) == exists + 1
        assert seen - acked < 1.0, f"node 2 saw node 1's delivery {seen - acked:.3f}s after the 250"
        watcher.done()
    finally:
        watcher.close()


def test_a_flag_change_on_one_node_reaches_a_session_selected_on_the_other(cluster: Cluster) -> None:
    dep = cluster.nodes[0]
    alice, bob = dep.mailbox("PER", 0), dep.mailbox("PER", 1)
    send(cluster.server(0), bob, alice["address"], "to be flagged")
    watcher = imap_login(cluster.server(1), alice)
    try:
        exists = int(re.search(rb"\* (\d+) EXISTS", b"\n".join(watcher.command("SELECT INBOX"))).group(1))
        watcher.idle()
        ctx = dep.client_context(alice)
        m = imaplib.IMAP4_SSL(cluster.server(0).host, cluster.server(0).port("imaps"), ssl_context=ctx, timeout=20)
        try:
            m.authenticate("EXTERNAL", lambda _: b"")
            m.select("INBOX")
            typ, _ = m.store(str(exists), "+FLAGS", "(\\Flagged)")
            assert typ == "OK"
            stored = time.monotonic()
        finally:
            m.logout()
        line, seen = watcher.wait_for(rb"^\* %d FETCH \(.*\\Flagged" % exists, timeout=10)
        assert seen - stored < 1.0, f"node 2 saw the flag {seen - stored:.3f}s after node 1's OK"
        watcher.done()
    finally:
        watcher.close()


def test_a_node_killed_mid_load_loses_nothing_and_the_other_keeps_serving(cluster: Cluster) -> None:
    dep = cluster.nodes[0]
    alice, bob = dep.mailbox("PER", 0), dep.mailbox("PER", 1)
    victim = cluster.server(0)
    acked: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            raw, msgid = build_message(bob["address"], [alice["address"]], "load", ("x" * 70 + "\n") * 30)
            try:
                with smtp_submission(victim, bob, timeout=10) as client:
                    for _ in range(50):
                        client.sendmail(bob["address"], [alice["address"]], raw)
                        acked.append(msgid)  # only after the 250
                        raw, msgid = build_message(bob["address"], [alice["address"]], "load", ("x" * 70 + "\n") * 30)
            except (OSError, smtplib.SMTPException) as exc:
                errors.append(exc)  # the kill, or (asserted below) a failure before it
                return

    worker = threading.Thread(target=load)
    worker.start()
    deadline = time.monotonic() + 30
    while len(acked) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.stop(signal.SIGKILL)
    stop.set()
    worker.join(30)
    assert len(acked) >= 10, f"the load never got going: {errors}"
    stored = b"\n".join(asyncio.run(stored_messages(dep, alice["address"])))
    lost = [m for m in acked if m.encode() not in stored]
    assert not lost, f"{len(lost)} acknowledged message(s) lost: {lost[:3]}"

    # Node 2 goes on serving: submission and IMAP.
    msgid, _ = send(cluster.server(1), bob, alice["address"], "after the crash")
    reader = imap_login(cluster.server(1), alice)
    try:
        out = b"\n".join(reader.command("SELECT INBOX"))
        assert int(re.search(rb"\* (\d+) EXISTS", out).group(1)) >= len(acked) + 1
    finally:
        reader.close()
    cluster.start(0)  # back for the tests after this one


def test_a_queue_lease_of_a_node_killed_mid_delivery_is_taken_over_and_sent_once(cluster: Cluster) -> None:
    dep = cluster.nodes[0]
    bob = dep.mailbox("PER", 1)
    sink = cluster.sink
    sink.hold.set()
    try:
        msgid, _ = send(cluster.server(0), bob, f"someone@{SINK_DOMAIN}", "relayed across a crash")
        # Node 1's worker (or node 2's: whichever leased it) is now inside DATA at the sink.
        assert sink.held.wait(30), "no node started relaying the queued message"
        holder = _lease_owner(dep)
        owners = [_owner_suffix(dep, f"node{k}") for k in (1, 2)]
        assert any(holder.endswith(o) for o in owners), (holder, owners)
        victim = 0 if holder.endswith(owners[0]) else 1  # the node holding the lease dies
        cluster.server(victim).stop(signal.SIGKILL)
        sink.hold.clear()
        deadline = time.monotonic() + 30
        while not any(msgid.encode() in m for m in sink.received):
            assert time.monotonic() < deadline, "the other node never took the lease over"
            time.sleep(0.2)
        time.sleep(2)  # a second sending would show now
        assert sum(msgid.encode() in m for m in sink.received) == 1
        assert _queue(dep) == []  # finished, not left for a retry
    finally:
        sink.hold.clear()
        for k, srv in enumerate(cluster.servers):
            if srv is None or srv.proc.poll() is not None:
                cluster.start(k)


def _queue(dep: Deployment) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-m", "mss", "queue", "list", "--json", "-c", str(dep.config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)["entries"]


def _lease_owner(dep: Deployment) -> str:
    entries = _queue(dep)
    assert len(entries) == 1, entries
    return str(entries[0].get("leased_by") or entries[0].get("lease_owner") or "")


def _owner_suffix(dep: Deployment, node: str) -> str:
    import hashlib

    place = str(dep.directory.resolve()) + f"\0{node}"
    return hashlib.sha256(place.encode()).hexdigest()[:12]


def test_a_revoked_certificate_is_refused_by_both_nodes_after_the_refresh(cluster: Cluster) -> None:
    dep = cluster.nodes[0]
    entry = dep.mailbox("PER", 1)  # the last test: its certificate stays revoked
    for k in (0, 1):  # accepted by both first
        c = imap_login(cluster.server(k), entry)
        c.close()
    res = subprocess.run(
        [sys.executable, "-m", "mss", "pki", "revoke", str(dep.path(entry, "tls_cert")), "--crl", "--json"]
        + ["-c", str(dep.config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["crl_files"]
    for k in (0, 1):
        deadline = time.monotonic() + 15
        while True:
            try:
                c = imap_login(cluster.server(k), entry)
            except (ssl.SSLError, AssertionError, ConnectionError, OSError):
                break  # refused: the handshake or AUTHENTICATE EXTERNAL failed
            c.close()
            assert time.monotonic() < deadline, f"node {k + 1} still accepts a revoked certificate"
            time.sleep(0.5)
