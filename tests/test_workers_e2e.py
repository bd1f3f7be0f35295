"""A node served by two worker processes (`workers = 2`, mss.workers), end to end: a real
`mss serve` on SQLite and on the local PostgreSQL, real TLS clients.

The kernel spreads connections over the workers (SO_REUSEPORT); which worker serves a
connection is read from /proc (the server side of the socket, by port, then the process
holding it), so each test knows it crosses workers rather than hoping it does. On SQLite the
workers hear each other over the supervisor's socket pairs (mss.worker_events), on PostgreSQL
over LISTEN/NOTIFY.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mail import RawImap, imap_login, send
from prometheus_client.parser import text_string_to_metric_families
from support import ROOT, Deployment, ServerProcess, backends, make_deployment, start_server, stored_messages

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

WORKERS = {"MSS_WORKERS": "2"}


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return sorted(out)


def _socket_inode(client: socket.socket) -> int:
    """The inode of the server's end of `client`'s TCP connection (from /proc/net/tcp)."""
    cport = client.getsockname()[1]
    sport = client.getpeername()[1]
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == sport and int(remote.split(":")[1], 16) == cport:
            return int(fields[9])
    raise AssertionError("the server's end of the connection is not in /proc/net/tcp")


def serving_pid(client: socket.socket, pids: list[int]) -> int:
    """Which of `pids` holds the server's end of `client`'s connection."""
    target = f"socket:[{_socket_inode(client)}]"
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == target:
                    return pid
            except OSError:
                continue
    raise AssertionError("no worker holds the connection")


def spread(srv: ServerProcess, entry: dict, pids: list[int], *, limit: int = 60) -> dict[int, RawImap]:
    """One authenticated IMAP connection on each worker (connect until each has one)."""
    got: dict[int, RawImap] = {}
    spare: list[RawImap] = []
    for _ in range(limit):
        c = imap_login(srv, entry)
        pid = serving_pid(c.sock, pids)
        if pid in got:
            spare.append(c)
        else:
            got[pid] = c
        if len(got) == len(pids):
            break
    for c in spare:
        c.close()
    assert len(got) == len(pids), f"{limit} connections all landed on {sorted(got)} of {pids}"
    return got


@pytest.fixture(scope="module", params=backends())
def node(request, tmp_path_factory) -> Iterator[tuple[Deployment, ServerProcess]]:
    dep, pg = make_deployment(tmp_path_factory.mktemp(f"workers-{request.param}"), request.param)
    srv = start_server(dep, env=WORKERS)
    try:
        yield dep, srv
    finally:
        srv.stop()
        if pg:
            from support import drop_pg_database

            drop_pg_database(pg)


def test_two_workers_serve_and_log_one_ready_line(node):
    dep, srv = node
    pids = children(srv.proc.pid)
    assert len(pids) == 2, pids
    log = srv.log_text()
    assert len(re.findall(r"\bready host=", log)) == 1 and "workers=2" in log
    assert len(re.findall(r"worker serving index=\d", log)) >= 2
    # Each worker's lines say which worker wrote them; the supervisor's do not.
    tagged = re.findall(r" mss\.serve\[w(\d)\] worker serving index=(\d)", log)
    assert {w for w, i in tagged if w == i} == {"1", "2"}, tagged
    assert re.search(r" mss\.workers worker 2 ready", log)
    # Each worker relays what it queued, under a lease owner of its own.
    owners = set(re.findall(r"relay worker (\S+) started", log))
    assert {o.rsplit(":", 1)[1] for o in owners} == {"w1", "w2"}, owners


def test_idle_on_each_worker_sees_a_delivery_made_through_either(node):
    dep, srv = node
    pids = children(srv.proc.pid)
    alice, bob = dep.mailbox("PER", 0), dep.mailbox("PER", 1)
    idlers = spread(srv, alice, pids)
    try:
        counts = {}
        for pid, c in idlers.items():
            counts[pid] = int(re.search(rb"\* (\d+) EXISTS", b"\n".join(c.command("SELECT INBOX"))).group(1))
            c.idle()
        _, acked = send(srv, bob, alice["address"], "seen by every worker")
        for pid, c in idlers.items():
            line, seen = c.wait_for(rb"^\* \d+ EXISTS", timeout=10)
            assert int(line.split()[1]) == counts[pid] + 1
            assert seen - acked < 1.0, f"worker {pid} saw the delivery {seen - acked:.3f}s after the 250"
            c.done()
    finally:
        for c in idlers.values():
            c.close()


def test_a_flag_change_on_one_worker_reaches_a_session_selected_on_the_other(node):
    dep, srv = node
    pids = children(srv.proc.pid)
    alice, bob = dep.mailbox("PER", 0), dep.mailbox("PER", 1)
    send(srv, bob, alice["address"], "to be flagged across workers")
    conns = spread(srv, alice, pids)
    (watcher_pid, watcher), (_, changer) = conns.items()
    try:
        exists = int(re.search(rb"\* (\d+) EXISTS", b"\n".join(watcher.command("SELECT INBOX"))).group(1))
        watcher.idle()
        changer.command("SELECT INBOX")
        changer.command(f"STORE {exists} +FLAGS (\\Flagged)")
        stored = time.monotonic()
        _, seen = watcher.wait_for(rb"^\* %d FETCH \(.*\\Flagged" % exists, timeout=10)
        assert seen - stored < 1.0, f"worker {watcher_pid} saw the flag {seen - stored:.3f}s after the OK"
        watcher.done()
    finally:
        for c in conns.values():
            c.close()


def test_metrics_show_every_worker_whichever_takes_the_scrape(node):
    """Each scrape lands on one worker (SO_REUSEPORT) and shows both, labelled by worker: the
    node's counters do not jump between scrapes."""
    dep, srv = node
    alice, bob = dep.mailbox("PER", 0), dep.mailbox("PER", 1)
    send(srv, bob, alice["address"], "counted whichever worker took it")
    totals = set()
    for _ in range(6):
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.port('http')}/metrics", timeout=10) as r:
            text = r.read().decode()
        samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
        assert {s.labels.get("worker") for s in samples if s.name == "process_cpu_seconds_total"} == {"1", "2"}
        assert [s.value for s in samples if s.name == "mss_metrics_workers_missing"] == [0]
        totals.add(
            sum(
                s.value
                for s in samples
                if s.name == "mss_messages_accepted_total" and s.labels.get("protocol") == "smtp"
            )
        )
    assert len(totals) == 1 and totals.pop() >= 1, totals


def test_a_worker_killed_mid_load_is_started_again_and_no_acknowledged_message_is_lost(tmp_path):
    dep, _ = make_deployment(tmp_path, "sqlite")
    srv = start_server(dep, env=WORKERS)
    try:
        alice, bob = dep.mailbox("PER", 0), dep.mailbox("PER", 1)
        acked: list[str] = []
        stop = threading.Event()

        def load() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    msgid, _ = send(srv, bob, alice["address"], f"load {n}")
                except (OSError, smtplib.SMTPException):
                    continue  # the killed worker's connections: not acknowledged, resent by a client
                acked.append(msgid)

        senders = [threading.Thread(target=load) for _ in range(4)]
        for t in senders:
            t.start()
        wait_until(lambda: len(acked) >= 8, "the first messages were not acknowledged")
        victim = worker_pid(srv, 2)
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: worker_pid(srv, 2) != victim and "worker 2 ready" in srv.log_text().split(" died ")[-1],
            "the killed worker was not started again",
            srv,
        )
        assert len(children(srv.proc.pid)) == 2
        mark = len(acked)
        wait_until(lambda: len(acked) >= mark + 8, "the node stopped acknowledging after the restart")
        stop.set()
        for t in senders:
            t.join(30)
        assert re.search(r"worker 2 died \(signal SIGKILL\); starting it again", srv.log_text())
        stored = asyncio.run(stored_messages(dep, alice["address"]))
        missing = [m for m in acked if not any(m.encode() in raw for raw in stored)]
        assert not missing, f"{len(missing)} acknowledged messages are not stored"
        assert srv.stop() == 0
        assert children(srv.proc.pid) == []
    finally:
        srv.stop(signal.SIGKILL)


def wait_until(done, what: str, srv: ServerProcess | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(what + (f":\n{srv.log_text()[-3000:]}" if srv else ""))
        time.sleep(0.05)


def worker_pid(srv: ServerProcess, n: int) -> int:
    """The pid of worker `n` (1-based) now, from the supervisor's last `worker n starting` line."""
    return int(re.findall(rf"worker {n} starting pid=(\d+)", srv.log_text())[-1])


def test_workers_die_with_a_killed_supervisor_and_free_the_ports(tmp_path):
    dep, _ = make_deployment(tmp_path, "sqlite")
    srv = start_server(dep, env=WORKERS)
    pids = children(srv.proc.pid)
    assert len(pids) == 2
    srv.stop(signal.SIGKILL)
    deadline = time.monotonic() + 15
    while any(Path(f"/proc/{p}").exists() and "zombie" not in _state(p) for p in pids):
        assert time.monotonic() < deadline, "a worker outlived its supervisor"
        time.sleep(0.1)
    # The kernel may close a dead process's sockets a moment after it became a zombie (the
    # last `fput` of an exiting task is deferred to a work queue): the port is free soon.
    freed_by = time.monotonic() + 5
    while True:
        try:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((srv.host, srv.port("imaps")))
            break
        except OSError:
            assert time.monotonic() < freed_by, "the port stayed held after the workers died"
            time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]).lower()
    except (OSError, IndexError):
        return "zombie"


def test_a_worker_that_cannot_start_stops_the_node_with_one_line(tmp_path):
    dep, _ = make_deployment(tmp_path, "sqlite")
    env = {**os.environ, **WORKERS, "MSS_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:1/none"}
    res = subprocess.run(
        [sys.executable, "-m", "mss", "serve", "-c", str(dep.config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert res.returncode != 0
    assert "worker 1 failed before it was ready" in res.stderr, res.stderr[-3000:]
    assert "ready host=" not in res.stderr
