"""The patient space: registry, life cycle, blocks, journal, conversations, and the rules a
message to or from a patient must follow (DESIGN.md "Patient space"; MSSANTE.md "Patients").

A space is keyed by the INS and addressed `<INS>@<patient domain>`. It is created by the
operator and receives mail at once (state `pending`: its mail waits, encrypted, until the
patient activates it in the browser). The server keeps only what zero access allows: the
certificate mail is encrypted to, the private key wrapped under a key only the patient's
browser derives, and Argon2id hashes of the authentication keys (`crypto.patient`).

Closing or opposing a space crypto-shreds it: the wrapped key and the hashes go in the same
transaction as the state change, then the ciphertexts, conversations, journal and pending
notifications. The row itself stays (state and dates only), so mail to it is refused with a
reason a sender can act on instead of "unknown".

`mss.patients` writes its own tables; message rows stay the store's (`mss.store`).
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from annuaire.search import Directory
from crypto import patient as patient_crypto
from crypto.dates import as_utc
from crypto.ins import InsError, check_ins
from crypto.rfc5322 import get_all
from mss.audit import AuditTrail, cli_actor
from mss.config import Settings
from mss.db.models import (
    Conversation,
    ConversationMessage,
    PatientBlock,
    PatientJournal,
    PatientNotification,
    PatientSpace,
)
from mss.message import ParsedMessage
from mss.notify import schedule
from mss.principal import Principal
from mss.records import StoredRef
from mss.refusals import Reason, Refusal
from mss.store import Store

log = logging.getLogger("mss.patients")

STATES = ("pending", "active", "opposed", "closed")
#: Who may write to a patient: professionals and structures of the trust space.
WRITERS = frozenset({"PS", "ORG", "SERV"})
_MSGID = re.compile(r"<[^<>\s]{1,990}>")


@dataclass(frozen=True)
class PatientRecord:
    """A space as the rest of MSS sees it (no ORM object, no key material)."""

    ins: str
    address: str
    name: str
    email: str
    state: str
    created_at: datetime
    activated_at: datetime | None
    closed_at: datetime | None
    notify: bool
    blocked: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "ins": self.ins,
            "address": self.address,
            "name": self.name,
            "email": self.email,
            "state": self.state,
            "created_at": self.created_at.isoformat(),
            "activated_at": self.activated_at.isoformat() if self.activated_at else None,
            "closed_at": self.closed_at.isoformat() if self.closed_at else None,
            "notify": self.notify,
            "blocked": list(self.blocked),
        }


@dataclass(frozen=True)
class JournalEntry:
    at: datetime
    actor_kind: str
    actor: str
    action: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {
            "at": self.at.isoformat(),
            "actor_kind": self.actor_kind,
            "actor": self.actor,
            "action": self.action,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class PatientTarget:
    """A patient recipient as RCPT resolved it: what delivery needs to encrypt and file."""

    address: str
    ins: str
    certificate: x509.Certificate


@dataclass(frozen=True)
class ConversationInfo:
    id: int
    ins: str
    professional: str
    professional_name: str
    started_at: datetime
    last_at: datetime
    closed_at: datetime | None
    message_ids: tuple[str, ...] = field(default=())

    @property
    def closed(self) -> bool:
        return self.closed_at is not None


@dataclass(frozen=True)
class ImportReport:
    created: list[dict[str, str]]
    rejected: dict[str, list[int]]  # reason -> line numbers


def header_values(message: ParsedMessage, name: str) -> list[str]:
    """Every `name` field's value, unfolded (the original message, as submitted)."""
    return [f.unfolded for f in get_all(message.fields, name)]


def is_fin(message: ParsedMessage) -> bool:
    """MSSANTE.md: `X-MSS-MES: FIN`, or a Subject that is exactly `[FIN]`, closes the
    conversation (`Re: [FIN]` does not)."""
    if any(v.strip().upper() == "FIN" for v in header_values(message, "X-MSS-MES")):
        return True
    return any(v.strip() == "[FIN]" for v in header_values(message, "Subject"))


def message_ids(value: str) -> list[str]:
    """The msg-ids (RFC 5322 3.6.4) in a Message-ID / In-Reply-To / References value."""
    return _MSGID.findall(value or "")


def _record(row: PatientSpace, blocked: Iterable[str] = ()) -> PatientRecord:
    return PatientRecord(
        ins=row.ins,
        address=row.address,
        name=row.display_name,
        email=row.email,
        state=row.state,
        created_at=as_utc(row.created_at),
        activated_at=as_utc(row.activated_at) if row.activated_at else None,
        closed_at=as_utc(row.closed_at) if row.closed_at else None,
        notify=row.notify,
        blocked=tuple(sorted(blocked)),
    )


def _now() -> datetime:
    return datetime.now(UTC)


#: Verified when there is no stored hash, so "no such space" costs what "wrong key" costs.
_DUMMY_HASH = patient_crypto.hash_auth_key(bytes(32))


async def _verify(stored: str | None, auth_key: bytes) -> bool:
    """Argon2id verification off the event loop (tens of milliseconds each)."""
    ok = await asyncio.to_thread(patient_crypto.verify_auth_key, stored or _DUMMY_HASH, auth_key)
    return ok and stored is not None


async def _hash(auth_key: bytes) -> str:
    return await asyncio.to_thread(patient_crypto.hash_auth_key, auth_key)


class PatientSpaces:
    """`mss.services.PatientSpaces`: the registry and its rules, for the CLI, the delivery
    path and the portal."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        store: Store,
        *,
        audit: AuditTrail | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.store = store
        #: Life-cycle and data-access events, in the transaction of the change (mss.audit).
        self.audit = audit or AuditTrail(sessions, enabled=settings.audit.enabled)

    @property
    def domain(self) -> str:
        return self.settings.patient_domain

    def address_of(self, ins: str) -> str:
        return f"{ins}@{self.domain}"

    def check_ins(self, value: str) -> str:
        """The normalised INS, or Refusal(BAD_ADDRESS) naming the check that failed."""
        try:
            return check_ins(value).value
        except InsError as exc:
            raise Refusal(Reason.BAD_ADDRESS, f"Invalid INS: {exc}", f"ins {exc.reason}") from exc

    def ins_of(self, identifier: str) -> str:
        """An INS or a patient address -> the INS (checked)."""
        identifier = identifier.strip()
        if "@" in identifier:
            local, _, dom = identifier.rpartition("@")
            if dom.lower() != self.domain:
                raise Refusal(Reason.BAD_ADDRESS, f"Not a patient address of this operator: {identifier}")
            identifier = local
        return self.check_ins(identifier)

    # -- registry --------------------------------------------------------------------------

    async def create(self, ins: str, *, email: str, name: str = "") -> tuple[PatientRecord, str]:
        """Register a space (state pending) and return it with its activation code, shown
        once: only a key derived from it can unwrap the space's private key, and the server
        keeps neither the code nor the key in clear."""
        ins = self.check_ins(ins)
        email = email.strip()
        if email and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
            raise Refusal(Reason.BAD_ADDRESS, f"Not an e-mail address: {email}")
        keys = await asyncio.to_thread(
            patient_crypto.provision_patient,
            name or ins,
            ins,
            address=self.address_of(ins),
            iterations=self.settings.patients.kdf_iterations,
        )
        code = keys.activation_code
        now = _now()
        async with self.sessions() as s, s.begin():
            if await s.get(PatientSpace, ins) is not None:
                raise Refusal(Reason.CANNOT, f"A patient space already exists for INS {ins}", "duplicate")
            row = PatientSpace(
                ins=ins,
                address=self.address_of(ins),
                display_name=name,
                email=email,
                state="pending",
                notify=True,
                created_at=now,
                certificate=keys.certificate.public_bytes(Encoding.DER),
                key_record=keys.wrapped.dumps(),
                activation_hash=keys.auth_hash,
                activation_expires_at=now + timedelta(seconds=self.settings.patients.activation_ttl_s),
            )
            s.add(row)
            await s.flush()  # the journal row refers to it
            self._journal(s, ins, "operator", "", "created", now=now)
            await self._audit(s, "patient.created", ins, "operator")
            record = _record(row)
        await self.store.ensure_default_folders(record.address)
        log.info("patient created ins=%s", ins)
        return record, code

    async def import_csv(self, path: Path) -> ImportReport:
        """`ins,email,name` rows (a header line is optional); each row on its own."""
        created: list[dict[str, str]] = []
        rejected: dict[str, list[int]] = {}
        with path.open(encoding="utf-8-sig", newline="") as fh:
            for n, row in enumerate(csv.reader(fh), 1):
                if not row or not "".join(row).strip():
                    continue
                if n == 1 and row[0].strip().lower() == "ins":
                    continue
                ins, email, name = (row + ["", "", ""])[:3]
                try:
                    record, code = await self.create(ins, email=email, name=name.strip())
                except Refusal as exc:
                    key = exc.log if exc.reason in (Reason.BAD_ADDRESS, Reason.CANNOT) else exc.reason.value
                    rejected.setdefault(key, []).append(n)
                    continue
                created.append({"ins": record.ins, "address": record.address, "activation_code": code})
        return ImportReport(created, rejected)

    async def get(self, identifier: str) -> PatientRecord | None:
        ins = self.ins_of(identifier)
        async with self.sessions() as s:
            row = await s.get(PatientSpace, ins)
            if row is None:
                return None
            return _record(row, await self._blocked(s, ins))

    async def list(self) -> list[PatientRecord]:
        async with self.sessions() as s:
            rows = (await s.execute(select(PatientSpace).order_by(PatientSpace.ins))).scalars().all()
            blocks = (await s.execute(select(PatientBlock.ins, PatientBlock.professional))).all()
        by_ins: dict[str, list[str]] = {}
        for ins, pro in blocks:
            by_ins.setdefault(ins, []).append(pro)
        return [_record(r, by_ins.get(r.ins, ())) for r in rows]

    @staticmethod
    async def _blocked(s: AsyncSession, ins: str) -> list[str]:
        return list((await s.execute(select(PatientBlock.professional).where(PatientBlock.ins == ins))).scalars())

    async def oppose(self, identifier: str, *, actor_kind: str = "operator", actor: str = "") -> PatientRecord:
        """The person refuses the space: everything is destroyed as for a close."""
        return await self._shred(identifier, "opposed", actor_kind, actor)

    async def close(self, identifier: str, *, actor_kind: str = "operator", actor: str = "") -> PatientRecord:
        return await self._shred(identifier, "closed", actor_kind, actor)

    async def _shred(self, identifier: str, state: str, actor_kind: str, actor: str) -> PatientRecord:
        ins = self.ins_of(identifier)
        now = _now()
        async with self.sessions() as s, s.begin():
            row = await s.get(PatientSpace, ins)
            if row is None:
                raise Refusal(Reason.UNKNOWN_RECIPIENT, f"No patient space for INS {ins}")
            if row.state in ("opposed", "closed"):
                raise Refusal(Reason.MAILBOX_DISABLED, f"The patient space {ins} is already {row.state}")
            # First, in the transaction that changes the state: the key material.
            row.key_record = None
            row.auth_hash = None
            row.activation_hash = None
            row.activation_expires_at = None
            row.certificate = None
            row.totp_secret = None
            row.totp_pending = None
            row.totp_last_step = None
            row.totp_recovery = None
            row.state = state
            row.closed_at = now
            record = _record(row)
            await self._audit(s, f"patient.{state}", ins, actor_kind, actor)
        # Then everything it protected, and what the space knew of its patient.
        await self.store.delete_mailbox(record.address)
        async with self.sessions() as s, s.begin():
            await s.execute(delete(Conversation).where(Conversation.ins == ins))
            await s.execute(delete(PatientJournal).where(PatientJournal.ins == ins))
            await s.execute(delete(PatientNotification).where(PatientNotification.ins == ins))
            await s.execute(delete(PatientBlock).where(PatientBlock.ins == ins))
            await s.execute(update(PatientSpace).where(PatientSpace.ins == ins).values(email="", display_name=""))
        log.info("patient space %s ins=%s by=%s", state, ins, actor_kind)
        return record

    async def block(self, identifier: str, professional: str, *, by: str = "operator") -> None:
        ins = self.ins_of(identifier)
        professional = professional.strip().lower()
        async with self.sessions() as s, s.begin():
            await self._live(s, ins)
            if professional not in await self._blocked(s, ins):
                s.add(PatientBlock(ins=ins, professional=professional, created_at=_now()))
            self._journal(s, ins, by, "", "blocked", professional)
            await self._audit(s, "patient.blocked", ins, by, professional=professional)

    async def unblock(self, identifier: str, professional: str, *, by: str = "operator") -> None:
        ins = self.ins_of(identifier)
        professional = professional.strip().lower()
        async with self.sessions() as s, s.begin():
            await self._live(s, ins)
            await s.execute(
                delete(PatientBlock).where(PatientBlock.ins == ins, PatientBlock.professional == professional)
            )
            self._journal(s, ins, by, "", "unblocked", professional)
            await self._audit(s, "patient.unblocked", ins, by, professional=professional)

    async def set_notify(self, identifier: str, on: bool, *, by: str = "operator") -> None:
        """Arrival notifications by e-mail on or off (they never carry health data)."""
        ins = self.ins_of(identifier)
        async with self.sessions() as s, s.begin():
            row = await self._live(s, ins)
            if row.notify != on:
                row.notify = on
                self._journal(s, ins, by, "", "notifications_on" if on else "notifications_off")

    async def check_activation(self, identifier: str, activation_auth_key: bytes) -> dict[str, object]:
        """The record wrapped under the activation code, once the proof of the code checks;
        nothing changes. Refusal(NOT_ALLOWED) for a wrong code, an unknown or non-pending
        space alike (the same Argon2id work in every case), or an expired code (said only to
        whoever proved the code)."""
        try:
            ins = self.ins_of(identifier)
        except Refusal:
            ins = ""
        async with self.sessions() as s:
            row = await s.get(PatientSpace, ins) if ins else None
            pending = row is not None and row.state == "pending" and bool(row.activation_hash)
            stored = row.activation_hash if pending and row is not None else None
            expires = row.activation_expires_at if pending and row is not None else None
            record = row.key_record if pending and row is not None else None
        if not await _verify(stored, activation_auth_key):
            raise Refusal(Reason.NOT_ALLOWED, "Wrong activation code", f"activation proof refused ins={ins}")
        if expires is not None and as_utc(expires) < _now():
            raise Refusal(Reason.NOT_ALLOWED, "This activation code has expired", f"activate {ins}: expired")
        return json.loads(record or "{}")

    async def check_password(self, principal: Principal, auth_key: bytes) -> dict[str, object]:
        """The current record, once `auth_key` proves the current password (before a change)."""
        ins = self._own(principal)
        async with self.sessions() as s:
            row = await self._live(s, ins)
            stored, record = row.auth_hash, row.key_record
        if not await _verify(stored, auth_key):
            raise Refusal(Reason.NOT_ALLOWED, "Wrong password", f"password check refused ins={ins}")
        return json.loads(record or "{}")

    async def journal(self, identifier: str) -> list[JournalEntry]:
        ins = self.ins_of(identifier)
        async with self.sessions() as s:
            rows = (
                await s.execute(select(PatientJournal).where(PatientJournal.ins == ins).order_by(PatientJournal.id))
            ).scalars()
            return [JournalEntry(as_utc(r.at), r.actor_kind, r.actor, r.action, r.detail) for r in rows]

    async def note(self, identifier: str, actor_kind: str, actor: str, action: str, detail: str = "") -> None:
        """A journal line from elsewhere (the portal: login, read, download, settings)."""
        ins = self.ins_of(identifier)
        async with self.sessions() as s, s.begin():
            self._journal(s, ins, actor_kind, actor, action, detail)
            await self._audit(s, f"patient.{action}", ins, actor_kind, actor, detail=detail)

    async def _audit(
        self, s: AsyncSession, type: str, ins: str, actor_kind: str, actor: str = "", **fields: str
    ) -> None:
        """The audit event of a journaled change, in its transaction (appended last: the
        audit head stays locked until the commit). The operator is whoever runs `mss`."""
        if actor_kind == "operator":  # getpass may ask NSS (blocking): only for the CLI's events
            who = cli_actor()
        elif actor_kind == "patient":
            who = f"portal:{ins}"
        else:
            who = f"{actor_kind}:{actor}"
        await self.audit.record_in(s, type, actor=who, subject=f"patient:{ins}", **fields)

    @staticmethod
    def _journal(
        s: AsyncSession,
        ins: str,
        actor_kind: str,
        actor: str,
        action: str,
        detail: str = "",
        *,
        now: datetime | None = None,
    ) -> None:
        s.add(
            PatientJournal(ins=ins, at=now or _now(), actor_kind=actor_kind, actor=actor, action=action, detail=detail)
        )

    @staticmethod
    async def _live(s: AsyncSession, ins: str) -> PatientSpace:
        row = await s.get(PatientSpace, ins)
        if row is None:
            raise Refusal(Reason.UNKNOWN_RECIPIENT, f"No patient space for INS {ins}")
        if row.state not in ("pending", "active"):
            raise Refusal(Reason.MAILBOX_DISABLED, f"The patient space {ins} is {row.state}")
        return row

    # -- keys: what the browser needs, and what it proves -----------------------------------

    async def key_record(self, identifier: str) -> dict[str, object]:
        """The wrapped key record (KDF parameters, salt, IV, wrapped key). Useless without the
        secret it was wrapped under; the portal still hands it only where its rules say."""
        ins = self.ins_of(identifier)
        async with self.sessions() as s:
            row = await self._live(s, ins)
            return json.loads(row.key_record or "{}")

    async def activate(
        self, identifier: str, activation_auth_key: bytes, new_auth_key: bytes, new_record: dict[str, object]
    ) -> PatientRecord:
        """The browser unwrapped the key with the activation code and re-wrapped it under its
        password: check the proof of the code, keep the new record and auth-key hash."""
        ins = self.ins_of(identifier)
        record = self._checked_record(new_record)
        now = _now()
        async with self.sessions() as s, s.begin():
            row = await self._live(s, ins)
            if row.state != "pending" or not row.activation_hash:
                raise Refusal(Reason.NOT_ALLOWED, "This space is already activated", f"activate {ins}: {row.state}")
            if row.activation_expires_at and as_utc(row.activation_expires_at) < now:
                raise Refusal(Reason.NOT_ALLOWED, "This activation code has expired", f"activate {ins}: expired")
            if not await _verify(row.activation_hash, activation_auth_key):
                raise Refusal(Reason.NOT_ALLOWED, "Wrong activation code", f"activate {ins}: wrong code")
            row.key_record = record
            row.auth_hash = await _hash(new_auth_key)
            row.activation_hash = None
            row.activation_expires_at = None
            row.state = "active"
            row.activated_at = now
            self._journal(s, ins, "patient", "", "activated", now=now)
            await self._audit(s, "patient.activated", ins, "patient")
            return _record(row, await self._blocked(s, ins))

    async def authenticate(self, identifier: str, auth_key: bytes) -> Principal:
        """The patient's principal when `auth_key` (derived in the browser from the password)
        matches; Refusal(NOT_ALLOWED) otherwise, the same for an unknown identifier."""
        try:
            ins = self.ins_of(identifier)
        except Refusal:
            raise Refusal(Reason.NOT_ALLOWED, "Invalid credentials", "patient login: bad identifier") from None
        async with self.sessions() as s:
            row = await s.get(PatientSpace, ins)
            stored = row.auth_hash if row is not None and row.state == "active" else None
        if not await _verify(stored, auth_key):
            raise Refusal(Reason.NOT_ALLOWED, "Invalid credentials", f"patient login refused ins={ins}")
        assert row is not None
        return Principal(
            "PATIENT", ins, row.display_name or ins, frozenset({row.address}), row.address, mechanism="PATIENT"
        )

    async def change_password(
        self, principal: Principal, old_auth_key: bytes, new_auth_key: bytes, new_record: dict[str, object]
    ) -> None:
        ins = self._own(principal)
        record = self._checked_record(new_record)
        async with self.sessions() as s, s.begin():
            row = await self._live(s, ins)
            if not await _verify(row.auth_hash, old_auth_key):
                raise Refusal(Reason.NOT_ALLOWED, "Wrong password", f"password change refused ins={ins}")
            row.key_record = record
            row.auth_hash = await _hash(new_auth_key)
            self._journal(s, ins, "patient", "", "password_changed")
            await self._audit(s, "patient.password_changed", ins, "patient")

    def _checked_record(self, record: dict[str, object]) -> str:
        """A wrapped-key record the browser sent, validated and in canonical form. Its KDF
        cost may not be below the configured floor: a weak record is an offline-guessing gift."""
        try:
            wrapped = patient_crypto.WrappedKey.from_json(record)
        except patient_crypto.PatientCryptoError as exc:
            raise Refusal(Reason.MALFORMED_MESSAGE, "Invalid key record", f"key record: {exc.reason}") from exc
        if wrapped.params.iterations < self.settings.patients.kdf_iterations:
            raise Refusal(Reason.MALFORMED_MESSAGE, "Key record too weak", "key record below kdf_iterations")
        return wrapped.dumps()

    @staticmethod
    def _own(principal: Principal) -> str:
        if principal.kind != "PATIENT":
            raise Refusal(Reason.NOT_ALLOWED, "Only the patient may do this", f"{principal.kind} on a patient space")
        return principal.identifier

    # -- mail to a patient: the rules at RCPT, and what DATA records ---------------------------

    def is_patient_address(self, address: str) -> bool:
        return address.rpartition("@")[2].lower() == self.domain

    async def target(self, address: str, *, principal: Principal, sender: str) -> PatientTarget:
        """RCPT to a patient address (issue "Patient space": the replies in order)."""
        local = address.rpartition("@")[0]
        try:
            ins = check_ins(local).value
        except InsError as exc:
            raise Refusal(Reason.BAD_ADDRESS, f"Invalid patient address <{address}>: {exc}") from exc
        if principal.kind not in WRITERS:
            raise Refusal(
                Reason.NOT_ALLOWED,
                "Only professionals and structures of the health trust space may write to a patient",
                f"{principal.kind}:{principal.identifier} wrote to a patient",
            )
        async with self.sessions() as s:
            row = await s.get(PatientSpace, ins)
            if row is None:
                raise Refusal(Reason.UNKNOWN_RECIPIENT, f"Mailbox <{address}> does not exist")
            if row.state in ("opposed", "closed"):
                raise Refusal(
                    Reason.MAILBOX_DISABLED,
                    f"The patient <{address}> has {'opposed' if row.state == 'opposed' else 'closed'} their patient "
                    "space: messages are no longer delivered to it; reach the patient by other means",
                )
            blocked = await self._blocked(s, ins)
            if sender.lower() in blocked:
                raise Refusal(
                    Reason.NOT_ALLOWED, "Delivery to this recipient is not possible", f"blocked {sender} for {ins}"
                )
            if not row.certificate:  # pragma: no cover - only a closed space lacks one
                raise Refusal(Reason.NO_ENCRYPTION_KEY, f"Mailbox <{address}> has no encryption key")
            return PatientTarget(row.address, ins, x509.load_der_x509_certificate(row.certificate))

    async def own_target(self, address: str) -> PatientTarget:
        """The patient's own mailbox, for the Sent copy of an answer."""
        ins = self.ins_of(address)
        async with self.sessions() as s:
            row = await self._live(s, ins)
            if not row.certificate:  # pragma: no cover - a live space always has one
                raise Refusal(Reason.NO_ENCRYPTION_KEY, "This space has no key")
            return PatientTarget(row.address, ins, x509.load_der_x509_certificate(row.certificate))

    async def after_delivery(
        self,
        s: AsyncSession,
        *,
        sender: str,
        principal: Principal,
        message: ParsedMessage,
        stored: Sequence[tuple[PatientTarget, StoredRef]],
    ) -> None:
        """In the delivery's transaction: thread each patient copy into its conversation,
        close or reopen it, journal the arrival, and schedule the notification."""
        if not stored:
            return
        now = _now()
        name = await self._display_name(s, sender, principal)
        msgid = (message_ids(message.outer.message_id) or [""])[0]
        refs = [
            m for name in ("In-Reply-To", "References") for v in header_values(message, name) for m in message_ids(v)
        ]
        fin = is_fin(message)
        window = timedelta(seconds=self.settings.patients.notify_window_s)
        for target, ref in stored:
            conv = await self._thread(s, target.ins, sender, refs)
            if conv is None:
                conv = Conversation(
                    ins=target.ins, professional=sender, professional_name=name, started_at=now, last_at=now
                )
                s.add(conv)
                await s.flush()
            conv.last_at = now
            conv.professional_name = name or conv.professional_name
            conv.closed_at = now if fin else None  # a later message from the professional reopens
            s.add(
                ConversationMessage(
                    conversation_id=conv.id,
                    message_id=msgid,
                    direction="in",
                    at=now,
                    folder_id=ref.folder_id,
                    uid=ref.uid,
                    closes=fin,
                )
            )
            self._journal(s, target.ins, "professional", sender, "message_received", f"conversation {conv.id}", now=now)
            if fin:
                self._journal(
                    s, target.ins, "professional", sender, "conversation_closed", f"conversation {conv.id}", now=now
                )
            await schedule(s, target.ins, now, window)

    @staticmethod
    async def _thread(s: AsyncSession, ins: str, professional: str, refs: Sequence[str]) -> Conversation | None:
        """The conversation of this patient with this professional that an answer refers to."""
        if not refs:
            return None
        return (
            await s.execute(
                select(Conversation)
                .join(ConversationMessage, ConversationMessage.conversation_id == Conversation.id)
                .where(
                    Conversation.ins == ins,
                    Conversation.professional == professional,
                    ConversationMessage.message_id.in_(list(refs)),
                )
                .order_by(Conversation.last_at.desc())
                .limit(1)
            )
        ).scalar_one_or_none()

    @staticmethod
    async def _display_name(s: AsyncSession, sender: str, principal: Principal) -> str:
        entry = await Directory(s).resolve(sender)
        if entry is not None and entry.display_name:
            return entry.display_name
        return principal.display_name or sender

    # -- conversations, for the portal ------------------------------------------------------

    async def conversations(self, principal: Principal) -> list[ConversationInfo]:
        ins = self._own(principal)
        async with self.sessions() as s:
            rows = (
                (
                    await s.execute(
                        select(Conversation).where(Conversation.ins == ins).order_by(Conversation.last_at.desc())
                    )
                )
                .scalars()
                .all()
            )
            return [await self._info(s, c) for c in rows]

    async def conversation(self, principal: Principal, conversation_id: int) -> ConversationInfo:
        """One of the principal's conversations; any other id is "not found" (never "not
        yours": an id says nothing about another patient)."""
        ins = self._own(principal)
        async with self.sessions() as s:
            conv = await s.get(Conversation, conversation_id)
            if conv is None or conv.ins != ins:
                raise Refusal(Reason.UNKNOWN_RECIPIENT, "No such conversation")
            return await self._info(s, conv)

    @staticmethod
    async def _info(s: AsyncSession, c: Conversation) -> ConversationInfo:
        ids = (
            await s.execute(
                select(ConversationMessage.message_id)
                .where(ConversationMessage.conversation_id == c.id)
                .order_by(ConversationMessage.id)
            )
        ).scalars()
        return ConversationInfo(
            c.id,
            c.ins,
            c.professional,
            c.professional_name,
            as_utc(c.started_at),
            as_utc(c.last_at),
            as_utc(c.closed_at) if c.closed_at else None,
            tuple(i for i in ids if i),
        )

    async def answer_rules(self, principal: Principal, conversation_id: int) -> ConversationInfo:
        """May the patient answer in this conversation? Returns it, or Refusal with why
        (PORTAL.md 6.4: started by a professional, not closed, professional not blocked,
        space active)."""
        ins = self._own(principal)
        conv = await self.conversation(principal, conversation_id)
        async with self.sessions() as s:
            row = await s.get(PatientSpace, ins)
            if row is None or row.state != "active":
                raise Refusal(Reason.NOT_ALLOWED, "This space does not send messages", f"answer from {ins}: not active")
            if conv.professional in await self._blocked(s, ins):
                raise Refusal(
                    Reason.NOT_ALLOWED, "You blocked this professional", f"answer to blocked {conv.professional}"
                )
        if conv.closed:
            raise Refusal(
                Reason.NOT_ALLOWED,
                f"{conv.professional_name or conv.professional} a mis fin à vos échanges.",
                f"answer in closed conversation {conv.id}",
            )
        return conv

    async def record_answer(
        self, s: AsyncSession, conversation_id: int, message_id: str, ref: StoredRef | None
    ) -> None:
        """In the answer's delivery transaction: thread the patient's Sent copy."""
        s.add(
            ConversationMessage(
                conversation_id=conversation_id,
                message_id=message_id,
                direction="out",
                at=_now(),
                folder_id=ref.folder_id if ref else None,
                uid=ref.uid if ref else None,
            )
        )
        conv = await s.get(Conversation, conversation_id)
        if conv is not None:
            conv.last_at = _now()
