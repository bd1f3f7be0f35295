"""New-mail and flag-change events, so IMAP IDLE sessions learn of changes at once.

In-process only for now: every listener of one `mss serve` process shares this bus.
Across nodes (PostgreSQL LISTEN/NOTIFY) is the scale-out issue's job.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class FolderWatch:
    """A subscription to one folder; `wait()` returns once something changed."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def _fire(self) -> None:
        self._event.set()

    async def wait(self, timeout: float | None = None) -> bool:
        """True when a change arrived, False on timeout. Clears the signal."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        self._event.clear()
        return True


class Events:
    def __init__(self) -> None:
        self._watchers: dict[int, set[FolderWatch]] = defaultdict(set)

    @contextmanager
    def watch(self, folder_id: int) -> Iterator[FolderWatch]:
        w = FolderWatch()
        self._watchers[folder_id].add(w)
        try:
            yield w
        finally:
            self._watchers[folder_id].discard(w)
            if not self._watchers[folder_id]:
                del self._watchers[folder_id]

    def publish(self, folder_id: int) -> None:
        for w in list(self._watchers.get(folder_id, ())):
            w._fire()
