"""The folders an IMAP session sees: its own mailbox's, and the shared mailboxes' under one
shared namespace (RFC 2342).

A professional logged in without an authorization identity sees each ORG mailbox they are
a member of, with the "l" right (RFC 4314), as

    Partagés/<org address>/INBOX, Partagés/<org address>/Sent, ...

`Partagés` and `Partagés/<org address>` are levels of the namespace, not folders: LIST
answers them `\\Noselect \\HasChildren`, SELECT answers NO. Each shared mailbox is opened
lazily, the first time a command names or lists it, through `MailAccess.open(principal,
address)` with the session's principal as it is (not narrowed): the core then gives the
handle the member's rights and their own \\Seen (`mss.rights`). A shared mailbox the core
refuses (membership revoked since login) is as if it did not exist.

`Namespaces` has the `MailboxHandle` interface with names that include the namespace: the
command handlers work on it as on one mailbox. Folders keep their own `mailbox` (their
`FolderInfo` carries the full name), so every call on a folder goes to the handle of its
mailbox; a COPY or MOVE between mailboxes goes through the core's `copy_to`.

Once narrowed by an authorization identity (SASL authzid = the ORG address) the session has
one mailbox and no shared namespace, as before; the member's rights still hold there.
A personal folder cannot be created under `Partagés/` (the name is the namespace's, compared
after NFC normalisation), nor renamed there. A personal folder of that name from before
(none can be made since) is hidden while the session has a shared namespace.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import datetime
from time import monotonic

from mss import services
from mss.principal import Principal
from mss.records import DELIMITER, FlagMode, FolderInfo, MessageMeta, OuterHeaders, Quota, StoredRef
from mss.refusals import Reason, Refusal
from mss.services import AppendItem, FolderState, FolderWatch, MailAccess, MailboxHandle

#: The shared namespace's prefix (RFC 2342 5: "Other Users' Namespace" is not it: these are
#: "Shared Namespaces", one per ORG mailbox below it).
SHARED_ROOT = "Partagés"
SHARED_PREFIX = SHARED_ROOT + DELIMITER


def shared_name(address: str, name: str = "") -> str:
    """The name a shared mailbox's folder has in the session (`""`: the mailbox's level)."""
    return SHARED_PREFIX + address + (DELIMITER + name if name else "")


class Namespaces:
    """One session's mailboxes behind the `MailboxHandle` interface (module docstring)."""

    def __init__(self, personal: MailboxHandle, mail: MailAccess, shared: Iterable[str] = ()) -> None:
        self._personal = personal
        self._mail = mail
        #: The shared mailboxes listed at login, and their handles once opened (None: refused).
        self.shared_addresses: tuple[str, ...] = tuple(sorted(shared))
        self._opened: dict[str, MailboxHandle | None] = {}
        self._refused_at: dict[str, float] = {}

    # -- what the session is -------------------------------------------------------------

    @property
    def address(self) -> str:
        return self._personal.address

    @property
    def principal(self) -> Principal:
        return self._personal.principal

    @property
    def rights(self) -> str:
        return self._personal.rights

    @property
    def shared(self) -> bool:
        return self._personal.shared

    @property
    def personal(self) -> MailboxHandle:
        return self._personal

    def allowed_flags(self, flags: Iterable[str]) -> frozenset[str]:
        return self._personal.allowed_flags(flags)

    def is_level(self, name: str) -> bool:
        """Whether `name` is a level of the shared namespace (`Partagés`, `Partagés/<org>`)."""
        if not self.shared_addresses:
            return False
        if name == SHARED_ROOT:
            return True
        return name.startswith(SHARED_PREFIX) and name[len(SHARED_PREFIX) :] in self.shared_addresses

    # -- routing -------------------------------------------------------------------------

    async def _shared_handle(self, address: str) -> MailboxHandle | None:
        if address not in self.shared_addresses:
            return None
        if address not in self._opened or (
            self._opened[address] is None and monotonic() - self._refused_at.get(address, 0.0) >= services.RIGHTS_TTL
        ):
            try:
                self._opened[address] = await self._mail.open(self.principal, address)
            except Refusal:
                # Revoked since login: not there any more (asked again after RIGHTS_TTL, in
                # case it is granted back). An opened handle reads its rights again itself.
                self._opened[address] = None
                self._refused_at[address] = monotonic()
        return self._opened[address]

    async def route(self, name: str) -> tuple[MailboxHandle, str] | None:
        """The handle and its own folder name for a session name; None for a level of the
        shared namespace or a shared mailbox the session does not have."""
        if not self.shared_addresses or not (name == SHARED_ROOT or name.startswith(SHARED_PREFIX)):
            return self._personal, name
        address, _, local = name[len(SHARED_PREFIX) :].partition(DELIMITER)
        if not local:
            return None
        handle = await self._shared_handle(address)
        return (handle, local) if handle is not None else None

    def handle_of(self, folder: FolderInfo) -> MailboxHandle:
        """The handle of the mailbox `folder` belongs to."""
        if folder.mailbox == self._personal.address:
            return self._personal
        handle = self._opened.get(folder.mailbox)
        if handle is None:
            raise Refusal(Reason.NOT_ALLOWED, "Not a folder of this session", f"folder of {folder.mailbox}")
        return handle

    def rights_of(self, folder: FolderInfo) -> str:
        return self.handle_of(folder).rights

    def _outer(self, folder: FolderInfo | None) -> FolderInfo | None:
        """`folder` named as the session names it."""
        if folder is None or folder.mailbox == self._personal.address:
            return folder
        return replace(folder, name=shared_name(folder.mailbox, folder.name))

    def _inner(self, folder: FolderInfo) -> FolderInfo:
        """`folder` named as its own mailbox names it."""
        if folder.mailbox == self._personal.address:
            return folder
        prefix = shared_name(folder.mailbox) + DELIMITER
        return replace(folder, name=folder.name[len(prefix) :]) if folder.name.startswith(prefix) else folder

    def _call(self, folder: FolderInfo) -> tuple[MailboxHandle, FolderInfo]:
        return self.handle_of(folder), self._inner(folder)

    async def _routed(self, name: str) -> tuple[MailboxHandle, str]:
        found = await self.route(name)
        if found is None:
            raise Refusal(Reason.NO_SUCH_FOLDER, f"No folder {name}")
        return found

    def _reserved(self, name: str) -> None:
        # NFC first: an NFD "Partage\u0301s/x" is the same name to the user (RFC 5198 2).
        name = unicodedata.normalize("NFC", name)
        if name == SHARED_ROOT or name.startswith(SHARED_PREFIX):
            raise Refusal(Reason.CANNOT, f"{SHARED_ROOT} is the shared namespace: no folder of yours goes there")

    # -- folders ---------------------------------------------------------------------------

    async def folders(self) -> list[FolderInfo]:
        own = await self._personal.folders()
        if not self.shared_addresses:
            return own
        out = [f for f in own if not (f.name == SHARED_ROOT or f.name.startswith(SHARED_PREFIX))]
        for address in self.shared_addresses:
            handle = await self._shared_handle(address)
            if handle is not None:
                out += [f for f in (self._outer(f) for f in await handle.folders()) if f is not None]
        return out

    async def folder(self, name: str) -> FolderInfo | None:
        found = await self.route(name)
        if found is None:
            return None
        handle, local = found
        return self._outer(await handle.folder(local))

    async def create_folder(self, name: str, special_use: str | None = None) -> FolderInfo:
        found = await self.route(name)
        if found is None:
            raise Refusal(Reason.CANNOT, f"{name} is a level of the shared namespace")
        handle, local = found
        if handle is self._personal:
            self._reserved(local)
        created = self._outer(await handle.create_folder(local, special_use))
        assert created is not None
        return created

    async def delete_folder(self, name: str) -> None:
        handle, local = await self._routed(name)
        await handle.delete_folder(local)

    async def rename_folder(self, old: str, new: str) -> None:
        h_old, l_old = await self._routed(old)
        found = await self.route(new)
        if found is None or found[0] is not h_old:
            raise Refusal(Reason.CANNOT, "A folder is renamed within its own mailbox only")
        if h_old is self._personal:
            self._reserved(found[1])
        await h_old.rename_folder(l_old, found[1])

    async def subscribe(self, name: str, subscribed: bool) -> None:
        handle, local = await self._routed(name)
        await handle.subscribe(local, subscribed)

    # -- one folder ------------------------------------------------------------------------

    async def folder_state(self, folder: FolderInfo) -> FolderState | None:
        h, f = self._call(folder)
        return await h.folder_state(f)

    async def claim_recent(self, folder: FolderInfo) -> tuple[int, int]:
        h, f = self._call(folder)
        return await h.claim_recent(f)

    async def messages(self, folder: FolderInfo, known: FolderState | None = None) -> list[MessageMeta]:
        h, f = self._call(folder)
        return await h.messages(f, known)

    async def headers(self, folder: FolderInfo, uids: Sequence[int]) -> dict[int, OuterHeaders]:
        h, f = self._call(folder)
        return await h.headers(f, uids)

    async def content(self, folder: FolderInfo, uids: Sequence[int]) -> dict[int, bytes]:
        h, f = self._call(folder)
        return await h.content(f, uids)

    async def structures(self, folder: FolderInfo, uids: Sequence[int]) -> dict[int, bytes]:
        h, f = self._call(folder)
        return await h.structures(f, uids)

    async def keep_structures(self, folder: FolderInfo, structures: dict[int, bytes]) -> None:
        h, f = self._call(folder)
        await h.keep_structures(f, structures)

    async def set_flags(
        self, folder: FolderInfo, uids: Sequence[int], flags: Iterable[str], mode: FlagMode
    ) -> list[MessageMeta]:
        h, f = self._call(folder)
        return await h.set_flags(f, uids, flags, mode)

    async def set_flags_unchanged_since(
        self, folder: FolderInfo, uids: Sequence[int], flags: Iterable[str], mode: FlagMode, unchanged_since: int
    ) -> tuple[list[MessageMeta], list[int]]:
        h, f = self._call(folder)
        return await h.set_flags_unchanged_since(f, uids, flags, mode, unchanged_since)

    async def expunge(self, folder: FolderInfo, uids: Sequence[int] | None = None) -> list[int]:
        h, f = self._call(folder)
        return await h.expunge(f, uids)

    async def vanished(self, folder: FolderInfo, since: int) -> list[int]:
        h, f = self._call(folder)
        return await h.vanished(f, since)

    async def copy(self, folder: FolderInfo, uids: Sequence[int], dest: FolderInfo) -> list[tuple[int, int]]:
        return await self._copy(folder, uids, dest, move=False)

    async def move(self, folder: FolderInfo, uids: Sequence[int], dest: FolderInfo) -> list[tuple[int, int]]:
        return await self._copy(folder, uids, dest, move=True)

    async def _copy(
        self, folder: FolderInfo, uids: Sequence[int], dest: FolderInfo, *, move: bool
    ) -> list[tuple[int, int]]:
        h, f = self._call(folder)
        h2, d = self._call(dest)
        if h is h2:
            return await (h.move if move else h.copy)(f, uids, d)
        return await h.copy_to(f, uids, h2, d, move=move)

    async def copy_to(
        self, folder: FolderInfo, uids: Sequence[int], other: MailboxHandle, dest: FolderInfo, *, move: bool = False
    ) -> list[tuple[int, int]]:
        h, f = self._call(folder)
        return await h.copy_to(f, uids, other, dest, move=move)

    async def append(
        self, folder: str, raw: bytes, flags: Iterable[str] = (), internaldate: datetime | None = None
    ) -> StoredRef:
        (ref,) = await self.append_many(folder, [(raw, flags, internaldate)])
        return ref

    async def append_many(self, folder: str, messages: Sequence[AppendItem]) -> list[StoredRef]:
        """Sealed to the keys of the mailbox the folder belongs to (a shared one: its members')."""
        handle, local = await self._routed(folder)
        return await handle.append_many(local, messages)

    async def quota(self) -> Quota:
        return await self._personal.quota()

    async def quota_of(self, folder: FolderInfo) -> Quota:
        """The quota of the mailbox `folder` belongs to (each mailbox is one quota root)."""
        return await self.handle_of(folder).quota()

    def quota_root(self, folder: FolderInfo) -> str:
        """The name of the one quota root of `folder` (RFC 9208 4.3): "" for the personal
        mailbox, a shared mailbox's namespace prefix (`Partagés/<address>`) for its folders."""
        return "" if folder.mailbox == self._personal.address else shared_name(folder.mailbox)

    async def quota_of_root(self, root: str) -> Quota | None:
        """The quota of the root named `root` (`quota_root`), None for no such root."""
        if root == "":
            return await self._personal.quota()
        if not root.startswith(SHARED_PREFIX):
            return None
        handle = await self._shared_handle(root[len(SHARED_PREFIX) :])
        return None if handle is None else await handle.quota()

    def watch(self, folder: FolderInfo) -> AbstractContextManager[FolderWatch]:
        h, f = self._call(folder)
        return h.watch(f)
