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
from mss.message import check_header_senders, complete_submission, parse_message_async
from mss.patients import ConversationInfo, PatientSpaces, PatientTarget, message_ids
from mss.policy import Recipient, check_recipient, check_sender, domain_of
from mss.principal import Principal
from mss.records import NewMessage, StoredRef
from mss.refusals import Reason, Refusal
from mss.sealing import Sealable, Sealer
from mss.services import DeliveryResult
from mss.store import Store

log = logging.getLogger("mss.delivery")


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    recipients: tuple[Recipient, ...]


class Transaction:
    """`mss.services.SubmissionTransaction`: one MAIL ... DATA for one principal."""

    def __init__(self, delivery: Delivery, principal: Principal, answering: ConversationInfo | None = None) -> None:
        self._delivery = delivery
        self._principal = principal
        #: A patient writes only inside a conversation, to its professional (MSSANTE.md).
        self._answering = answering
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
        if self._principal.kind == "PATIENT":
            allowed = {self._answering.professional} if self._answering is not None else set()
            if normalize_address(address) not in allowed:
                raise Refusal(
                    Reason.NOT_ALLOWED,
                    "A patient answers only the professionals of a conversation they started",
                    f"patient {self._principal.identifier} wrote to {address}",
                )
        recipient = await self._delivery.resolve(address, principal=self._principal, sender=self._mail_from)
        self._recipients.setdefault(recipient.address, recipient)
        self._accepted += 1
        return recipient

    async def deliver(self, raw: bytes) -> DeliveryResult:
        if self._mail_from is None or not self._recipients:
            raise Refusal(Reason.CANNOT, "Need MAIL and RCPT commands first")
        envelope = Envelope(self._mail_from, tuple(self._recipients.values()))
        return await self._delivery.deliver(self._principal, envelope, raw, answering=self._answering)


class Delivery:
    """`mss.services.Submission` for this node: local recipients only until the relay exists."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        sealer: Sealer,
        store: Store,
        patients: PatientSpaces,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.sealer = sealer
        self.store = store
        self.patients = patients

    @property
    def max_message_size(self) -> int:
        return self.settings.limits.max_message_size

    @property
    def max_recipients(self) -> int:
        return self.settings.limits.max_recipients

    @property
    def local_domains(self) -> frozenset[str]:
        return frozenset({self.settings.domain})

    def begin(self, principal: Principal, *, answering: ConversationInfo | None = None) -> Transaction:
        return Transaction(self, principal, answering)

    async def resolve(self, address: str, *, principal: Principal, sender: str) -> Recipient:
        """RCPT: one directory look-up decides existence and keys (DESIGN.md step 3). A local
        mailbox with no valid encryption certificate is refused here, not at DATA: nothing is
        ever stored in clear, and one such recipient must not fail the others' delivery. A
        patient address follows the patient rules (`PatientSpaces.target`)."""
        address = normalize_address(address)
        if self.is_postmaster(address):
            return await self._postmaster()
        dom = domain_of(address)
        if self.patients.is_patient_address(address):
            if principal.kind == "PATIENT":
                raise Refusal(Reason.NOT_ALLOWED, "A patient cannot write to another patient", f"patient to {address}")
            return Recipient(
                address, "patient", await self.patients.target(address, principal=principal, sender=sender)
            )
        target = None
        async with self.sessions() as s:
            if dom in self.local_domains:
                target = await LocalDirectory(s).delivery_target(address)
                recipient = Recipient(address, "local" if target else "unknown_local", target)
            else:
                trusted = await in_trust_space(s, dom)
                recipient = Recipient(address, "trust_space" if trusted else "outside")
        check_recipient(recipient)
        _check_can_receive(target)
        return recipient

    def is_postmaster(self, address: str) -> bool:
        """`postmaster` alone or at one of our domains, in any case (RFC 5321 4.5.1: every
        server that delivers mail MUST accept it, and 4.1.1.3 the bare form without a domain)."""
        local, at, dom = normalize_address(address).rpartition("@")
        return local == "postmaster" and dom in self.local_domains if at else dom == "postmaster"

    async def _postmaster(self) -> Recipient:
        """The mailbox that receives postmaster's mail (`[delivery] postmaster`, else a
        mailbox postmaster@<domain>), resolved and encrypted like any local recipient: to the
        keys of whoever may read that mailbox (every member of an ORG mailbox)."""
        address = self.settings.delivery.postmaster or f"postmaster@{self.settings.domain}"
        async with self.sessions() as s:
            target = await LocalDirectory(s).delivery_target(address)
        if target is None:
            log.warning("mail for postmaster refused: create %s or set [delivery] postmaster", address)
            raise Refusal(
                Reason.UNKNOWN_RECIPIENT,
                "Mailbox <postmaster> does not exist",
                f"no postmaster mailbox: create {address} or set [delivery] postmaster to a local mailbox",
            )
        _check_can_receive(target)
        return Recipient(target.address, "local", target)

    async def deliver(
        self, principal: Principal, envelope: Envelope, raw: bytes, *, answering: ConversationInfo | None = None
    ) -> DeliveryResult:
        """Encrypt for every recipient (and the sender's Sent copy) and store durably.

        The sender is checked again here, whatever the front end checked before: the core
        is the one place the rules hold. Recipients come resolved from RCPT. The patient
        copies' conversation, journal and notification rows commit with the messages.
        """
        check_sender(principal, envelope.mail_from)
        # One parse (size, line ends, header fields), off the event loop when large.
        message = await parse_message_async(raw, max_size=self.settings.limits.max_message_size)
        check_header_senders(principal, message)
        if principal.kind != "SERV":  # submission, not another operator's relayed mail
            message = complete_submission(message, domain=self.settings.domain)  # RFC 6409 8.3, 8.4
        sender = normalize_address(envelope.mail_from)
        sealable = await self.sealer.prepare(message)  # protected once, encrypted per target
        items: list[NewMessage] = []
        patient_items: list[tuple[int, PatientTarget]] = []
        for r in envelope.recipients:
            target = r.target
            if isinstance(target, PatientTarget):
                if sealable.as_is is not None:
                    raise Refusal(
                        Reason.CANNOT,
                        "Send messages to patients unencrypted over TLS: the server encrypts them to the patient's key",
                        "already-encrypted message to a patient",
                    )
                sealed, headers = await self.sealer.seal_for_patient(sealable, target.certificate)
                patient_items.append((len(items), target))
            elif target is not None:
                sealed, headers = await self.sealer.seal(target.address, sealable, target.certificates)
            else:  # pragma: no cover - add_recipient refuses them
                raise Refusal(Reason.CANNOT, "A recipient was not resolved")
            items.append(NewMessage(mailbox=target.address, folder="INBOX", content=sealed, headers=headers))
        sent_at = await self._sent_copy(principal, sender, sealable, items)

        async def then(s: AsyncSession, refs: list[StoredRef]) -> None:
            await self.patients.after_delivery(
                s,
                sender=sender,
                principal=principal,
                message=message,
                stored=[(target, refs[i]) for i, target in patient_items],
            )
            if answering is not None:
                msgid = (message_ids(message.outer.message_id) or [""])[0]
                await self.patients.record_answer(
                    s, answering.id, msgid, refs[sent_at] if sent_at is not None else None
                )

        refs = await self.store.write(items, then=then)
        log.info("delivered from=%s rcpts=%d stored=%d size=%d", sender, len(envelope.recipients), len(refs), len(raw))
        return DeliveryResult(stored=tuple(refs))

    async def _sent_copy(
        self, principal: Principal, sender: str, sealable: Sealable, items: list[NewMessage]
    ) -> int | None:
        """Append the sender's own encrypted copy to `items` when it keeps one (APP mailboxes
        by default, a patient's answers always); returns its position."""
        if principal.kind == "PATIENT":
            own = await self.patients.own_target(sender)
            sealed, headers = await self.sealer.seal_for_patient(sealable, own.certificate)
        else:
            async with self.sessions() as s:
                local = await LocalDirectory(s).delivery_target(sender, certificates=False)
                if local is None or not local.sent_copy:
                    return None
                local = await LocalDirectory(s).delivery_target(sender)
            assert local is not None
            sealed, headers = await self.sealer.seal(sender, sealable, local.certificates)
        items.append(
            NewMessage(mailbox=sender, folder="Sent", content=sealed, headers=headers, flags=frozenset({"\\Seen"}))
        )
        return len(items) - 1


def _check_can_receive(target: DeliveryTarget | None) -> None:
    if target is not None and not target.certificates:
        raise Refusal(
            Reason.NO_ENCRYPTION_KEY,
            f"Mailbox <{target.address}> has no valid encryption certificate and cannot receive",
        )
