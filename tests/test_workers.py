"""The pieces of a node with several worker processes, on their own: the SQLite event bus
between workers (mss.worker_events), the cross-process write gate (mss.write_gate), the
port reservation (mss.workers.reserve_ports) and the `workers` setting."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mss.config import ConfigError, Settings, load_settings
from mss.events import Events
from mss.worker_events import WorkerBus, WorkerEvents
from mss.workers import reserve_ports
from mss.write_gate import ProcessWriteGate, sqlite_gate_path

pytestmark = pytest.mark.timeout(30)


async def _fired(watch, timeout: float = 2.0) -> bool:
    return await watch.wait(timeout)


@pytest.fixture
def bus():
    b = WorkerBus(3)
    yield b
    b.close()


def _bridge(bus: WorkerBus, index: int) -> tuple[Events, WorkerEvents]:
    events = Events()
    bridge = WorkerEvents(events, bus.receiving(index), bus.peers(index))
    bridge.start()
    return events, bridge


async def test_a_change_published_by_one_worker_wakes_the_watchers_of_the_others(bus):
    (a, ab), (b, bb), (c, cb) = (_bridge(bus, i) for i in range(3))
    try:
        with b.watch(7) as wb, c.watch(7) as wc, a.watch(7) as wa, b.watch(8) as other:
            a.publish(7)
            assert await _fired(wb) and await _fired(wc)
            assert wa.take()  # the publisher's own watchers, at once
            assert not other.take()  # another folder is not woken
            await asyncio.sleep(0.1)
            assert not wa.take()  # and never echoed back to the publisher
            assert bb.received == 1 and cb.received == 1 and ab.received == 0
    finally:
        for br in (ab, bb, cb):
            br.close()


async def test_one_datagram_per_peer_for_everything_one_loop_turn_published(bus):
    (a, ab), (b, bb), (_c, cb) = (_bridge(bus, i) for i in range(3))
    try:
        with b.watch(3) as w3, b.watch(4) as w4:
            for fid in (1, 2, 3, 4):
                a.publish(fid)
            assert await _fired(w3) and await _fired(w4)
            assert ab.sent == 2  # one datagram to each of the two peers
            assert bb.received == 1
    finally:
        for br in (ab, bb, cb):
            br.close()


async def test_malformed_datagrams_wake_nothing_and_a_star_wakes_every_watcher(bus):
    b, bb = _bridge(bus, 1)
    send = bus.peers(0)[0]  # worker 0 writes to worker 1 on pair 1's sending end
    try:
        with b.watch(12) as w12, b.watch(13) as w13:
            send.send(b"abc,12,-3,\xff,99999999999999999999")
            assert await _fired(w12)
            assert not w13.take()
            send.send(b"*")
            assert await _fired(w12) and await _fired(w13)
    finally:
        bb.close()


async def test_a_worker_too_busy_to_read_gets_one_wake_all_instead_of_a_blocked_sender():
    bus = WorkerBus(2)
    a, ab = _bridge(bus, 0)
    # Worker 1 does not read yet: its queue fills, and worker 0 must neither block nor drop
    # the fact that nudges were lost.
    n = 0
    while not ab._behind and n < 20_000:
        a.publish(n)
        n += 1
        await asyncio.sleep(0)
    assert ab._behind, "the receiving queue never filled"
    b, bb = _bridge(bus, 1)  # starts reading (and drains what was queued)
    try:
        with b.watch(10**9) as never_published:
            # The retry sends "*" once worker 1's queue has room again.
            assert await _fired(never_published, timeout=5)
        await asyncio.sleep(0.2)
        assert not ab._behind
    finally:
        ab.close()
        bb.close()
        bus.close()


def test_a_bus_needs_two_workers():
    with pytest.raises(ValueError):
        WorkerBus(1)


def _try_lock(path: Path) -> int:
    """Exit status of another process trying the gate's flock without waiting (0: got it)."""
    code = (
        "import fcntl, os, sys\n"
        f"fd = os.open({str(path)!r}, os.O_RDWR)\n"
        "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(1)\n"
    )
    return subprocess.run([sys.executable, "-c", code], timeout=20).returncode


async def test_the_write_gate_excludes_other_processes_only_while_held(tmp_path):
    gate = ProcessWriteGate(tmp_path / "db-writer.lock")
    try:
        async with gate.hold():
            assert await asyncio.to_thread(_try_lock, gate.path) == 1
        assert await asyncio.to_thread(_try_lock, gate.path) == 0
    finally:
        gate.close()


def _holder(path: Path) -> subprocess.Popen:
    """Another process holding the gate's flock until it reads a line."""
    code = (
        "import fcntl, os, sys\n"
        f"fd = os.open({str(path)!r}, os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\nsys.stdin.readline()\n"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)


async def test_the_write_gate_waits_for_another_process_and_survives_a_cancelled_waiter(tmp_path):
    path = tmp_path / "db-writer.lock"
    gate = ProcessWriteGate(path)
    holder = await asyncio.to_thread(_holder, path)
    try:
        assert holder.stdout.readline() == b"held\n"

        async def write() -> None:
            async with gate.hold():
                pass

        waiter = asyncio.ensure_future(write())
        await asyncio.sleep(0.2)
        assert not waiter.done() and gate.waits == 1
        waiter.cancel()
        await asyncio.sleep(0.1)
        # Cancelled while the other process holds the gate: it waits for its thread, so the
        # in-process lock stays taken until the flock it may get is given back.
        assert not waiter.done()
        holder.stdin.write(b"go\n")
        holder.stdin.flush()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiter, 10)
        # Free again, for this process and for others.
        await asyncio.wait_for(write(), 5)
        assert await asyncio.to_thread(_try_lock, path) == 0
    finally:
        holder.kill()
        holder.wait()
        gate.close()


def test_the_gate_file_sits_beside_a_sqlite_database_file():
    assert sqlite_gate_path("sqlite+aiosqlite:////var/mss/mss.db") == Path("/var/mss/mss.db-writer.lock")
    assert sqlite_gate_path("sqlite+aiosqlite:///:memory:") is None
    assert sqlite_gate_path("postgresql+asyncpg://u@h/db") is None


def _settings(**listen: int) -> Settings:
    ports = dict.fromkeys(("submission", "submissions", "mta", "imap", "imaps", "http"), 0)
    ports.update(listen)
    return Settings.model_validate({"domain": "x.test", "listen": {"host": "127.0.0.1", **ports}})


def test_reserved_ports_are_resolved_held_and_shareable_by_reuseport_listeners():
    settings = _settings()
    held = reserve_ports(settings, lambda name, exc: RuntimeError(name))
    try:
        ports = settings.listen.ports()
        assert all(p > 0 for p in ports.values()) and len(set(ports.values())) == 6
        # A program without SO_REUSEPORT cannot take a reserved port...
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", ports["imap"]))
        # ...a worker listening with SO_REUSEPORT can, and the reservation takes no connection.
        with socket.socket() as worker:
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            worker.bind(("127.0.0.1", ports["imap"]))
            worker.listen(8)
            with socket.create_connection(("127.0.0.1", ports["imap"]), timeout=5):
                conn, _ = worker.accept()
                conn.close()
    finally:
        for s in held:
            s.close()


def test_a_busy_port_is_the_listener_error_and_nothing_stays_bound():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        settings = _settings(imap=port)
        with pytest.raises(RuntimeError, match="^imap$"):
            reserve_ports(settings, lambda name, exc: RuntimeError(name))
    # The ports reserved before the failing one were given back: all of them bind again.
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))


@pytest.mark.parametrize("value", ["0", "65", "two", "-1"])
def test_a_bad_workers_value_is_refused_with_its_name(tmp_path, monkeypatch, value):
    cfg = tmp_path / "mss.toml"
    cfg.write_text('domain = "x.test"\n')
    monkeypatch.setenv("MSS_WORKERS", value)
    with pytest.raises(ConfigError, match="MSS_WORKERS"):
        load_settings(cfg)
    monkeypatch.delenv("MSS_WORKERS")
    cfg.write_text(
        f'domain = "x.test"\nworkers = "{value}"\n'
        if not value.lstrip("-").isdigit()
        else f'domain = "x.test"\nworkers = {value}\n'
    )
    with pytest.raises(ConfigError, match="workers"):
        load_settings(cfg)


def test_workers_auto_is_one_per_usable_core(tmp_path, monkeypatch):
    import os

    cfg = tmp_path / "mss.toml"
    cfg.write_text('domain = "x.test"\nworkers = "auto"\n')
    assert load_settings(cfg).worker_count == len(os.sched_getaffinity(0))
    monkeypatch.setenv("MSS_WORKERS", "3")
    assert load_settings(cfg).worker_count == 3
    cfg.write_text('domain = "x.test"\n')
    monkeypatch.delenv("MSS_WORKERS")
    assert load_settings(cfg).worker_count == 1


def test_a_port_another_node_shares_with_reuseport_is_refused_not_joined():
    """Another node of the same user with workers holds its ports with SO_REUSEPORT; this
    node must not quietly join that group and take half of its clients."""
    first = _settings()
    held = reserve_ports(first, lambda name, exc: RuntimeError(name))
    worker = socket.socket()  # one of the first node's workers, listening
    try:
        worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        worker.bind(("127.0.0.1", first.listen.submission))
        worker.listen(8)
        second = _settings(submission=first.listen.submission)
        with pytest.raises(RuntimeError, match="^submission$"):
            reserve_ports(second, lambda name, exc: RuntimeError(name))
    finally:
        worker.close()
        for s in held:
            s.close()


def test_workers_with_sqlite_in_memory_are_refused(monkeypatch):
    from mss.serve import ServeError, supervise

    monkeypatch.delenv("MSS_DATABASE_URL", raising=False)
    settings = Settings.model_validate({"domain": "x.test", "database_url": "sqlite+aiosqlite:///:memory:"})
    with pytest.raises(ServeError, match="memory"):
        supervise(settings, 2)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_workers_log_lines_carry_its_number_and_stay_escaped(fmt) -> None:
    import json
    import logging

    from mss.logging_setup import formatter

    settings = Settings(domain="x.test", logging={"format": fmt})
    record = logging.LogRecord("mss.imap", logging.INFO, __file__, 1, "session opened peer=%s", ("a\r\nb",), None)
    line = formatter(settings, 2).format(record)
    plain = formatter(settings).format(record)
    if fmt == "json":
        assert json.loads(line)["worker"] == 2 and "worker" not in json.loads(plain)
    else:
        assert " mss.imap[w2] session opened peer=a\\r\\nb" in line
        assert " mss.imap session opened" in plain and "[w" not in plain
