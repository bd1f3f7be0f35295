"""New-mail and flag-change events, so IMAP IDLE sessions learn of changes at once.

Every listener of one `mss serve` process shares this bus: the group committer publishes the
folders each transaction changed (`mss.commit`), and each IDLE or selected session watches its
folder. Across nodes sharing one PostgreSQL, `mss.cluster_events` forwards what this bus
publishes to the other nodes (LISTEN/NOTIFY) and fires here what they publish
(`publish_remote`), so a session on one node sees a delivery made on another.

A watch is only a nudge: on firing, a session re-reads its folder's state from the database
(`imap.session.Session.sync`), so a spurious or repeated event costs one read and changes
nothing, and a lost one is caught at the session's next command.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager


class FolderWatch:
    """A subscription to one folder; `wait()` returns once something changed.

    An IDLE session waits for its socket or its folder, whichever comes first, with one
    future (`imap.server`): `wake`, when set, is called on every change, so a new message
    costs each idler one callback rather than a task, an `asyncio.Event` and a `wait_for`
    (those were most of the CPU of pushing one message to thousands of idlers)."""

    __slots__ = ("fired", "wake")

    def __init__(self) -> None:
        #: A change arrived since the last `take`.
        self.fired = False
        #: Called on each change (set by whoever waits; None: nobody waits right now).
        self.wake: Callable[[], None] | None = None

    def _fire(self) -> None:
        self.fired = True
        if self.wake is not None:
            self.wake()

    def take(self) -> bool:
        """Whether a change arrived since the last call (and clear it)."""
        fired, self.fired = self.fired, False
        return fired

    async def wait(self, timeout: float | None = None) -> bool:
        """True when a change arrived, False on timeout. Clears the signal."""
        if not self.fired:
            loop = asyncio.get_running_loop()
            fut = loop.create_future()

            def wake() -> None:
                if not fut.done():
                    fut.set_result(None)

            self.wake = wake
            try:
                await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                return False
            finally:
                self.wake = None
        return self.take()


class Events:
    def __init__(self) -> None:
        self._watchers: dict[int, set[FolderWatch]] = defaultdict(set)
        #: Where this node's own changes go beyond this process (`mss.cluster_events`).
        self._forward: Callable[[int], None] | None = None
        #: Told of every change first, local or remote (the store drops shared reads).
        self._listeners: list[Callable[[int], None]] = []

    def on_change(self, listener: Callable[[int], None]) -> None:
        """Call `listener(folder_id)` for every change, before any watcher wakes."""
        self._listeners.append(listener)

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

    def forward_to(self, forward: Callable[[int], None] | None) -> None:
        """Also hand every folder this node publishes to `forward` (None: stop)."""
        self._forward = forward

    def publish(self, folder_id: int) -> None:
        """A change committed on this node: wake its watchers here and on the other nodes."""
        self.publish_remote(folder_id)
        if self._forward is not None:
            self._forward(folder_id)

    def publish_remote(self, folder_id: int) -> None:
        """A change another node committed: wake the watchers here only (never sent back)."""
        for listener in self._listeners:
            listener(folder_id)
        for w in list(self._watchers.get(folder_id, ())):
            w._fire()

    def watched(self) -> Iterable[int]:
        """The folders someone on this node watches now."""
        return list(self._watchers)

    def wake_all(self) -> None:
        """Wake every watcher: after the link to the other nodes was down, any of their
        changes may have been missed, and a wake-up costs each session one read."""
        for folder_id in self.watched():
            self.publish_remote(folder_id)
