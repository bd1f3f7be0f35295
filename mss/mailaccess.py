"""`MailAccess`: a principal opens one of its mailboxes and gets a handle whose every method is
already authorised (DESIGN.md, "Core services").

The check happens once, at `open`, in the core, whatever the front end: a principal that may
not use a mailbox never gets a handle for it. The handle then only accepts folders it handed
out (their `mailbox` is the handle's), and the store checks each folder id against the
mailbox again in SQL, so a folder id forged or kept from another session matches nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime

from crypto.rfc5322 import to_crlf
from mss.events import FolderWatch
from mss.message import parse_message_async
from mss.principal import Principal
from mss.records import FlagMode, FolderInfo, MessageMeta, NewMessage, OuterHeaders, Quota, StoredRef
from mss.refusals import Reason, Refusal
from mss.sealing import Sealer
from mss.services import MAX_APPEND_MESSAGES, AppendItem, FolderState
from mss.store import Store


class Handle:
    """A `mss.services.MailboxHandle` over the store, for one principal and one mailbox."""

    def __init__(self, store: Store, sealer: Sealer, principal: Principal, address: str, max_size: int) -> None:
        self._store = store
        self._sealer = sealer
        self._principal = principal
        self._address = address
        self._max_size = max_size
        #: The folder ids this handle handed out: the only ones it accepts.
        self._issued: set[int] = set()

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
        found = await self._store.list_folders(self._address)
        self._issued.update(f.id for f in found)
        return found

    async def folder(self, name: str) -> FolderInfo | None:
        return self._issue(await self._store.get_folder(self._address, name))

    async def create_folder(self, name: str, special_use: str | None = None) -> FolderInfo:
        created = await self._store.create_folder(self._address, name, special_use)
        self._issued.add(created.id)
        return created

    async def delete_folder(self, name: str) -> None:
        await self._store.delete_folder(self._address, name)

    async def rename_folder(self, old: str, new: str) -> None:
        await self._store.rename_folder(self._address, old, new)

    async def subscribe(self, name: str, subscribed: bool) -> None:
        await self._store.set_subscribed(self._address, name, subscribed)

    async def folder_state(self, folder: FolderInfo) -> FolderState | None:
        state = await self._store.folder_state(self._address, self._own(folder))
        return FolderState(*state) if state else None

    async def claim_recent(self, folder: FolderInfo) -> tuple[int, int]:
        return await self._store.claim_recent(self._address, self._own(folder))

    async def messages(self, folder: FolderInfo, known: FolderState | None = None) -> list[MessageMeta]:
        at = (known.uidnext, known.highestmodseq) if known is not None else None
        return await self._store.messages(self._address, self._own(folder), at)

    async def headers(self, folder: FolderInfo, uids: Sequence[int]) -> dict[int, OuterHeaders]:
        return await self._store.headers(self._address, self._own(folder), uids)

    async def content(self, folder: FolderInfo, uids: Sequence[int]) -> dict[int, bytes]:
        return await self._store.content(self._address, self._own(folder), uids)

    async def structures(self, folder: FolderInfo, uids: Sequence[int]) -> dict[int, bytes]:
        return await self._store.structures(self._address, self._own(folder), uids)

    async def keep_structures(self, folder: FolderInfo, structures: dict[int, bytes]) -> None:
        await self._store.keep_structures(self._address, self._own(folder), structures)

    async def set_flags(
        self, folder: FolderInfo, uids: Sequence[int], flags: Iterable[str], mode: FlagMode
    ) -> list[MessageMeta]:
        return await self._store.set_flags(self._address, self._own(folder), uids, flags, mode)

    async def set_flags_unchanged_since(
        self, folder: FolderInfo, uids: Sequence[int], flags: Iterable[str], mode: FlagMode, unchanged_since: int
    ) -> tuple[list[MessageMeta], list[int]]:
        return await self._store.set_flags_unchanged_since(
            self._address, self._own(folder), uids, flags, mode, unchanged_since
        )

    async def expunge(self, folder: FolderInfo, uids: Sequence[int] | None = None) -> list[int]:
        return await self._store.expunge(self._address, self._own(folder), uids)

    async def vanished(self, folder: FolderInfo, since: int) -> list[int]:
        return await self._store.vanished(self._address, self._own(folder), since)

    async def copy(self, folder: FolderInfo, uids: Sequence[int], dest: FolderInfo) -> list[tuple[int, int]]:
        return await self._store.copy(self._address, self._own(folder), uids, self._own(dest))

    async def move(self, folder: FolderInfo, uids: Sequence[int], dest: FolderInfo) -> list[tuple[int, int]]:
        return await self._store.move(self._address, self._own(folder), uids, self._own(dest))

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
        if len(messages) > MAX_APPEND_MESSAGES:
            raise Refusal(Reason.MALFORMED_MESSAGE, f"At most {MAX_APPEND_MESSAGES} messages in one APPEND")
        info = await self._store.get_folder(self._address, folder)
        if info is None:
            raise Refusal(Reason.NO_SUCH_FOLDER, f"No folder {folder}")
        batch: list[NewMessage] = []
        for raw, flags, internaldate in messages:
            # The same bounds as a submission (size, line ends, header fields), off the loop
            # when large; a draft may lack a From. Line ends are made CRLF first, as APPEND
            # always allowed (RFC 8551 3.1.1 canonical form).
            message = await parse_message_async(to_crlf(raw), max_size=self._max_size, require_from=False)
            sealed, headers = await self._sealer.seal(self._address, message)
            batch.append(
                NewMessage(
                    mailbox=self._address,
                    folder=info.name,
                    content=sealed,
                    headers=headers,
                    flags=frozenset(flags),
                    internaldate=internaldate or datetime.now(UTC),
                )
            )
        return await self._store.write(batch)

    async def quota(self) -> Quota:
        return await self._store.quota(self._address)

    def watch(self, folder: FolderInfo) -> AbstractContextManager[FolderWatch]:
        return self._store.events.watch(self._own(folder))


class MailAccessService:
    """`mss.services.MailAccess`: the one place that decides who opens which mailbox."""

    #: The handle class `open` returns (`mss.metering.MeteredMailAccess` counts APPENDs).
    handle_type: type[Handle] = Handle

    def __init__(self, store: Store, sealer: Sealer, *, max_message_size: int) -> None:
        self._store = store
        self._sealer = sealer
        self._max_size = max_message_size

    def mailboxes(self, principal: Principal) -> list[str]:
        return sorted(principal.mailboxes)

    async def open(self, principal: Principal, mailbox: str | None = None) -> Handle:
        address = (mailbox or principal.default_mailbox or "").lower()
        if not address:
            raise Refusal(Reason.NOT_ALLOWED, "No mailbox for this identity", f"{principal.identifier} has no mailbox")
        if not principal.may_use(address):
            raise Refusal(
                Reason.NOT_ALLOWED,
                "Not allowed to open this mailbox",
                f"{principal.kind}:{principal.identifier} may not open {address}",
            )
        # A mailbox's special-use folders exist from its first session on (no write once they do).
        await self._store.ensure_default_folders(address)
        return self.handle_type(self._store, self._sealer, principal, address, self._max_size)
