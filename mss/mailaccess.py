"""`MailAccess`: a principal opens one of its mailboxes and gets a handle whose every method is
already authorised (DESIGN.md, "Core services").

The check happens once, at `open`, in the core, whatever the front end: a principal that may
not use a mailbox never gets a handle for it. The handle then only accepts folders it handed
out (their `mailbox` is the handle's), and the store checks each folder id against the
mailbox again in SQL, so a folder id forged or kept from another session matches nothing.

Each handle carries the principal's RFC 4314 rights on its mailbox (`mss.rights`, read at
`open`) and checks them itself, method by method, following RFC 4314 4's table: a missing
right is `Refusal(NOT_ALLOWED)` (IMAP `NO [NOPERM]`, RFC 5530), whichever front end asks.
A member of a shared mailbox also has their own \\Seen there (`Access.reader`).

A member's rights can change while a session is open (`mss mailbox grant` / `revoke`): the
handle reads them again (one indexed query, `MailboxRights.access`) when they are older
than `mss.services.RIGHTS_TTL` (5 s) on any method, and always when a folder is named anew (`folder`: SELECT,
EXAMINE, STATUS, a COPY/MOVE destination) and on APPEND. So a revocation stops an open
session within `RIGHTS_TTL` at most, and at once for a new SELECT or APPEND; a grant that
raises rights holds within the same bound. An owner's rights (`OWNER`) are not revocable
and are not read again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime
from time import monotonic

from crypto.rfc5322 import to_crlf
from mss import services
from mss.events import FolderWatch
from mss.folder_cache import ListState
from mss.message import parse_message_async
from mss.principal import Principal
from mss.records import FlagMode, FolderInfo, MessageMeta, NewMessage, OuterHeaders, Quota, StoredRef
from mss.refusals import Reason, Refusal
from mss.rights import FLAG_CLASSES, OWNER, Access, DirectoryRights, flag_right
from mss.sealing import Sealer
from mss.services import MAX_APPEND_MESSAGES, AppendItem, FolderState, MailboxHandle, MailboxRights
from mss.store import Store


class Handle:
    """A `mss.services.MailboxHandle` over the store, for one principal and one mailbox."""

    def __init__(
        self,
        store: Store,
        sealer: Sealer,
        principal: Principal,
        address: str,
        max_size: int,
        access: Access | None = None,
        rights: MailboxRights | None = None,
    ) -> None:
        self._store = store
        self._sealer = sealer
        self._principal = principal
        self._address = address
        self._max_size = max_size
        self._access = access or Access(OWNER)
        #: Whose own \\Seen and subscriptions this handle shows (a shared mailbox's member).
        self._reader = self._access.reader
        #: The folder ids this handle handed out: the only ones it accepts.
        self._issued: set[int] = set()
        #: Where a member's rights are read again, and when they last were (module docstring).
        self._rights_source = rights if self._reader is not None else None
        self._checked_at = monotonic()

    @property
    def rights(self) -> str:
        """The principal's RFC 4314 rights letters on this mailbox (`mss.rights`)."""
        return self._access.rights

    @property
    def shared(self) -> bool:
        """Whether the principal reads this mailbox as one member of it (its own \\Seen)."""
        return self._reader is not None

    @property
    def _as_reader(self) -> dict[str, str]:
        """The store's `reader` argument, given only for a member (whose \\Seen is theirs)."""
        return {"reader": self._reader} if self._reader is not None else {}

    async def _refresh(self, *, force: bool = False) -> None:
        """Read a member's rights again when older than `services.RIGHTS_TTL` (or `force`)."""
        if self._rights_source is None:
            return
        now = monotonic()
        if not force and now - self._checked_at < services.RIGHTS_TTL:
            return
        access = await self._rights_source.access(self._principal, self._address)
        self._access = Access(access.rights, reader=self._reader)
        self._checked_at = now

    async def _check(self, *rights: str, force: bool = False) -> None:
        """`_need`, on rights read again if stale (`_refresh`)."""
        await self._refresh(force=force)
        self._need(*rights)

    def _need(self, *rights: str) -> None:
        """Refuse unless the principal has every one of `rights` (RFC 4314 4)."""
        missing = "".join(r for r in rights if r not in self._access.rights)
        if missing:
            raise Refusal(
                Reason.NOT_ALLOWED,
                f"Missing right {missing!r} on {self._address} (RFC 4314); rights are granted by the operator "
                "(mss mailbox grant)",
                f"{self._principal.kind}:{self._principal.identifier} on {self._address} lacks {missing!r} "
                f"(has {self._access.rights!r})",
            )

    def _issue(self, folder: FolderInfo | None) -> FolderInfo | None:
        if folder is not None:
            self._issued.add(folder.id)
        return folder

    @property
    def address(self) -> str:
        return self._address

    @property
    def principal(self) -> Principal:
        return self._principal

    def _own(self, folder: FolderInfo) -> int:
        """The folder's id, once it is known to be one of this mailbox's folders."""
        if folder.mailbox != self._address or folder.id not in self._issued:
            raise Refusal(
                Reason.NOT_ALLOWED,
                "Not a folder of this mailbox",
                f"{self._principal.identifier} on {self._address} named a folder of {folder.mailbox}",
            )
        return folder.id

    async def folders(self) -> list[FolderInfo]:
        """Every folder, with the "l" right (RFC 4314 4, LIST); none without it."""
        await self._refresh()
        if not self._access.has("l"):
            return []
        found = await self._store.list_folders(self._address, **self._as_reader)
        self._issued.update(f.id for f in found)
        return found

    async def folder(self, name: str) -> FolderInfo | None:
        """The folder; its counts (what STATUS tells) only with the "r" right. None (no such
        folder) once the principal has no rights left here: rights are read again first
        (SELECT, EXAMINE, STATUS, a COPY destination name a folder through here)."""
        await self._refresh(force=True)
        if not self._access.rights:
            return None
        info = await self._store.get_folder(self._address, name, **self._as_reader)
        if info is not None and not self._access.has("r"):
            info = replace(info, exists=0, unseen=0, recent=0)
        return self._issue(info)

    async def create_folder(self, name: str, special_use: str | None = None) -> FolderInfo:
        await self._check("k")  # RFC 4314 4: CREATE needs "k" on the parent (here: the mailbox)
        created = await self._store.create_folder(self._address, name, special_use)
        self._issued.add(created.id)
        return created

    async def delete_folder(self, name: str) -> None:
        await self._check("x")
        await self._store.delete_folder(self._address, name)

    async def rename_folder(self, old: str, new: str) -> None:
        await self._check("x", "k")  # RFC 4314 4: "x" on the old name, "k" on the new parent
        await self._store.rename_folder(self._address, old, new)

    async def subscribe(self, name: str, subscribed: bool) -> None:
        """A member's subscription is their own (`member_subscription`)."""
        await self._check("l")
        await self._store.set_subscribed(self._address, name, subscribed, **self._as_reader)

    async def folder_state(self, folder: FolderInfo) -> FolderState | None:
        await self._check("r")
        state = await self._store.folder_state(self._address, self._own(folder), folder.uidvalidity)
        return FolderState(*state) if state else None

    async def claim_recent(self, folder: FolderInfo) -> tuple[int, int]:
        await self._check("r")
        return await self._store.claim_recent(self._address, self._own(folder))

    async def messages(self, folder: FolderInfo, known: FolderState | None = None) -> list[MessageMeta]:
        await self._check("r")
        at = ListState(folder.uidvalidity, known.uidnext, known.highestmodseq) if known is not None else None
        return await self._store.messages(self._address, self._own(folder), at, **self._as_reader)

    async def headers(self, folder: FolderInfo, uids: Sequence[int]) -> dict[int, OuterHeaders]:
        await self._check("r")
        return await self._store.headers(self._address, self._own(folder), uids)

    async def content(self, folder: FolderInfo, uids: Sequence[int]) -> dict[int, bytes]:
        await self._check("r")
        return await self._store.content(self._address, self._own(folder), uids)

    async def structures(self, folder: FolderInfo, uids: Sequence[int]) -> dict[int, bytes]:
        await self._check("r")
        return await self._store.structures(self._address, self._own(folder), uids)

    async def keep_structures(self, folder: FolderInfo, structures: dict[int, bytes]) -> None:
        await self._check("r")
        await self._store.keep_structures(self._address, self._own(folder), structures)

    def _settable(self) -> frozenset[str] | None:
        """The flag classes this principal may set here (RFC 4314 2.1: "s", "t", "w" govern
        setting flags during APPEND and COPY); None: all of them."""
        have = FLAG_CLASSES & set(self._access.rights)
        return None if have == FLAG_CLASSES else frozenset(have)

    def allowed_flags(self, flags: Iterable[str]) -> frozenset[str]:
        """The flags among `flags` this principal may change (RFC 4314 4, STORE)."""
        return frozenset(f for f in flags if flag_right(f) in self._access.rights)

    async def _changeable(self, flags: Iterable[str], mode: FlagMode) -> frozenset[str] | None:
        """The flag classes (`mss.rights.FLAG_CLASSES`) a STORE may change with these rights
        (RFC 4314 4); None: all of them. The flags of the other classes are left as they
        are, by the store, in the STORE's own transaction under the folder's lock (so a
        concurrent change of them by another member is never undone), and the STORE "SHOULD
        NOT fail if the user has rights to modify at least one flag"; with none it is
        refused."""
        await self._check("r")
        have = FLAG_CLASSES & set(self._access.rights)
        if have == FLAG_CLASSES:
            return None
        wanted = frozenset(flags)
        if mode != "replace":
            if wanted and not self.allowed_flags(wanted):
                self._need(*sorted({flag_right(f) for f in wanted}))
        elif not have:
            self._need("w")
        return frozenset(have)

    async def set_flags(
        self, folder: FolderInfo, uids: Sequence[int], flags: Iterable[str], mode: FlagMode
    ) -> list[MessageMeta]:
        flags = frozenset(flags)
        changeable = await self._changeable(flags, mode)
        return await self._store.set_flags(
            self._address, self._own(folder), uids, flags, mode, changeable=changeable, **self._as_reader
        )

    async def set_flags_unchanged_since(
        self, folder: FolderInfo, uids: Sequence[int], flags: Iterable[str], mode: FlagMode, unchanged_since: int
    ) -> tuple[list[MessageMeta], list[int]]:
        flags = frozenset(flags)
        changeable = await self._changeable(flags, mode)
        return await self._store.set_flags_unchanged_since(
            self._address,
            self._own(folder),
            uids,
            flags,
            mode,
            unchanged_since,
            changeable=changeable,
            **self._as_reader,
        )

    async def expunge(self, folder: FolderInfo, uids: Sequence[int] | None = None) -> list[int]:
        await self._check("e")  # RFC 4314 4: EXPUNGE needs "e"
        return await self._store.expunge(self._address, self._own(folder), uids)

    async def vanished(self, folder: FolderInfo, since: int) -> list[int]:
        await self._check("r")
        return await self._store.vanished(self._address, self._own(folder), since)

    async def copy(self, folder: FolderInfo, uids: Sequence[int], dest: FolderInfo) -> list[tuple[int, int]]:
        await self._check("r", "i", force=True)  # RFC 4314 4: "r" on the source, "i" on the destination
        return await self._store.copy(
            self._address, self._own(folder), uids, self._own(dest), settable=self._settable(), reader=self._reader
        )

    async def move(self, folder: FolderInfo, uids: Sequence[int], dest: FolderInfo) -> list[tuple[int, int]]:
        await self._check("r", "t", "e", "i", force=True)  # RFC 6851 3.3 / RFC 4314 4: COPY, then \\Deleted and EXPUNGE
        return await self._store.move(
            self._address, self._own(folder), uids, self._own(dest), settable=self._settable(), reader=self._reader
        )

    async def copy_to(
        self, folder: FolderInfo, uids: Sequence[int], other: MailboxHandle, dest: FolderInfo, *, move: bool = False
    ) -> list[tuple[int, int]]:
        """COPY or MOVE into a folder of another mailbox this principal opened (`other`):
        "r" (and "t", "e" for a MOVE) here, "i" there. The ciphertext goes as it is."""
        if not isinstance(other, Handle) or other._principal != self._principal:
            raise Refusal(Reason.NOT_ALLOWED, "Not a mailbox of this session", "copy_to across principals")
        if other is self or other.address == self._address:
            return await (self.move if move else self.copy)(folder, uids, dest)
        await self._check("r", *(("t", "e") if move else ()))
        await other._check("i", force=True)
        return await self._store.copy_between(
            self._address,
            self._own(folder),
            uids,
            other.address,
            other._own(dest),
            move=move,
            reader=self._reader,
            dest_reader=other._reader,
            settable=other._settable(),
        )

    async def append(
        self, folder: str, raw: bytes, flags: Iterable[str] = (), internaldate: datetime | None = None
    ) -> StoredRef:
        """IMAP APPEND (RFC 9051 6.3.12): one message, as `append_many` stores several."""
        (ref,) = await self.append_many(folder, [(raw, flags, internaldate)])
        return ref

    async def append_many(self, folder: str, messages: Sequence[AppendItem]) -> list[StoredRef]:
        """IMAP APPEND and MULTIAPPEND (RFC 3502 3: all or nothing): every message is
        checked and encrypted to the mailbox's keys first, then all go to the store in one
        write (one transaction, through the group committer like any delivery), so any
        refusal, before or in the write, stores none of them."""
        if not messages:
            raise ValueError("append_many needs at least one message")
        await self._check("i", force=True)  # RFC 4314 4: APPEND needs "i"; flags without their right are dropped
        messages = [(raw, self.allowed_flags(flags), when) for raw, flags, when in messages]
        if len(messages) > MAX_APPEND_MESSAGES:
            raise Refusal(Reason.MALFORMED_MESSAGE, f"At most {MAX_APPEND_MESSAGES} messages in one APPEND")
        info = await self._store.get_folder(self._address, folder)
        if info is None:
            raise Refusal(Reason.NO_SUCH_FOLDER, f"No folder {folder}")
        batch: list[NewMessage] = []
        seen_for_reader: list[bool] = []
        for raw, flags, internaldate in messages:
            # The same bounds as a submission (size, line ends, header fields), off the loop
            # when large; a draft may lack a From. Line ends are made CRLF first, as APPEND
            # always allowed (RFC 8551 3.1.1 canonical form).
            message = await parse_message_async(to_crlf(raw), max_size=self._max_size, require_from=False)
            sealed, headers = await self._sealer.seal(self._address, message)
            seen_for_reader.append("\\Seen" in flags)
            batch.append(
                NewMessage(
                    mailbox=self._address,
                    folder=info.name,
                    content=sealed,
                    headers=headers,
                    flags=frozenset(flags) - {"\\Seen"} if self._reader is not None else frozenset(flags),
                    internaldate=internaldate or datetime.now(UTC),
                )
            )
        refs = await self._store.write(batch)
        if self._reader is not None and any(seen_for_reader):
            # A member's \\Seen on what they append is theirs, not the mailbox's.
            fid = info.id
            self._issued.add(fid)
            uids = [r.uid for r, seen in zip(refs, seen_for_reader, strict=True) if seen]
            await self._store.set_flags(self._address, fid, uids, ["\\Seen"], "add", self._reader)
        return refs

    async def quota(self) -> Quota:
        await self._check("r")
        return await self._store.quota(self._address)

    def watch(self, folder: FolderInfo) -> AbstractContextManager[FolderWatch]:
        self._need("r")
        return self._store.events.watch(self._own(folder))


class MailAccessService:
    """`mss.services.MailAccess`: the one place that decides who opens which mailbox."""

    #: The handle class `open` returns (`mss.metering.MeteredMailAccess` counts APPENDs).
    handle_type: type[Handle] = Handle

    def __init__(
        self, store: Store, sealer: Sealer, *, max_message_size: int, rights: MailboxRights | None = None
    ) -> None:
        self._store = store
        self._sealer = sealer
        self._max_size = max_message_size
        self.rights: MailboxRights = rights or DirectoryRights(store.sessions)

    def mailboxes(self, principal: Principal) -> list[str]:
        return sorted(principal.mailboxes)

    async def shared(self, principal: Principal) -> list[str]:
        """The shared (ORG) mailboxes this professional may list (the "l" right), outside any
        authorization identity: what an IMAP session shows under its shared namespace."""
        return sorted(await self.rights.shared(principal))

    async def open(self, principal: Principal, mailbox: str | None = None) -> Handle:
        address = (mailbox or principal.default_mailbox or "").lower()
        if not address:
            raise Refusal(Reason.NOT_ALLOWED, "No mailbox for this identity", f"{principal.identifier} has no mailbox")
        if not principal.may_open(address):
            raise Refusal(
                Reason.NOT_ALLOWED,
                "Not allowed to open this mailbox",
                f"{principal.kind}:{principal.identifier} may not open {address}",
            )
        access = await self.rights.access(principal, address)
        if not access.rights:
            raise Refusal(
                Reason.NOT_ALLOWED,
                "Not allowed to open this mailbox",
                f"{principal.kind}:{principal.identifier} has no rights on {address}",
            )
        # A mailbox's special-use folders exist from its first session on (no write once they do).
        await self._store.ensure_default_folders(address)
        return self.handle_type(self._store, self._sealer, principal, address, self._max_size, access, self.rights)
