"""One writer at a time across the worker processes of a node on SQLite.

SQLite lets one connection write at a time; the others wait in its busy handler, which
sleeps and retries (1, 2, 5, 10 ... 100 ms, sqlite3_busy_timeout). Within one process that
never shows: the group committer is the only heavy writer. With several worker processes
(`mss.workers`) it does: while one worker commits, another's committer sleeps, the first
commits again before the sleeper wakes, and the sleeper's next sleeps grow (a benchmark with
two workers had 250s wait 450 ms at p99, with no more messages per second than one worker).

`ProcessWriteGate` queues the group committers of a node's workers in the kernel instead: an
exclusive flock(2) on a file beside the database, taken before the transaction and released
after its COMMIT. A waiter sleeps in flock and is woken the moment the holder releases, and
while it waits its own committer queues more writes into the batch it will commit. Inside a
process an asyncio lock comes first, so the one open file (flock is per open file) is only
ever held by one transaction of this process.

Writers outside the group committer (the audit trail's batches, login throttles) still meet
SQLite's busy handler: they are rare, and correctness never depends on the gate (SQLite's own
lock is still taken), only the hand-over latency does.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path


class ProcessWriteGate:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._local = asyncio.Lock()
        #: Times a writer found another process holding the gate (for tests and metrics).
        self.waits = 0

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Held for one write transaction, from before BEGIN to after COMMIT."""
        async with self._local:
            await self._acquire()
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    async def _acquire(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        self.waits += 1
        # Blocking flock in a thread: the event loop goes on serving meanwhile.
        taken = asyncio.get_running_loop().run_in_executor(None, fcntl.flock, self._fd, fcntl.LOCK_EX)
        try:
            await asyncio.shield(taken)
        except asyncio.CancelledError:
            # The thread cannot be stopped and may still get the lock: wait for it, give the
            # lock back, and only then let the asyncio lock go (the next holder must not
            # find this process holding the flock already).
            while not taken.done():
                try:
                    await asyncio.shield(taken)
                except asyncio.CancelledError:
                    continue
            if taken.exception() is None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            raise

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def sqlite_gate_path(url: str) -> Path | None:
    """The gate's file beside a SQLite database file (`<db>-writer.lock`); None for memory."""
    prefix = "sqlite+aiosqlite:///"
    if not url.startswith(prefix):
        return None
    path = url[len(prefix) :].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path + "-writer.lock")
