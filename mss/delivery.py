"""One message's way through the core: resolve -> policy -> encrypt -> store, group-committed.

`Delivery.submit` returns only once the transaction holding the message is durable
(DESIGN.md, "Nothing is lost"). Concurrent submissions are batched by `GroupCommitter` into
one transaction and one fsync; each caller is woken when its batch is committed.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from annuaire.local import DeliveryTarget, LocalDirectory, normalize_address
from annuaire.whitelist import in_trust_space
from mss.config import Settings
from mss.refusals import Reason, Refusal
from mss.mailboxes import Mailboxes
from mss.message import check_header_senders, parse_message_async
from mss.policy import Recipient, check_recipient, check_sender, domain_of
from mss.principal import Principal
from mss.store import NewMessage, Store, StoredRef

log = logging.getLogger("mss.delivery")


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    rcpt_tos: tuple[str, ...]


@dataclass
class DeliveryResult:
    stored: list[StoredRef] = field(default_factory=list)


class GroupCommitter:
    """Batches concurrent `Store.write` calls into one transaction (DESIGN.md, Storage)."""

    def __init__(self, store: Store, *, max_batch: int = 64, wait_ms: float = 2.0) -> None:
        self.store = store
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000
        self._queue: asyncio.Queue[tuple[list[NewMessage], asyncio.Future] | None] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._inflight: list[tuple[list[NewMessage], asyncio.Future]] = []

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self, timeout: float = 30.0) -> None:
        """Commit what is already queued, then stop: a session waiting for its 250 when
        the server is asked to stop still gets it."""
        if self._task is None:
            return
        self._stopping = True
        await self._queue.put(None)
        try:
            await asyncio.wait_for(self._task, timeout)
        except asyncio.TimeoutError:
            self._task.cancel()
        self._task = None
        while not self._queue.empty():  # only if the drain timed out
            entry = self._queue.get_nowait()
            if entry and not entry[1].done():
                entry[1].set_exception(RuntimeError("server stopping"))

    async def write(self, items: list[NewMessage]) -> list[StoredRef]:
        if self._task is None or self._stopping:
            return await self.store.write(items)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((items, fut))
        return await fut

    async def _run(self) -> None:
        try:
            await self._loop()
        finally:
            # Cancelled in the middle of a commit (a drain that timed out): whatever the
            # outcome, no session may wait forever for its reply.
            for _, fut in self._inflight:
                if not fut.done():
                    fut.set_exception(RuntimeError("server stopping"))
            self._inflight = []

    async def _loop(self) -> None:
        stop_seen = False
        while True:
            if stop_seen and self._queue.empty():
                return
            first = await self._queue.get()
            if first is None:
                stop_seen = True
                continue
            batch = [first]
            self._inflight = batch  # the same list: entries added below are covered too
            if self.wait_s and not self._stopping:
                await asyncio.sleep(self.wait_s)
            while len(batch) < self.max_batch and not self._queue.empty():
                entry = self._queue.get_nowait()
                if entry is None:
                    stop_seen = True
                else:
                    batch.append(entry)
            try:
                await self._commit(batch)
            except Exception as exc:  # noqa: BLE001 - never leave a session waiting forever
                log.exception("group commit failed")
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
            self._inflight = []

    async def _commit(self, batch) -> None:
        flat = [item for items, _ in batch for item in items]
        try:
            refs = await self.store.write(flat)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting sessions
            if len(batch) == 1:
                _, fut = batch[0]
                if not fut.done():
                    fut.set_exception(exc)
                return
            # One bad message must not fail its neighbours: retry each on its own.
            for items, fut in batch:
                try:
                    r = await self.store.write(items)
                except Exception as exc:  # noqa: BLE001 - handed to the waiting session
                    if not fut.done():
                        fut.set_exception(exc)
                else:
                    if not fut.done():
                        fut.set_result(r)
            return
        pos = 0
        for items, fut in batch:
            if not fut.done():
                fut.set_result(refs[pos : pos + len(items)])
            pos += len(items)


class Delivery:
    def __init__(
        self, settings: Settings, sessions: async_sessionmaker, mailboxes: Mailboxes, committer: GroupCommitter
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.mailboxes = mailboxes
        self.committer = committer

    @property
    def local_domains(self) -> frozenset[str]:
        return frozenset({self.settings.domain})

    async def resolve(self, address: str) -> Recipient:
        async with self.sessions() as s:
            return await self._resolve(s, address)

    async def _resolve(self, s: AsyncSession, address: str) -> Recipient:
        address = normalize_address(address)
        dom = domain_of(address)
        if dom in self.local_domains:
            known = await LocalDirectory(s).exists(address)
            return Recipient(address, "local" if known else "unknown_local")
        trusted = await in_trust_space(s, dom)
        return Recipient(address, "trust_space" if trusted else "outside")

    def check_sender(self, principal: Principal, mail_from: str) -> None:
        check_sender(principal, mail_from)

    async def check_recipient(self, principal: Principal, address: str) -> Recipient:
        """RCPT: refuse here, not at DATA, a recipient that cannot receive (DESIGN.md step 3),
        including a local mailbox with no valid encryption certificate: nothing is ever
        stored in clear, and one such recipient must not fail the others' delivery."""
        address = normalize_address(address)
        async with self.sessions() as s:
            if domain_of(address) in self.local_domains:
                # One look-up answers both "does it exist" and "can it receive".
                target = await LocalDirectory(s).delivery_target(address)
                recipient = Recipient(address, "local" if target else "unknown_local")
            else:
                target = None
                recipient = await self._resolve(s, address)
        check_recipient(recipient)
        _check_can_receive(target)
        return recipient

    async def submit(self, envelope: Envelope, raw: bytes, principal: Principal) -> DeliveryResult:
        """Encrypt for every local recipient (and the sender's Sent copy) and store durably.

        The envelope is checked again here, whatever the front end checked before: the
        core is the one place the rules hold. Directory reads share one session.
        """
        check_sender(principal, envelope.mail_from)
        # One parse (size, line ends, header fields), off the event loop when large.
        message = await parse_message_async(raw, max_size=self.settings.limits.max_message_size)
        check_header_senders(principal, message)
        sender = normalize_address(envelope.mail_from)
        targets: list[DeliveryTarget] = []
        async with self.sessions() as s:
            directory = LocalDirectory(s)
            for rcpt in dict.fromkeys(normalize_address(r) for r in envelope.rcpt_tos):
                target = await directory.delivery_target(rcpt) if domain_of(rcpt) in self.local_domains else None
                if target is None:  # not local, or removed between RCPT and DATA
                    check_recipient(await self._resolve(s, rcpt))
                    raise Refusal(Reason.UNKNOWN_RECIPIENT, f"Mailbox <{rcpt}> does not exist")
                _check_can_receive(target)
                targets.append(target)
            own = await directory.delivery_target(sender, certificates=False)
            if own is not None and own.sent_copy:
                own = await directory.delivery_target(sender)
        items: list[NewMessage] = []
        sealable = await self.mailboxes.prepare(message)  # protected once, encrypted per target
        for t in targets:
            sealed, headers = await self.mailboxes.seal(t.address, sealable, t.certificates)
            items.append(NewMessage(mailbox=t.address, folder="INBOX", content=sealed, headers=headers))
        if own is not None and own.sent_copy:
            sealed, headers = await self.mailboxes.seal(sender, sealable, own.certificates)
            items.append(
                NewMessage(mailbox=sender, folder="Sent", content=sealed, headers=headers, flags=frozenset({"\\Seen"}))
            )
        refs = await self.committer.write(items)
        log.info("delivered from=%s rcpts=%d stored=%d size=%d", sender, len(targets), len(refs), len(raw))
        return DeliveryResult(stored=refs)


def _check_can_receive(target: DeliveryTarget | None) -> None:
    if target is not None and not target.certificates:
        raise Refusal(
            Reason.NO_ENCRYPTION_KEY, f"Mailbox <{target.address}> has no valid encryption certificate and cannot receive"
        )
