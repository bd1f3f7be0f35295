"""Folder-change events across the nodes that share one PostgreSQL (LISTEN/NOTIFY).

Each `mss serve` node on PostgreSQL keeps one dedicated asyncpg connection, outside the
SQLAlchemy pool, that LISTENs on `CHANNEL` and NOTIFYs on it what this node's group committer
published (`mss.events.Events.forward_to`). A notification names folder ids only (never a
mailbox, an address or anything about the mail), comma-separated; the receiving node wakes its
watchers of those folders (`Events.publish_remote`), whose sessions then read the folder's state
from the database. So the link carries nudges, not data: a notification lost while the link was
down costs latency, not correctness, and on every (re)connection all local watchers are woken
once to catch up (`Events.wake_all`).

PostgreSQL delivers a NOTIFY to every listening connection including the sender's; this
node's own notifications are recognised by the sending backend's pid and skipped
(PostgreSQL "NOTIFY": the pid of the notifying session is delivered with the payload).

A NOTIFY is sent after the change committed (the group committer publishes after COMMIT), on
its own connection, so another node never wakes before the change is visible to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import asyncpg
from sqlalchemy.engine import make_url

from mss.events import Events

log = logging.getLogger("mss.cluster")

CHANNEL = "mss_folder_changed"
#: PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
MAX_PAYLOAD = 7900
#: Most distinct folders waiting to be sent; beyond, one "*" asks every node to wake all.
MAX_PENDING = 50_000
WAKE_ALL = "*"


def asyncpg_dsn(url: str) -> str:
    """The libpq-style DSN asyncpg takes, from the SQLAlchemy URL of the settings."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def payloads(folder_ids: Iterable[int]) -> list[str]:
    """Comma-separated folder ids, split so that no payload reaches PostgreSQL's limit."""
    out: list[str] = []
    current: list[str] = []
    size = 0
    for fid in folder_ids:
        item = str(fid)
        if current and size + 1 + len(item) > MAX_PAYLOAD:
            out.append(",".join(current))
            current, size = [], 0
        current.append(item)
        size += len(item) + (1 if size else 0)
    if current:
        out.append(",".join(current))
    return out


def parse_payload(payload: str) -> list[int] | None:
    """Folder ids of a notification; None for "wake every watcher". Anything malformed is
    ignored (the channel is the deployment's own, but a nudge is never trusted with more)."""
    if payload == WAKE_ALL:
        return None
    ids: list[int] = []
    for part in payload.split(","):
        if part.isdigit() and len(part) <= 19:
            ids.append(int(part))
    return ids


class ClusterEvents:
    """The bridge between this node's `Events` and the other nodes', over PostgreSQL."""

    def __init__(self, database_url: str, events: Events, *, retry_s: float = 1.0) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._events = events
        self._retry_s = retry_s
        self._pending: set[int] = set()
        self._overflow = False
        self._wakeup = asyncio.Event()
        self._pid: int | None = None
        #: Set once the first LISTEN is in place (tests and `mss status` wait on it).
        self.listening = asyncio.Event()
        self.sent = 0
        self.received = 0

    def _queue(self, folder_id: int) -> None:
        if len(self._pending) >= MAX_PENDING:
            self._overflow = True
        else:
            self._pending.add(folder_id)
        self._wakeup.set()

    def _on_notify(self, _conn: object, pid: int, _channel: str, payload: str) -> None:
        if pid == self._pid:
            return
        self.received += 1
        ids = parse_payload(payload)
        if ids is None:
            self._events.wake_all()
            return
        for fid in ids:
            self._events.publish_remote(fid)

    async def run(self) -> None:
        """Listen and send until cancelled; reconnect after any failure, every `retry_s`."""
        self._events.forward_to(self._queue)
        try:
            while True:
                try:
                    await self._session()
                except asyncio.CancelledError:
                    raise
                except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("cluster events link down (%s); retrying in %.0f s", exc, self._retry_s)
                self.listening.clear()
                await asyncio.sleep(self._retry_s)
        finally:
            self._events.forward_to(None)

    async def _session(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=10)
        try:
            self._pid = conn.get_server_pid()
            lost = asyncio.Event()
            # The server ending the connection (restart, pg_terminate_backend) shows here at
            # once, not only at the next send.
            conn.add_termination_listener(lambda _c: (lost.set(), self._wakeup.set()))
            await conn.add_listener(CHANNEL, self._on_notify)
            self.listening.set()
            # Anything another node changed while we were not listening: every local session
            # re-reads its folder once.
            self._events.wake_all()
            log.info("cluster events: listening on %s", CHANNEL)
            while True:
                if lost.is_set() or conn.is_closed():
                    raise ConnectionResetError("the server closed the LISTEN connection")
                if not self._pending and not self._overflow:
                    self._wakeup.clear()
                    # A link that died silently (no FIN) shows at the next send; ping now and
                    # then so that a quiet node notices too, reconnects and wakes its sessions.
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), 30)
                    except TimeoutError:
                        await asyncio.wait_for(conn.execute("SELECT 1"), 10)
                    continue
                batch, self._pending = self._pending, set()
                overflow, self._overflow = self._overflow, False
                try:
                    for payload in [WAKE_ALL] if overflow else payloads(sorted(batch)):
                        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
                        self.sent += 1
                except BaseException:
                    self._pending |= batch  # sent again after reconnecting
                    self._overflow |= overflow
                    raise
        finally:
            self._pid = None
            try:
                await asyncio.wait_for(conn.close(), 5)
            except (TimeoutError, OSError, asyncpg.InterfaceError):
                conn.terminate()
