"""One message's way through the core: resolve -> policy -> encrypt -> store, group-committed.

`Delivery` is the `mss.services.Submission` service. A front end begins a transaction for
an authenticated principal, names the sender and the recipients (each resolved ONCE, at
RCPT, and carried to the end with what delivery needs of it: Twisted's `validateTo`
returning a factory is the model), then hands the bytes over. `deliver` returns only once
the transaction holding the message is durable (DESIGN.md, "Nothing is lost"); concurrent
deliveries share that transaction and its fsync (`mss.commit`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from annuaire.local import DeliveryTarget, LocalDirectory, normalize_address
from annuaire.whitelist import in_trust_space
from mss.config import Settings
from mss.sealing import Sealer
from mss.message import check_header_senders, parse_message_async
from mss.policy import Recipient, check_recipient, check_sender, domain_of
from mss.principal import Principal
from mss.records import NewMessage
from mss.refusals import Reason, Refusal
from mss.services import DeliveryResult
from mss.store import Store

log = logging.getLogger("mss.delivery")


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    recipients: tuple[Recipient, ...]


class Transaction:
    """`mss.services.SubmissionTransaction`: one MAIL ... DATA for one principal."""

    def __init__(self, delivery: Delivery, principal: Principal) -> None:
        self._delivery = delivery
        self._principal = principal
        self._mail_from: str | None = None
        self._recipients: dict[str, Recipient] = {}
        self._accepted = 0  # RCPT commands accepted, duplicates included (RFC 5321 4.5.3.1.8)

    def mail_from(self, address: str) -> None:
        check_sender(self._principal, address)
        self._mail_from = address

    async def add_recipient(self, address: str) -> Recipient:
        if self._mail_from is None:
            raise Refusal(Reason.CANNOT, "Need MAIL command first")
        limit = self._delivery.max_recipients
        if self._accepted >= limit:
            raise Refusal(Reason.TOO_MANY_RECIPIENTS, f"Too many recipients (at most {limit} per message)")
        recipient = await self._delivery.resolve(address)
        self._recipients.setdefault(recipient.address, recipient)
        self._accepted += 1
        return recipient

    async def deliver(self, raw: bytes) -> DeliveryResult:
        if self._mail_from is None or not self._recipients:
            raise Refusal(Reason.CANNOT, "Need MAIL and RCPT commands first")
        envelope = Envelope(self._mail_from, tuple(self._recipients.values()))
        return await self._delivery.deliver(self._principal, envelope, raw)


class Delivery:
    """`mss.services.Submission` for this node: local recipients only until the relay exists."""

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession], sealer: Sealer, store: Store) -> None:
        self.settings = settings
        self.sessions = sessions
        self.sealer = sealer
        self.store = store

    @property
    def max_message_size(self) -> int:
        return self.settings.limits.max_message_size

    @property
    def max_recipients(self) -> int:
        return self.settings.limits.max_recipients

    @property
    def local_domains(self) -> frozenset[str]:
        return frozenset({self.settings.domain})

    def begin(self, principal: Principal) -> Transaction:
        return Transaction(self, principal)

    async def resolve(self, address: str) -> Recipient:
        """RCPT: one directory look-up decides existence and keys (DESIGN.md step 3). A local
        mailbox with no valid encryption certificate is refused here, not at DATA: nothing is
        ever stored in clear, and one such recipient must not fail the others' delivery."""
        address = normalize_address(address)
        dom = domain_of(address)
        async with self.sessions() as s:
            if dom in self.local_domains:
                target = await LocalDirectory(s).delivery_target(address)
                recipient = Recipient(address, "local" if target else "unknown_local", target)
            else:
                trusted = await in_trust_space(s, dom)
                recipient = Recipient(address, "trust_space" if trusted else "outside")
        check_recipient(recipient)
        _check_can_receive(recipient.target)
        return recipient

    async def deliver(self, principal: Principal, envelope: Envelope, raw: bytes) -> DeliveryResult:
        """Encrypt for every local recipient (and the sender's Sent copy) and store durably.

        The sender is checked again here, whatever the front end checked before: the core
        is the one place the rules hold. Recipients come resolved from RCPT.
        """
        check_sender(principal, envelope.mail_from)
        # One parse (size, line ends, header fields), off the event loop when large.
        message = await parse_message_async(raw, max_size=self.settings.limits.max_message_size)
        check_header_senders(principal, message)
        sender = normalize_address(envelope.mail_from)
        targets = [r.target for r in envelope.recipients if r.target is not None]
        if len(targets) != len(envelope.recipients):  # pragma: no cover - add_recipient refuses them
            raise Refusal(Reason.CANNOT, "A recipient was not resolved")
        async with self.sessions() as s:
            own = await LocalDirectory(s).delivery_target(sender, certificates=False)
            if own is not None and own.sent_copy:
                own = await LocalDirectory(s).delivery_target(sender)
        items: list[NewMessage] = []
        sealable = await self.sealer.prepare(message)  # protected once, encrypted per target
        for t in targets:
            sealed, headers = await self.sealer.seal(t.address, sealable, t.certificates)
            items.append(NewMessage(mailbox=t.address, folder="INBOX", content=sealed, headers=headers))
        if own is not None and own.sent_copy:
            sealed, headers = await self.sealer.seal(sender, sealable, own.certificates)
            items.append(
                NewMessage(mailbox=sender, folder="Sent", content=sealed, headers=headers, flags=frozenset({"\\Seen"}))
            )
        refs = await self.store.write(items)
        log.info("delivered from=%s rcpts=%d stored=%d size=%d", sender, len(targets), len(refs), len(raw))
        return DeliveryResult(stored=tuple(refs))


def _check_can_receive(target: DeliveryTarget | None) -> None:
    if target is not None and not target.certificates:
        raise Refusal(
            Reason.NO_ENCRYPTION_KEY, f"Mailbox <{target.address}> has no valid encryption certificate and cannot receive"
        )
