"""`mss serve`: every listener in one process, stopped cleanly by SIGTERM or SIGINT.

Two mistakes a newcomer makes in the first hour end here with one clear line, not a traceback:
a port another program holds (`ServeError` names the listener and the port and how to pick
others), and a second `mss serve` of a deployment already being served (an flock on
`<config>.pid` next to the configuration names the running instance; the kernel drops the lock
when that process dies, so a stale file left by `kill -9` blocks nothing).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import gc
import json
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import IO

from mss.config import ConfigError, Settings, check_http_transport, default_config_path, load_settings
from mss.core import Core
from mss.logging_setup import setup_logging, tag_worker
from mss.worker_events import WorkerBus
from mss.workers import WorkerSlot

log = logging.getLogger("mss.serve")

#: The listeners in the order `run` starts them, grouped by the front end that opens them.
STAGES: dict[str, tuple[str, ...]] = {
    "smtp": ("submission", "submissions", "mta"),
    "imap": ("imap", "imaps"),
    "http": ("http",),
}
LISTENER_NAMES = {
    "submission": "SMTP submission",
    "submissions": "SMTP submissions",
    "mta": "SMTP MTA",
    "imap": "IMAP",
    "imaps": "IMAPS",
    "http": "HTTP",
}
# asyncio's (and uvloop's) bind error: "error while attempting to bind on address ('h', 2587): ..."
_BIND_ADDRESS = re.compile(r"address \(['\"]?[^,]*?['\"]?, (\d+)[,)]")


class ServeError(Exception):
    """Why `mss serve` could not start, in one line meant for the person who ran it."""


def _port(server: asyncio.AbstractServer) -> int:
    return server.sockets[0].getsockname()[1]


def _busy(host: str, port: int) -> bool:
    """Whether binding host:port fails now (as asyncio binds: SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _bind_failure(settings: Settings, stage: str, exc: OSError) -> ServeError:
    """The listener a failed bind was for, found from the error's address, else by probing
    the stage's ports (uvicorn's socket error names no address)."""
    listen = settings.listen
    ports = listen.ports()
    candidates = STAGES[stage]
    m = _BIND_ADDRESS.search(str(exc))
    name = None
    if m:
        port = int(m.group(1))
        name = next((n for n in candidates if ports[n] == port), None)
    if name is None:
        name = (
            candidates[0]
            if len(candidates) == 1
            else next((n for n in candidates if ports[n] and _busy(listen.host, ports[n])), candidates[0])
        )
    return listener_error(settings, name, exc)


def listener_error(settings: Settings, name: str, exc: OSError) -> ServeError:
    """The one line that says which listener could not bind, why, and what to do."""
    listen = settings.listen
    port = listen.ports()[name]
    where = f"{listen.host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        why = "the port is already in use (another program, or another `mss serve` on these ports)"
    elif exc.errno == errno.EACCES:
        why = "permission denied (ports below 1024 need privileges)"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = f"{listen.host} is not an address of this machine"
    else:
        why = exc.strerror or str(exc)
    return ServeError(
        f"cannot listen on {where} ({LISTENER_NAMES[name]}, [listen] {name}): {why}. "
        "Choose other ports in [listen] of the configuration, or re-create the demo on free ones: "
        "`mss demo DIR --base-port N --force` (ports N to N+5), `make run BASE_PORT=N`"
    )


#: Allocations between two young-generation collections (CPython's default is 700).
GC_GEN0_THRESHOLD = 20_000


def settle_heap() -> None:
    """Once started: what startup built (modules, the ORM's mappers and compiled queries, the
    TLS contexts: a few hundred thousand objects) lives as long as the process, so it is
    moved out of the collector's sight (`gc.freeze`), and young collections run less often.

    Why: a full collection walks every tracked object, and answering a 10,000-message FETCH
    allocates enough to run several; with the startup heap in view they were most of the
    command's time (`bench/README.md`, `python -m bench imap`). Reference counting frees
    almost everything anyway; the collector is only for cycles, which still get collected."""
    gc.collect()
    gc.freeze()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, g1, g2)


async def run(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[dict[str, int]], None] | None = None,
    worker: WorkerSlot | None = None,
) -> None:
    """Open the core, start SMTP, IMAP and HTTP, log `ready`, wait for a stop signal.

    Once bound, `settings.listen` holds the real ports (ephemeral `0` resolved), so what the
    listeners advertise (web.autoconfig) is what they are. `on_ready` gets the ports by role.
    `worker`: this process is one of the node's workers (mss.workers); the supervisor logs
    the node's `ready`, the worker its own.
    """
    from imap.server import start as start_imap
    from smtp.server import start as start_smtp
    from web.server import start as start_web

    check_http_transport(settings)

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    core = await Core.open(settings)
    servers: dict[str, asyncio.AbstractServer] = {}
    http = None
    stage = "smtp"
    try:
        try:
            servers.update(await start_smtp(core))
            stage = "imap"
            limits = settings.limits
            servers.update(
                await start_imap(
                    core,
                    max_connections=limits.imap_max_connections,
                    max_per_ip=limits.imap_max_connections_per_ip,
                    preauth_timeout=limits.imap_preauth_timeout_s,
                )
            )
            for name, srv in servers.items():
                setattr(settings.listen, name, _port(srv))
            stage = "http"
            # uvicorn on this loop; the core is its WebServices (settings, directory).
            http = await start_web(core)
        except OSError as exc:
            raise _bind_failure(settings, stage, exc) from exc
        settings.listen.http = http.port
        # Background work (the patient notifier) only once every listener is bound: a start
        # that fails on a busy port then stops without cancelling a task in mid-query.
        # The relay worker's transport: smtp.relay, injected here (the composition root) so
        # that the core never imports a front end.
        from smtp.relay import SmtpRelayClient

        core.relay_transport = SmtpRelayClient(settings)
        core.start_background(worker)
        await core.start_worker_metrics(worker)
        ports = {name: _port(srv) for name, srv in servers.items()}
        ports["http"] = http.port
        settle_heap()
        if worker is None:
            log.info("ready host=%s ports=%s", settings.listen.host, json.dumps(ports, sort_keys=True))
        else:
            log.info("worker serving index=%d pid=%d", worker.index + 1, os.getpid())
        if on_ready is not None:
            on_ready(ports)
        await stop.wait()
        log.info("stopping")
    finally:
        if http is not None:
            http.close()
        for srv in servers.values():
            srv.close()
        for srv in servers.values():
            try:
                await asyncio.wait_for(srv.wait_closed(), 5)
            except TimeoutError:
                pass
        if http is not None:
            # uvicorn gives requests in flight web.server.GRACEFUL_SHUTDOWN_S, then cancels them.
            try:
                await asyncio.wait_for(http.wait_closed(), 10)
            except TimeoutError:
                log.warning("http listener did not stop in time")
        await core.close()
        log.info("stopped")


def lock_path(config: Path) -> Path:
    """`<folder>/<config stem>.pid`: `var/demo/mss.toml` is served by the pid in `var/demo/mss.pid`."""
    return config.parent / f"{config.stem}.pid"


def acquire_instance_lock(config: Path) -> IO[str] | None:
    """Hold an exclusive flock on the deployment's pid file for the life of this process and
    write our pid in it; `ServeError` naming the running instance if another process holds it.

    None (and a warning) when the folder is read-only (a packaged /etc config): the busy port
    then stops a second instance instead.
    """
    path = lock_path(config)
    try:
        fh = open(path, "a+", encoding="ascii")  # noqa: SIM115 - held open for the process's life
    except OSError as exc:
        log.warning("no instance lock: cannot open %s (%s)", path, exc.strerror)
        return None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        pid = fh.read().strip() or "?"
        fh.close()
        raise ServeError(
            f"{config} is already being served by process {pid} (lock held on {path}); "
            f"stop it first (kill {pid}), or serve another deployment"
        ) from None
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
    except OSError as exc:  # a full disk: the lock holds all the same, only the pid is missing
        log.warning("cannot write our pid to %s (%s)", path, exc.strerror)
    return fh


def main(config: Path | str | None, *, on_ready: Callable[[dict[str, int]], None] | None = None) -> None:
    config_path = Path(config) if config is not None else default_config_path()
    settings = load_settings(config_path)
    try:
        check_http_transport(settings)
    except ConfigError as exc:
        raise ConfigError(f"{config_path}: {exc}") from None
    setup_logging(settings)
    lock = acquire_instance_lock(config_path)
    try:
        count = settings.worker_count
        if count > 1:
            supervise(settings, count, on_ready=on_ready)
        else:
            _install_uvloop()
            asyncio.run(run(settings, on_ready=on_ready))
    finally:
        if lock is not None:
            with suppress(OSError):
                lock.truncate(0)  # the file stays (removing it would race a new instance)
            lock.close()


def _install_uvloop() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass


def supervise(settings: Settings, count: int, *, on_ready: Callable[[dict[str, int]], None] | None = None) -> None:
    """Serve with `count` worker processes (mss.workers) until SIGTERM or SIGINT."""
    from mss.db.engine import is_sqlite
    from mss.workers import Supervisor, WorkerFailed, reserve_ports
    from mss.write_gate import sqlite_gate_path

    url = settings.resolved_database_url
    if is_sqlite(url) and sqlite_gate_path(url) is None:
        raise ServeError(
            f"workers = {count} needs a database the workers share: {url} is in one process's memory "
            "(use a SQLite file, or PostgreSQL, or workers = 1)"
        )
    held = reserve_ports(settings, lambda name, exc: listener_error(settings, name, exc))
    bus = WorkerBus(count) if is_sqlite(url) else None
    ports = settings.listen.ports()

    def work(slot: WorkerSlot, ready: Callable[[], None]) -> int:
        for sock in held:
            sock.close()
        tag_worker(settings, slot.index + 1)
        _install_uvloop()
        asyncio.run(run(settings, on_ready=lambda _ports: ready(), worker=slot))
        return 0

    def announce() -> None:
        log.info(
            "ready host=%s ports=%s workers=%d",
            settings.listen.host,
            json.dumps(ports, sort_keys=True),
            count,
        )
        if on_ready is not None:
            on_ready(ports)

    # Mode 0700: only the node's user reaches the workers' metrics sockets. In the temporary
    # folder (a socket path has at most 107 bytes; a deployment's folder may be deeper).
    metrics_dir = Path(tempfile.mkdtemp(prefix="mss-metrics-"))
    try:
        Supervisor(settings, count, work, bus=bus, metrics_dir=metrics_dir, on_ready=announce).run()
    except WorkerFailed as exc:
        raise ServeError(str(exc)) from None
    finally:
        for sock in held:
            sock.close()
        if bus is not None:
            bus.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        log.info("stopped")
