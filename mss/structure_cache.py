"""The structures front ends keep for stored messages (`Store.keep_structures`: IMAP's
ENVELOPE and BODYSTRUCTURE in wire form), held in memory per process as well.

Why: a kept structure is a few hundred bytes stored beside the message's ciphertext, and on
SQLite the `structure` column comes after `content` in the row, so reading it walks the
ciphertext's overflow pages: `FETCH 1:* (FLAGS ENVELOPE)` on a 10,000-message folder read
about 150 MB of pages for 6 MB of structures (about 200 ms). Dovecot answers it from its
index cache; this is ours.

A structure never changes for a (folder, UID) once stored (the stored bytes are immutable
and a UID is never reused while the folder's UIDVALIDITY stands), so entries need no
invalidation across nodes: they are keyed by (mailbox, folder id, UIDVALIDITY), and a folder
deleted and made again (on SQLite its id may come back) gets a new UIDVALIDITY. Entries of
expunged messages stay until their folder is evicted: nobody asks for them again.

What is held: the opaque values front ends gave `keep_structures` (for IMAP: the clear outer
header fields the ENVELOPE shows, the same as the store keeps in clear columns, and the MIME
structure of the S/MIME wrapper), never content. Bounded in bytes, least recently used
folders first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

__all__ = ["StructureCache"]

#: Bytes of structures kept, all folders together (about 600 a message: ~50,000 messages).
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
#: What an entry costs besides its value (dict slot, bytes header).
_OVERHEAD = 100

FolderKey = tuple[str, int, int]  # (mailbox, folder id, UIDVALIDITY)


class StructureCache:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._folders: OrderedDict[FolderKey, dict[int, bytes]] = OrderedDict()
        self._sizes: dict[FolderKey, int] = {}
        self._held = 0

    @property
    def held(self) -> int:
        """Bytes held now (values and overhead)."""
        return self._held

    def get(self, key: FolderKey, uids: Iterable[int]) -> tuple[dict[int, bytes], list[int]]:
        """The values held for `uids` of the folder, and the UIDs with none held."""
        entry = self._folders.get(key)
        if entry is None:
            return {}, list(uids)
        self._folders.move_to_end(key)
        found: dict[int, bytes] = {}
        missing: list[int] = []
        for uid in uids:
            v = entry.get(uid)
            if v is None:
                missing.append(uid)
            else:
                found[uid] = v
        return found, missing

    def put(self, key: FolderKey, values: Mapping[int, bytes]) -> None:
        if not values:
            return
        entry = self._folders.get(key)
        if entry is None:
            entry = self._folders[key] = {}
            self._sizes[key] = 0
        self._folders.move_to_end(key)
        added = 0
        for uid, v in values.items():
            old = entry.get(uid)
            if old is not None:
                added -= len(old) + _OVERHEAD
            entry[uid] = v
            added += len(v) + _OVERHEAD
        self._sizes[key] += added
        self._held += added
        while self._held > self.max_bytes and self._folders:
            self._drop(next(iter(self._folders)))

    def _drop(self, key: FolderKey) -> None:
        self._folders.pop(key, None)
        self._held -= self._sizes.pop(key, 0)
