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
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from annuaire.local import DeliveryTarget, LocalDirectory, normalize_address
from annuaire.whitelist import in_trust_space
from crypto.rfc5322 import has_bare_cr_or_lf
from mss import inbound, outbound
from mss.config import Settings
from mss.dsn import RecipientOutcome, build_report
from mss.message import check_header_senders, complete_submission, parse_message_async
from mss.patients import ConversationInfo, PatientSpaces, PatientTarget, message_ids
from mss.policy import Recipient, check_recipient, check_sender, domain_of
from mss.principal import Principal
from mss.queue import OutboundMessage, OutboundRecipient, RelayQueue
from mss.records import MailDsn, NewMessage, RcptDsn, StoredRef, TraceInfo
from mss.refusals import Reason, Refusal
from mss.sealing import Sealable, Sealer
from mss.services import DeliveryResult
from mss.store import Store

log = logging.getLogger("mss.delivery")

#: Room for the fields this operator adds to a relayed message (Received,
#: Authentication-Results) beyond `[limits] max_message_size`, which the peer's copy met.
_TRACE_ROOM = 16 * 1024


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    recipients: tuple[Recipient, ...]
    #: RET and ENVID of MAIL (RFC 3461 4.3, 4.4).
    dsn: MailDsn | None = None
    #: The hop the message came by (its `Received:` field, RFC 5321 4.4).
    trace: TraceInfo | None = None


class Transaction:
    """`mss.services.SubmissionTransaction`: one MAIL ... DATA for one principal."""

    def __init__(
        self,
        delivery: Delivery,
        principal: Principal,
        answering: ConversationInfo | None = None,
        trace: TraceInfo | None = None,
    ) -> None:
        self._delivery = delivery
        self._principal = principal
        #: A patient writes only inside a conversation, to its professional (MSSANTE.md).
        self._answering = answering
        self._trace = trace
        self._mail_from: str | None = None
        self._mail_dsn: MailDsn | None = None
        self._size = 0  # the SIZE declared at MAIL (RFC 1870), 0 when none
        self._recipients: dict[str, Recipient] = {}
        self._accepted = 0  # RCPT commands accepted, duplicates included (RFC 5321 4.5.3.1.8)

    def mail_from(self, address: str, dsn: MailDsn | None = None, size: int | None = None) -> None:
        """The null reverse-path `""` only from another operator (`check_sender`)."""
        check_sender(self._principal, address)
        self._mail_from = address
        self._mail_dsn = dsn
        self._size = max(0, size or 0)

    async def add_recipient(self, address: str, dsn: RcptDsn | None = None) -> Recipient:
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
        await self._delivery.check_room(recipient, self._size)
        if dsn is not None:
            recipient = replace(recipient, dsn=dsn)
        self._recipients.setdefault(recipient.address, recipient)
        self._accepted += 1
        return recipient

    async def deliver(self, raw: bytes) -> DeliveryResult:
        if self._mail_from is None or not self._recipients:
            raise Refusal(Reason.CANNOT, "Need MAIL and RCPT commands first")
        envelope = Envelope(self._mail_from, tuple(self._recipients.values()), self._mail_dsn, self._trace)
        return await self._delivery.deliver(self._principal, envelope, raw, answering=self._answering)


class Delivery:
    """`mss.services.Submission` for this node: local recipients stored, other operators'
    queued (`queue`, in the same transaction), another operator's relayed mail accepted."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        sealer: Sealer,
        store: Store,
        patients: PatientSpaces,
        *,
        queue: RelayQueue | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.sealer = sealer
        self.store = store
        self.patients = patients
        #: The relay queue; without one, other operators' domains are refused (RELAY_NOT_ENABLED).
        self.queue = queue

    @property
    def relaying(self) -> bool:
        """Mail for other operators is accepted (and queued) here."""
        return self.settings.relay.enabled and self.queue is not None

    @property
    def max_message_size(self) -> int:
        return self.settings.limits.max_message_size

    @property
    def max_recipients(self) -> int:
        return self.settings.limits.max_recipients

    @property
    def local_domains(self) -> frozenset[str]:
        return frozenset({self.settings.domain})

    def begin(
        self, principal: Principal, *, answering: ConversationInfo | None = None, trace: TraceInfo | None = None
    ) -> Transaction:
        return Transaction(self, principal, answering, trace)

    async def resolve(self, address: str, *, principal: Principal, sender: str) -> Recipient:
        """RCPT: one directory look-up decides existence and keys (DESIGN.md step 3). A local
        mailbox with no valid encryption certificate is refused here, not at DATA: nothing is
        ever stored in clear, and one such recipient must not fail the others' delivery. A
        patient address follows the patient rules (`PatientSpaces.target`), whoever writes.

        Another operator's whitelisted domain is a "remote" recipient, queued at DATA, when
        relaying is on. Another operator (SERV) gets only this operator's own recipients:
        mail is never relayed onwards (`RELAY_DENIED`), and a patient's answers never leave
        this operator."""
        address = normalize_address(address)
        if self.is_postmaster(address):
            return await self._postmaster()
        dom = domain_of(address)
        if self.patients.is_patient_address(address):
            if principal.kind == "PATIENT":
                raise Refusal(Reason.NOT_ALLOWED, "A patient cannot write to another patient", f"patient to {address}")
            if not sender:
                raise Refusal(
                    Reason.NOT_ALLOWED,
                    "A patient receives no delivery status notification",
                    f"null sender from {principal.kind}:{principal.identifier} to {address}",
                )
            return Recipient(
                address, "patient", await self.patients.target(address, principal=principal, sender=sender)
            )
        if dom not in self.local_domains:
            if principal.kind == "SERV":
                raise Refusal(
                    Reason.RELAY_DENIED,
                    f"Relaying denied: {dom} is not a domain of this operator",
                    f"operator {principal.identifier} asked to relay to {address}",
                )
            if principal.kind == "PATIENT":
                raise Refusal(
                    Reason.NOT_ALLOWED,
                    "A patient answers only the professionals of this operator",
                    f"patient {principal.identifier} wrote to {address}",
                )
        target = None
        async with self.sessions() as s:
            if dom in self.local_domains:
                target = await LocalDirectory(s).delivery_target(address)
                recipient = Recipient(address, "local" if target else "unknown_local", target)
            elif await in_trust_space(s, dom):
                recipient = Recipient(address, "remote" if self.relaying else "trust_space")
            else:
                recipient = Recipient(address, "outside")
        check_recipient(recipient)
        _check_can_receive(target)
        return recipient

    async def check_room(self, recipient: Recipient, size: int = 0) -> None:
        """RCPT: a local mailbox that is full (no message fits any more), or that has no room
        for the SIZE its sender declared (RFC 1870), is refused `OVER_QUOTA` (552 5.2.2,
        RFC 3463 "mailbox full"). The exact check is the store's, at DATA: the SIZE is the
        clear message, a little smaller than what is stored."""
        if recipient.target is None:
            return
        quota = await self.store.quota(recipient.target.address)
        if quota.full:
            raise Refusal(
                Reason.OVER_QUOTA,
                f"Mailbox <{recipient.address}> is full",
                f"{quota.mailbox} full: {quota.storage_used}/{quota.storage_limit or '-'} octets, "
                f"{quota.messages_used}/{quota.messages_limit or '-'} messages",
            )
        if size and not quota.fits(size, 1):
            raise Refusal(
                Reason.OVER_QUOTA,
                f"Mailbox <{recipient.address}> has no room for a message of {size} octets",
                f"{quota.mailbox}: {quota.storage_used}+{size}/{quota.storage_limit} octets",
            )

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
        """Encrypt for every local recipient (and the sender's Sent copy), prepare one copy
        per other operator's domain, and store and queue them durably, together.

        The sender is checked again here, whatever the front end checked before: the core
        is the one place the rules hold. Recipients come resolved from RCPT. The patient
        copies' conversation, journal and notification rows, the relay queue entries and the
        success DSNs (NOTIFY=SUCCESS, RFC 3461 4.1) commit with the messages: after the
        `250` nothing of it can be lost, and a failed commit leaves nothing behind.

        Another operator's message (a SERV principal) goes through `mss.inbound.accept`
        first (loop, DKIM, Authentication-Results, Received) and is stored as it came
        otherwise: no Date nor Message-ID is added (that is submission's job, RFC 6409 8).
        """
        check_sender(principal, envelope.mail_from)
        as_received = raw  # the original of a success DSN (RET=FULL), without our trace fields
        max_size = self.settings.limits.max_message_size
        if principal.kind == "SERV":
            # The cheap refusals first: no DKIM hashing of what will be refused anyway.
            if len(raw) > max_size:
                raise Refusal(Reason.TOO_BIG, "Message exceeds the maximum size")
            if has_bare_cr_or_lf(raw):
                raise Refusal(Reason.MALFORMED_MESSAGE, "Message contains a bare CR or LF; lines must end with CRLF")
            raw = await inbound.accept(
                raw,
                settings=self.settings,
                principal=principal,
                trace=envelope.trace,
                recipients=[r.address for r in envelope.recipients],
            )
            max_size += _TRACE_ROOM
        # One parse (size, line ends, header fields), off the event loop when large.
        message = await parse_message_async(raw, max_size=max_size)
        check_header_senders(principal, message)
        if principal.kind != "SERV":  # submission, not another operator's relayed mail
            message = complete_submission(message, domain=self.settings.domain)  # RFC 6409 8.3, 8.4
        sender = normalize_address(envelope.mail_from)
        arrival = datetime.now(UTC)
        sealable = await self.sealer.prepare(message)  # protected once, encrypted per target
        if principal.kind == "SERV" and sealable.as_is is not None:
            # Encrypted by its sender and stored as it came, its clear header cut down to what
            # routing needs (mss.sealing): this hop's Received and Authentication-Results,
            # the first two fields `accept` wrote, stay on top of it.
            ours = b"".join(f.terminated for f in message.fields[:2])
            sealable = replace(sealable, as_is=ours + sealable.as_is)
        sealed_for: list[tuple[Recipient, NewMessage]] = []
        for r in [r for r in envelope.recipients if r.kind != "remote"]:
            target = r.target
            if isinstance(target, PatientTarget):
                if sealable.as_is is not None:
                    raise Refusal(
                        Reason.CANNOT,
                        "Send messages to patients unencrypted over TLS: the server encrypts them to the patient's key",
                        "already-encrypted message to a patient",
                    )
                sealed, headers = await self.sealer.seal_for_patient(sealable, target.certificate)
            elif target is not None:
                sealed, headers = await self.sealer.seal(target.address, sealable, target.certificates)
            else:  # pragma: no cover - add_recipient refuses them
                raise Refusal(Reason.CANNOT, "A recipient was not resolved")
            sealed_for.append((r, NewMessage(mailbox=target.address, folder="INBOX", content=sealed, headers=headers)))
        remote = [r for r in envelope.recipients if r.kind == "remote"]
        # The quota, now that the stored size is known: a recipient whose mailbox has no room
        # is left out and its sender told by a DSN (the 250 covers the others); with nobody
        # left to deliver to, the whole message is refused (552 5.2.2) and nothing is stored.
        room = await self.store.fitting([item for _, item in sealed_for])
        over_quota = [r for (r, _), fits in zip(sealed_for, room, strict=True) if not fits]
        delivered = [(r, item) for (r, item), fits in zip(sealed_for, room, strict=True) if fits]
        if over_quota and not delivered and not remote:
            raise Refusal(
                Reason.OVER_QUOTA,
                f"Mailbox <{over_quota[0].address}> has no room for this message"
                if len(over_quota) == 1
                else "No recipient's mailbox has room for this message",
                f"over quota at DATA: {','.join(r.address for r in over_quota)}",
            )
        local = [r for r, _ in delivered]
        items = [item for _, item in delivered]
        patient_items = [(i, r.target) for i, r in enumerate(local) if isinstance(r.target, PatientTarget)]
        #: Everything from here on (the Sent copy, the reports) is left out, not refused,
        #: when its mailbox has no room: a report is never refused back to anyone.
        required = len(items)
        sent_at = await self._sent_copy(principal, sender, sealable, items)
        if remote and not self.relaying:  # pragma: no cover - resolve refuses them
            raise Refusal(Reason.RELAY_NOT_ENABLED, "Relaying to other operators is not enabled on this server")
        outgoing: list[OutboundMessage] = []
        for domain, group in _by_domain(remote).items():
            outgoing.append(
                await outbound.prepare(
                    settings=self.settings,
                    sessions=self.sessions,
                    sealer=self.sealer,
                    domain=domain,
                    mail_from=sender,
                    recipients=[OutboundRecipient(r.address, r.dsn) for r in group],
                    message=message,
                    sealable=sealable,
                    trace=envelope.trace,
                    dsn=envelope.dsn,
                    arrival=arrival,
                )
            )
        await self._success_reports(principal, envelope, as_received, local, arrival, items, outgoing)
        await self._over_quota_reports(principal, envelope, as_received, over_quota, arrival, items, outgoing)
        queued: list[int] = []

        async def then(s: AsyncSession, refs: list[StoredRef | None]) -> None:
            stored_patients: list[tuple[PatientTarget, StoredRef]] = []
            for i, target in patient_items:
                ref = refs[i]
                assert ref is not None  # a recipient's copy is never optional
                stored_patients.append((target, ref))
            await self.patients.after_delivery(
                s, sender=sender, principal=principal, message=message, stored=stored_patients
            )
            if answering is not None:
                msgid = (message_ids(message.outer.message_id) or [""])[0]
                await self.patients.record_answer(
                    s, answering.id, msgid, refs[sent_at] if sent_at is not None else None
                )
            if outgoing:
                assert self.queue is not None
                # Assigned, not appended: a batch that failed is run again op by op (mss.commit).
                queued[:] = await self.queue.enqueue(s, outgoing)

        try:
            refs = await self.store.write_some(items, optional=range(required, len(items)), then=then)
        except Refusal as exc:
            if exc.reason is not Reason.OVER_QUOTA or (required <= 1 and not remote):
                raise
            # A mailbox filled up between the check above and the commit (another delivery
            # at the same moment): the others must not be refused for good because of it.
            raise Refusal(
                Reason.TEMPORARILY_UNAVAILABLE,
                "A recipient's mailbox filled up during delivery, try again later",
                exc.log,
            ) from None
        if outgoing:
            assert self.queue is not None
            self.queue.wakeup.set()
        if sent_at is not None and refs[sent_at] is None:
            log.warning("sent copy of %s not kept: the mailbox is over its quota", sender)
        stored = tuple(r for r in refs if r is not None)
        log.info(
            "delivered from=%s rcpts=%d stored=%d queued=%s over_quota=%s size=%d",
            sender or "<>",
            len(envelope.recipients),
            len(stored),
            ",".join(map(str, queued)) or "-",
            ",".join(r.address for r in over_quota) or "-",
            len(raw),
        )
        return DeliveryResult(stored=stored, queued=tuple(queued), over_quota=tuple(r.address for r in over_quota))

    async def _success_reports(
        self,
        principal: Principal,
        envelope: Envelope,
        original: bytes,
        local: Sequence[Recipient],
        arrival: datetime,
        items: list[NewMessage],
        outgoing: list[OutboundMessage],
    ) -> None:
        """The success DSN (RFC 3464, action "delivered", 2.0.0) of the local recipients that
        asked for one (NOTIFY=SUCCESS, RFC 3461 4.1): this operator is where final delivery
        happens."""
        asked = [r for r in local if r.dsn is not None and r.dsn.notify and "SUCCESS" in r.dsn.notify]
        outcomes = [
            RecipientOutcome(
                final_recipient=r.address,
                original_recipient=r.dsn.orcpt if r.dsn else None,
                action="delivered",
                status="2.0.0",
                last_attempt=arrival,
            )
            for r in asked
        ]
        await self._report(principal, envelope, original, outcomes, arrival, items, outgoing)

    async def _over_quota_reports(
        self,
        principal: Principal,
        envelope: Envelope,
        original: bytes,
        refused: Sequence[Recipient],
        arrival: datetime,
        items: list[NewMessage],
        outgoing: list[OutboundMessage],
    ) -> None:
        """The failure DSN (action "failed", 5.2.2 "mailbox full", RFC 3463) of the recipients
        whose mailbox had no room at DATA, after the 250 that covered the others: unless
        their NOTIFY leaves FAILURE out (RFC 3461 4.1; absent means failures)."""
        told = [r for r in refused if r.dsn is None or r.dsn.notify is None or "FAILURE" in r.dsn.notify]
        outcomes = [
            RecipientOutcome(
                final_recipient=r.address,
                original_recipient=r.dsn.orcpt if r.dsn else None,
                action="failed",
                status="5.2.2",
                diagnostic=f"552 5.2.2 Mailbox <{r.address}> is over its quota",
                last_attempt=arrival,
            )
            for r in told
        ]
        await self._report(principal, envelope, original, outcomes, arrival, items, outgoing)

    async def _report(
        self,
        principal: Principal,
        envelope: Envelope,
        original: bytes,
        outcomes: Sequence[RecipientOutcome],
        arrival: datetime,
        items: list[NewMessage],
        outgoing: list[OutboundMessage],
    ) -> None:
        """A DSN of `outcomes` goes with the delivery's own transaction: to a local sender's
        INBOX (sealed like any mail), or queued with the null sender to the sender's
        operator. Never for a null-sender message (RFC 3461 6.2: no DSN about a DSN)."""
        if not outcomes or not envelope.mail_from:
            return

        to = normalize_address(envelope.mail_from)
        report = build_report(
            reporting_mta=self.settings.domain,
            domain=self.settings.domain,
            to=to,
            original=original,
            outcomes=outcomes,
            envid=envelope.dsn.envid if envelope.dsn else None,
            ret=envelope.dsn.ret if envelope.dsn else None,
            arrival=arrival,
        )
        dom = domain_of(to)
        if dom in self.local_domains:
            item = await self._local_report(to, report)
            if item is not None:
                items.append(item)
        elif self.relaying and (principal.kind == "SERV" or await self._trusted(dom)):
            outgoing.append(await self._outbound_report(to, report))
        else:
            log.info("DSN for %s dropped: not a local mailbox nor another operator's", to)

    async def _trusted(self, domain: str) -> bool:
        async with self.sessions() as s:
            return await in_trust_space(s, domain)

    async def _local_report(self, to: str, raw: bytes) -> NewMessage | None:
        """A report for a local mailbox, sealed to its keys; None (logged) when it cannot
        receive: a report is never refused back to anyone."""
        if self.is_postmaster(to):
            try:
                target = (await self._postmaster()).target
            except Refusal as exc:
                log.warning("report for %s dropped: %s", to, exc.log)
                return None
        else:
            async with self.sessions() as s:
                target = await LocalDirectory(s).delivery_target(to)
        if not isinstance(target, DeliveryTarget) or not target.certificates:
            log.warning("report for %s dropped: no local mailbox with an encryption certificate", to)
            return None
        message = await parse_message_async(raw, max_size=self.settings.limits.max_message_size + _TRACE_ROOM)
        sealed, headers = await self.sealer.seal(
            target.address, await self.sealer.prepare(message), target.certificates
        )
        return NewMessage(mailbox=target.address, folder="INBOX", content=sealed, headers=headers)

    async def _outbound_report(self, to: str, raw: bytes) -> OutboundMessage:
        """A report queued for another operator's `to`, with the null reverse-path."""
        message = await parse_message_async(raw, max_size=self.settings.limits.max_message_size + _TRACE_ROOM)
        return await outbound.prepare(
            settings=self.settings,
            sessions=self.sessions,
            sealer=self.sealer,
            domain=domain_of(to),
            mail_from="",
            recipients=[OutboundRecipient(to)],
            message=message,
        )

    async def send_report(self, to: str, raw: bytes) -> None:
        """Deliver a message this server made (a DSN of the relay, `mss.relay`): to a local
        mailbox, sealed to its keys and stored in its INBOX; to another operator's
        whitelisted domain, queued with the null sender (RFC 3461 6.2, RFC 5321 4.5.5);
        anything else is logged and dropped. A report that cannot be delivered is dropped,
        never answered by another report (no DSN for a DSN)."""
        to = normalize_address(to)
        dom = domain_of(to)
        if not to:
            log.info("report dropped: null reverse-path (no DSN for a DSN)")
            return
        if self.is_postmaster(to) or dom in self.local_domains:
            item = await self._local_report(to, raw)
            if item is not None:
                (ref,) = await self.store.write_some([item], optional=[0])
                if ref is None:
                    log.warning("report for %s dropped: the mailbox is over its quota", to)
                else:
                    log.info("report delivered to %s", to)
            return
        if self.patients.is_patient_address(to):
            log.warning("report for patient address %s dropped", to)
            return
        if not self.relaying or not await self._trusted(dom):
            log.warning("report for %s dropped: not a local mailbox nor a relayed domain", to)
            return
        message = await self._outbound_report(to, raw)
        assert self.queue is not None
        queued: list[int] = []
        queue = self.queue

        async def then(s: AsyncSession, refs: list[StoredRef]) -> None:
            queued[:] = await queue.enqueue(s, [message])

        await self.store.write([], then=then)
        queue.wakeup.set()
        log.info("report for %s queued id=%s", to, ",".join(map(str, queued)))

    async def _sent_copy(
        self, principal: Principal, sender: str, sealable: Sealable, items: list[NewMessage]
    ) -> int | None:
        """Append the sender's own encrypted copy to `items` when it keeps one (APP mailboxes
        by default, a patient's answers always); returns its position. Never for another
        operator's relayed mail nor a report: their sender is no mailbox of ours."""
        if principal.kind == "SERV" or not sender:
            return None
        if principal.kind == "PATIENT":
            own = await self.patients.own_target(sender)
            sealed, headers = await self.sealer.seal_for_patient(sealable, own.certificate)
        else:
            # The principal read its mailboxes' Sent-copy setting at authentication: no
            # look-up for the usual sender that keeps none.
            if principal.keeps_sent_copy(sender) is False:
                return None
            async with self.sessions() as s:
                local = await LocalDirectory(s).delivery_target(sender)
                if local is None or not local.sent_copy:
                    return None
            assert local is not None
            sealed, headers = await self.sealer.seal(sender, sealable, local.certificates)
        items.append(
            NewMessage(mailbox=sender, folder="Sent", content=sealed, headers=headers, flags=frozenset({"\\Seen"}))
        )
        return len(items) - 1


def _by_domain(recipients: Sequence[Recipient]) -> dict[str, list[Recipient]]:
    """Remote recipients per domain, in RCPT order: one queue entry (one copy) per domain."""
    groups: dict[str, list[Recipient]] = {}
    for r in recipients:
        groups.setdefault(domain_of(r.address), []).append(r)
    return groups


def _check_can_receive(target: DeliveryTarget | None) -> None:
    if target is not None and not target.certificates:
        raise Refusal(
            Reason.NO_ENCRYPTION_KEY,
            f"Mailbox <{target.address}> has no valid encryption certificate and cannot receive",
        )
