"""Several worker processes per node: `workers = N` in the configuration (or "auto").

One asyncio loop uses one core; SMTP with S/MIME, TLS handshakes and IMAP parsing are CPU
work, so a node on a 2-core machine served by one process leaves half of it idle (the
benchmarks of `bench/` showed MSS capped at one core while Postfix and Dovecot spread over
both). `mss serve` with `workers > 1` is a small supervisor, as Postfix's `master` and
Dovecot's are, that forks N workers; each is a whole `mss serve` process (every listener,
its own core and database pool) and they share the listening ports with SO_REUSEPORT: the
kernel spreads new connections over the workers' sockets (Linux `SO_REUSEPORT`, socket(7)).

Why SO_REUSEPORT rather than one inherited socket all workers accept on: with a shared
socket and epoll, the most recently woken process takes most connections (the load piles up
on one worker); with one socket per worker the kernel balances by connection hash, and when
a worker dies its socket leaves the group, so new connections go to the living ones at once.

What the supervisor does, and only that:
- it binds every port first (an ephemeral `0` is resolved there), and keeps those sockets
  bound but not listening: nothing else can take the ports while workers come and go, and
  the workers bind the same, resolved ports (a busy port is the same one-line `ServeError`
  as with one process);
- on SQLite it makes the workers' event bus (`mss.worker_events`) before forking, so an IDLE
  session on one worker sees what another delivered; on PostgreSQL each worker uses
  LISTEN/NOTIFY as a node would (`mss.cluster_events`);
- it makes a private folder (mode 0700) where each worker answers for its metrics on a Unix
  socket, so a scrape of `/metrics` taken by any worker shows them all (`mss.worker_metrics`);
- it starts worker 1 alone (it runs the migrations), then the others, and logs `ready` once
  every worker is serving;
- a worker that dies is started again (a crash loop, more than `MAX_RESTARTS` within
  `RESTART_WINDOW_S`, stops the node); a worker that fails before it is first ready stops the
  node with its error;
- SIGTERM or SIGINT stops every worker gracefully (SIGKILL after `STOP_TIMEOUT_S`). Workers
  die with the supervisor (PR_SET_PDEATHSIG), so `kill -9` of the supervisor leaves no worker
  holding the ports.

Only the first worker runs the patient notifier (once per node, as with one process); each
worker runs a relay worker with a lease owner of its own (`Core.start_background`). Each
worker has its own connection caps (`[limits]` apply per worker), its own memory of refused
recipients; `/metrics` shows every worker's counters, labelled by worker.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mss.config import Settings
from mss.worker_events import WorkerBus

log = logging.getLogger("mss.workers")

#: More restarts than this within `RESTART_WINDOW_S` is a crash loop: the node stops.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
#: Pause before a dead worker is started again.
RESTART_DELAY_S = 0.5
#: Graceful stop, then SIGKILL.
STOP_TIMEOUT_S = 30.0

_PR_SET_PDEATHSIG = 1
#: What the supervisor handles (through its wake-up fd) and a worker resets to the default.
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)


@dataclass(frozen=True)
class WorkerSlot:
    """What a worker knows of its place: its index (0 is the first) and the count; `bus`,
    on SQLite, reaches its siblings (`mss.worker_events`); `metrics_dir` holds the workers'
    metrics sockets (`mss.worker_metrics`)."""

    index: int
    count: int
    bus: WorkerBus | None = None
    metrics_dir: Path | None = None

    @property
    def primary(self) -> bool:
        """The worker that runs the node's background work (relay, notifier)."""
        return self.index == 0


class WorkerFailed(Exception):
    """The node could not be kept running: a worker failed to start, or kept dying."""


def reserve_ports(settings: Settings, on_error: Callable[[str, OSError], Exception]) -> list[socket.socket]:
    """Bind every listener's port with SO_REUSEPORT (resolving `0`), write the bound ports
    into `settings.listen`, and return the sockets, bound and not listening: they hold the
    ports for the workers, and receive no connection themselves."""
    listen = settings.listen
    held: list[socket.socket] = []
    try:
        for name, port in listen.ports().items():
            resolved = port
            for family, kind, proto, _, address in socket.getaddrinfo(
                listen.host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            ):
                # First without SO_REUSEPORT: a port held by anyone, even another node of
                # ours with workers (whose sockets all have SO_REUSEPORT), is refused here,
                # instead of this node quietly sharing its clients.
                with _socket(family, kind, proto, reuse_port=False) as probe:
                    try:
                        probe.bind((address[0], resolved, *address[2:]))
                    except OSError as exc:
                        raise on_error(name, exc) from exc
                    resolved = probe.getsockname()[1]
                sock = _socket(family, kind, proto, reuse_port=True)
                held.append(sock)
                try:
                    sock.bind((address[0], resolved, *address[2:]))
                except OSError as exc:
                    raise on_error(name, exc) from exc
            setattr(listen, name, resolved)
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return held


def _socket(family: int, kind: int, proto: int, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent (the supervisor) dies (prctl(2))."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the supervisor's SIGTERM still stops workers
        pass


@dataclass
class _Worker:
    slot: WorkerSlot
    pid: int = 0
    ready: bool = False
    #: Set once it has been ready at least once (a failure before that stops the node).
    served: bool = False
    restarts: list[float] = field(default_factory=list)


class Supervisor:
    """Fork, watch and stop a node's workers (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        count: int,
        work: Callable[[WorkerSlot, Callable[[], None]], int],
        *,
        bus: WorkerBus | None = None,
        metrics_dir: Path | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.count = count
        #: Runs in the forked child: serve as worker `slot`, call the callback once ready,
        #: return the exit status.
        self._work = work
        self._bus = bus
        self._on_ready = on_ready
        self._workers = [_Worker(WorkerSlot(i, count, bus, metrics_dir)) for i in range(count)]
        self._stopping = False
        self._announced = False
        self._ready_r, self._ready_w = os.pipe()
        self._signal_r, self._signal_w = os.pipe()

    # -- the child's side -------------------------------------------------------------

    def _child(self, worker: _Worker, parent: int) -> None:
        """In the forked child (signals still blocked): become the worker; never returns."""
        code = 1
        try:
            die_with_parent()
            if os.getppid() != parent:  # the supervisor died before prctl took effect
                os._exit(1)
            signal.set_wakeup_fd(-1)
            for sig in _SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            os.close(self._ready_r)
            os.close(self._signal_r)
            os.close(self._signal_w)
            if self._bus is not None:
                self._bus.keep_only(worker.slot.index)
            ready_w = self._ready_w

            def ready() -> None:
                os.write(ready_w, f"{worker.slot.index} {os.getpid()}\n".encode("ascii"))

            code = self._work(worker.slot, ready)
        except BaseException:
            log.exception("worker %d failed", worker.slot.index + 1)
        finally:
            logging.shutdown()
            os._exit(code)

    # -- the supervisor's side ----------------------------------------------------------

    def _spawn(self, worker: _Worker) -> None:
        parent = os.getpid()
        # Signals wait until the child has its own handlers: a SIGTERM that came between the
        # fork and the child's reset would run the supervisor's handler in the child, and
        # that worker would not stop.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                self._child(worker, parent)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        worker.pid = pid
        worker.ready = False
        log.info("worker %d starting pid=%d", worker.slot.index + 1, pid)

    def _on_signal(self, signum: int, _frame: object) -> None:
        """Python handlers only make the wake-up fd written; the loop below reads it."""

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; the exit status of the node."""
        os.set_blocking(self._signal_w, False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _SIGNALS}
        old_fd = signal.set_wakeup_fd(self._signal_w)
        try:
            self._spawn(self._workers[0])
            failure = self._loop()
        finally:
            signal.set_wakeup_fd(old_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for fd in (self._ready_r, self._ready_w, self._signal_r, self._signal_w):
                os.close(fd)
        if failure is not None:
            raise WorkerFailed(failure)
        return 0

    def _loop(self) -> str | None:
        """Until stopped: read ready lines and signals, reap and restart workers."""
        failure: str | None = None
        stop_deadline: float | None = None
        buffered = b""
        while True:
            if self._stopping and not any(w.pid for w in self._workers):
                return failure
            timeout = 1.0
            now = time.monotonic()
            if stop_deadline is not None:
                if now >= stop_deadline:
                    for w in self._workers:
                        if w.pid:
                            log.warning("worker %d did not stop in time: killing pid=%d", w.slot.index + 1, w.pid)
                            _kill(w.pid, signal.SIGKILL)
                    stop_deadline = now + STOP_TIMEOUT_S
                timeout = min(timeout, max(0.0, stop_deadline - now))
            try:
                readable, _, _ = select.select([self._ready_r, self._signal_r], [], [], timeout)
            except InterruptedError:
                readable = []
            if self._signal_r in readable:
                signals = os.read(self._signal_r, 512)
                if (signal.SIGTERM in signals or signal.SIGINT in signals) and not self._stopping:
                    log.info("stopping %d workers", self.count)
                    stop_deadline = self._stop()
            if self._ready_r in readable:
                buffered += os.read(self._ready_r, 512)
                *lines, buffered = buffered.split(b"\n")
                for line in lines:
                    index, pid = (int(x) for x in line.split())
                    if self._workers[index].pid == pid:  # not a line of an incarnation now dead
                        self._mark_ready(index)
            problem = self._reap()
            if problem is not None and not self._stopping:
                failure = problem
                log.error("%s; stopping the node", problem)
                stop_deadline = self._stop()

    def _mark_ready(self, index: int) -> None:
        worker = self._workers[index]
        worker.ready = worker.served = True
        log.info("worker %d ready pid=%d", index + 1, worker.pid)
        if self._stopping:
            return
        if index == 0 and not self._announced:
            # The first worker has migrated the database: the others may start.
            for w in self._workers[1:]:
                if not w.pid:
                    self._spawn(w)
        if not self._announced and all(w.ready for w in self._workers):
            self._announced = True
            if self._on_ready is not None:
                self._on_ready()

    def _reap(self) -> str | None:
        """Collect dead workers; start them again, or say why the node must stop."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid == 0:
                return None
            worker = next((w for w in self._workers if w.pid == pid), None)
            if worker is None:
                continue
            worker.pid = 0
            worker.ready = False
            how = _describe(status)
            n = worker.slot.index + 1
            if self._stopping:
                log.info("worker %d stopped (%s)", n, how)
                continue
            if not worker.served:
                return f"worker {n} failed before it was ready ({how}): see the lines above"
            now = time.monotonic()
            worker.restarts = [t for t in worker.restarts if now - t < RESTART_WINDOW_S] + [now]
            if len(worker.restarts) > MAX_RESTARTS:
                return f"worker {n} died {len(worker.restarts)} times within {RESTART_WINDOW_S:.0f} s ({how})"
            log.error("worker %d died (%s); starting it again", n, how)
            time.sleep(RESTART_DELAY_S)
            self._spawn(worker)

    def _stop(self) -> float:
        self._stopping = True
        for w in self._workers:
            if w.pid:
                _kill(w.pid, signal.SIGTERM)
        return time.monotonic() + STOP_TIMEOUT_S

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers]


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            raise


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
