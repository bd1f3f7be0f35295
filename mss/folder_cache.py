"""The message lists of recently read folders, kept per process and keyed by the folder's
(UIDNEXT, HIGHESTMODSEQ).

Every change to a folder's messages (delivery, copy, flag, keyword, expunge) moves one of
the two counters in the transaction that makes it (RFC 7162 3.1.1; `mss.store`), so a list
read under a state is the folder's list for as long as the folder row still shows that
state, whichever node made the change. A reader first reads the folder row (one primary-key
read) and takes the cached list when the state matches; otherwise it reads the messages and
stores them under the state it read *before* them: a list newer than its key is still
correct for anyone who sees that key, and the next change moves the key.

Why: an IMAP session asks for its folder's list at SELECT and at most commands (FETCH,
SEARCH, STORE, the sync after each), and a 10,000-message folder costs about 80 ms to read
and build. The cache is bounded by the number of messages it holds (least recently used
folders go first), and holds metadata only: UIDs, MODSEQs, flags, dates and sizes, never
content nor header values.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from mss.records import MessageMeta

__all__ = ["FolderCache"]

#: Messages kept, all folders together: about 200 bytes each, so 40 MB at most by default.
DEFAULT_MAX_MESSAGES = 200_000


class FolderCache:
    def __init__(self, max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        self.max_messages = max_messages
        self._entries: OrderedDict[int, tuple[str, tuple[int, int], tuple[MessageMeta, ...]]] = OrderedDict()
        self._held = 0
        self.hits = 0
        self.misses = 0

    def get(self, folder_id: int, mailbox: str, state: tuple[int, int]) -> tuple[MessageMeta, ...] | None:
        """The list read under `state`, or None (and the stale entry dropped)."""
        entry = self._entries.get(folder_id)
        if entry is None or entry[0] != mailbox or entry[1] != state:
            if entry is not None:
                self._drop(folder_id)
            self.misses += 1
            return None
        self._entries.move_to_end(folder_id)
        self.hits += 1
        return entry[2]

    def holds(self, folder_id: int, mailbox: str, state: tuple[int, int]) -> bool:
        """Whether the list read under `state` is here (not counted as a hit or a miss)."""
        entry = self._entries.get(folder_id)
        return entry is not None and entry[0] == mailbox and entry[1] == state

    def put(self, folder_id: int, mailbox: str, state: tuple[int, int], metas: Sequence[MessageMeta]) -> None:
        if len(metas) > self.max_messages:
            return
        self._drop(folder_id)
        self._entries[folder_id] = (mailbox, state, tuple(metas))
        self._held += len(metas)
        while self._held > self.max_messages and self._entries:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def _drop(self, folder_id: int) -> None:
        entry = self._entries.pop(folder_id, None)
        if entry is not None:
            self._held -= len(entry[2])
