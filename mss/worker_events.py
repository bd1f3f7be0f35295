"""Folder-change events between the worker processes of one node on SQLite.

With `workers > 1` (`mss.workers`), a delivery committed by one worker must wake the IDLE and
selected sessions of the others, as `mss.cluster_events` does between nodes on PostgreSQL.
PostgreSQL carries those nudges itself (LISTEN/NOTIFY: every worker there is a node of its
own); SQLite has no such channel, so the supervisor gives the workers one before it forks
them: one AF_UNIX datagram socket pair per worker (`WorkerBus`). Worker i reads the receiving
end of pair i; every other worker writes to its sending end. Nothing is a file, nothing is
reachable from outside the node's process tree, and a restarted worker finds its pair again
(the supervisor keeps them all open).

What travels is what travels between nodes: folder ids, comma-separated (`cluster_events.
payloads`), never an address or anything about the mail. A nudge only makes a session re-read
its folder from the database, which the sender committed before publishing (the group
committer publishes after COMMIT), so a lost nudge costs latency and never correctness. A
worker whose queue is full (it is busy, the datagrams pile up: the kernel keeps
`net.unix.max_dgram_qlen` of them) is not waited for: the nudges that did not fit become one
"wake every watcher" sent again shortly, so nothing blocks the sender's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence

from mss.cluster_events import MAX_PENDING, WAKE_ALL, parse_payload, payloads
from mss.events import Events

log = logging.getLogger("mss.workers")

#: Datagrams are read up to this size (payloads stay under `cluster_events.MAX_PAYLOAD`).
RECV_SIZE = 16384
#: Socket buffer of each end: room for a burst of nudges while a worker is busy.
BUFFER_BYTES = 1 << 20
#: How soon nudges that did not fit are sent again (as one "wake every watcher").
RETRY_S = 0.05


class WorkerBus:
    """The socket pairs of a node's workers, made by the supervisor before the first fork."""

    def __init__(self, count: int) -> None:
        if count < 2:
            raise ValueError("a bus joins two workers or more")
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        for _ in range(count):
            send, receive = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            for end in (send, receive):
                end.setblocking(False)
            send.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER_BYTES)
            receive.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
            self.pairs.append((send, receive))

    @property
    def count(self) -> int:
        return len(self.pairs)

    def receiving(self, index: int) -> socket.socket:
        """Where worker `index` reads what the others publish."""
        return self.pairs[index][1]

    def peers(self, index: int) -> list[socket.socket]:
        """Where worker `index` writes: every other worker's sending end."""
        return [send for i, (send, _) in enumerate(self.pairs) if i != index]

    def keep_only(self, index: int) -> None:
        """In worker `index`: close the ends it never uses (hygiene; the supervisor keeps all)."""
        for i, (send, receive) in enumerate(self.pairs):
            if i == index:
                send.close()
            else:
                receive.close()

    def close(self) -> None:
        for send, receive in self.pairs:
            send.close()
            receive.close()


class WorkerEvents:
    """The bridge between this worker's `Events` and its sibling workers', over a `WorkerBus`."""

    def __init__(self, events: Events, receiving: socket.socket, peers: Sequence[socket.socket]) -> None:
        self._events = events
        self._receiving = receiving
        self._peers = list(peers)
        self._pending: set[int] = set()
        self._overflow = False
        #: Peers that missed nudges (their queue was full): they get "wake every watcher".
        self._behind: set[int] = set()
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.sent = 0
        self.received = 0

    def start(self) -> None:
        """Forward what this worker publishes and fire what the others do (on the running loop)."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._receiving.fileno(), self._on_readable)
        self._events.forward_to(self._queue)
        # Whatever a previous incarnation of this worker left unread is stale: one read each.
        self._drain()
        self._events.wake_all()

    def close(self) -> None:
        self._events.forward_to(None)
        if self._loop is not None:
            self._loop.remove_reader(self._receiving.fileno())
            self._loop = None

    def _queue(self, folder_id: int) -> None:
        if len(self._pending) >= MAX_PENDING:
            self._overflow = True
        else:
            self._pending.add(folder_id)
        self._schedule(0.0)

    def _schedule(self, delay: float) -> None:
        # Everything published during one turn of the loop (a group commit's folders) goes
        # out as one datagram per peer.
        if self._flush_scheduled or self._loop is None:
            return
        self._flush_scheduled = True
        if delay:
            self._loop.call_later(delay, self._flush)
        else:
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, set()
        overflow, self._overflow = self._overflow, False
        messages = [WAKE_ALL] if overflow else payloads(sorted(batch))
        for i, peer in enumerate(self._peers):
            sends = [WAKE_ALL] if i in self._behind else messages
            try:
                for payload in sends:
                    peer.send(payload.encode("ascii"))
                    self.sent += 1
            except BlockingIOError:
                self._behind.add(i)
            except OSError as exc:  # the supervisor holds every pair open: not expected
                log.warning("worker events: cannot nudge worker (%s)", exc)
            else:
                self._behind.discard(i)
        if self._behind:
            self._schedule(RETRY_S)

    def _on_readable(self) -> None:
        self._drain(publish=True)

    def _drain(self, *, publish: bool = False) -> None:
        while True:
            try:
                data = self._receiving.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            if not publish:
                continue
            self.received += 1
            ids = parse_payload(data.decode("ascii", "replace"))
            if ids is None:
                self._events.wake_all()
                continue
            for fid in ids:
                self._events.publish_remote(fid)
