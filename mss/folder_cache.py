"""The message lists of recently read folders, kept per process and keyed by the folder's
(UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ) (`ListState`).

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

UIDVALIDITY is in the key because a folder id alone does not name one folder for ever: SQLite
gives a new row the highest id plus one, so a folder deleted last and a folder created after
it share an id, and their counters can meet (three messages each: UIDNEXT 4, HIGHESTMODSEQ 3).
Every folder of a mailbox gets a UIDVALIDITY of its own (`mss.store`, RFC 3501 2.3.1.1), so
a list never serves, nor is brought up to date for, the folder that took its id.

When the state moved, the list held for an older state of the same folder is brought up to
date instead of read again (`mss.store.Store._fresh_list`): the messages whose MODSEQ is
above the old HIGHESTMODSEQ (new ones, and every flag or keyword change: each moves the
message's MODSEQ, RFC 7162 3.1) replace or join theirs, and the UIDs expunged since (their
tombstones in `vanished`, at the expunge's MODSEQ, deleted only with the folder) leave. A
flag changed by another worker process or node then costs a read of the changed rows, not of
the whole folder.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

from mss.records import MessageMeta

__all__ = ["FolderCache", "ListState"]

#: Messages kept, all folders together: about 200 bytes each, so 40 MB at most by default.
DEFAULT_MAX_MESSAGES = 200_000


def _uid(m: MessageMeta) -> int:
    return m.uid


class ListState(NamedTuple):
    """The folder row's counters a list was read under (see the module's docstring)."""

    uidvalidity: int
    uidnext: int
    highestmodseq: int


class FolderCache:
    def __init__(self, max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        self.max_messages = max_messages
        self._entries: OrderedDict[int, tuple[str, ListState, tuple[MessageMeta, ...]]] = OrderedDict()
        self._held = 0
        #: Unseen counts of the lists held, computed on demand (`unseen`).
        self._unseen: dict[int, int] = {}
        self.hits = 0
        self.misses = 0
        #: Lists brought up to date from the changes since their state (`Store._fresh_list`).
        self.deltas = 0

    def get(self, folder_id: int, mailbox: str, state: ListState) -> tuple[MessageMeta, ...] | None:
        """The list read under `state`, or None. The list of another state of the folder
        stays (`base`): a reader brings it up to date from the changes since."""
        entry = self._entries.get(folder_id)
        if entry is None or entry[0] != mailbox or entry[1] != state:
            if entry is not None and entry[0] != mailbox:
                self._drop(folder_id)
            self.misses += 1
            return None
        self._entries.move_to_end(folder_id)
        self.hits += 1
        return entry[2]

    def base(self, folder_id: int, mailbox: str, uidvalidity: int) -> tuple[ListState, tuple[MessageMeta, ...]] | None:
        """The list held for this folder (same mailbox, same UIDVALIDITY) whatever its state,
        with that state: what a reader whose state moved brings up to date (`mss.store`)."""
        entry = self._entries.get(folder_id)
        if entry is None or entry[0] != mailbox or entry[1].uidvalidity != uidvalidity:
            return None
        return entry[1], entry[2]

    def unseen(self, folder_id: int) -> int:
        """How many messages of the list held for the folder lack \\Seen (counted once per
        list: every SELECT and STATUS asks); 0 when none is held."""
        n = self._unseen.get(folder_id)
        if n is None:
            entry = self._entries.get(folder_id)
            if entry is None:
                return 0
            n = self._unseen[folder_id] = sum(1 for m in entry[2] if "\\Seen" not in m.flags)
        return n

    def holds(self, folder_id: int, mailbox: str, state: ListState) -> bool:
        """Whether the list read under `state` is here (not counted as a hit or a miss)."""
        entry = self._entries.get(folder_id)
        return entry is not None and entry[0] == mailbox and entry[1] == state

    def put(self, folder_id: int, mailbox: str, state: ListState, metas: Sequence[MessageMeta]) -> None:
        self._drop(folder_id)  # an older list must not stay as the base of later updates
        if len(metas) > self.max_messages:
            return
        self._entries[folder_id] = (mailbox, state, tuple(metas))
        self._held += len(metas)
        while self._held > self.max_messages and self._entries:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def advance(
        self,
        folder_id: int,
        mailbox: str,
        before: ListState,
        after: ListState,
        changed: Sequence[MessageMeta],
    ) -> bool:
        """A write of this process moved the folder from `before` to `after`, changing the
        flags of `changed` and nothing else (a STORE, under the folder's lock): the list held
        for `before`, if any, becomes the list for `after` with those messages replaced,
        instead of a reload of the whole folder at the next read. Only a list that is not
        newer than `before` (no MODSEQ above it) is advanced. Returns whether it was."""
        entry = self._entries.get(folder_id)
        if entry is None or entry[0] != mailbox or entry[1] != before:
            return False
        metas = list(entry[2])
        if metas and max(m.modseq for m in metas) > before.highestmodseq:
            return False
        for m in changed:
            i = bisect_left(metas, m.uid, key=_uid)
            if i < len(metas) and metas[i].uid == m.uid:
                metas[i] = m
        self._entries[folder_id] = (mailbox, after, tuple(metas))
        self._entries.move_to_end(folder_id)
        self._unseen.pop(folder_id, None)
        return True

    def _drop(self, folder_id: int) -> None:
        entry = self._entries.pop(folder_id, None)
        self._unseen.pop(folder_id, None)
        if entry is not None:
            self._held -= len(entry[2])
