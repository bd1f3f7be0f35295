"""Look-ups and changes of this operator's own mailboxes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import Select, and_, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from annuaire.ids import normalize_address  # also imported from here by mss.credentials, mss.delivery
from annuaire.model import MAILBOX_TYPES, LocalMailbox, LocalMailboxMember, MailboxCertificate, RemoteCertificate
from crypto.dates import as_utc


@dataclass(frozen=True)
class CertificateEntry:
    """One encryption certificate of a mailbox (public material only)."""

    id: int
    address: str
    sha256: str
    not_before: datetime
    not_after: datetime
    active: bool
    cert_der: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.cert_der)


@dataclass(frozen=True)
class MailboxEntry:
    """A local mailbox as the rest of the system sees it (no ORM object escapes)."""

    address: str
    type: str
    idnat: str | None
    structure_id: str | None
    display_name: str
    sent_copy: bool
    members: tuple[str, ...] = ()
    #: (member, RFC 4314 rights letters) of an ORG mailbox, by member (`mss.rights`).
    member_rights: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DeliveryTarget:
    """A local mailbox as delivery sees it."""

    address: str
    type: str
    sent_copy: bool
    certificates: tuple[x509.Certificate, ...]


def _entry(row: LocalMailbox, members: Iterable[str] | dict[str, str] = ()) -> MailboxEntry:
    rights = members if isinstance(members, dict) else {}
    return MailboxEntry(
        address=row.address,
        type=row.type,
        idnat=row.idnat,
        structure_id=row.structure_id,
        display_name=row.display_name,
        sent_copy=row.sent_copy,
        members=tuple(sorted(members)),
        member_rights=tuple(sorted(rights.items())),
    )


def _delivery_target() -> Select:
    """The one query of `delivery_target` (what every RCPT asks), built once: the mailbox row,
    outer-joined to its active certificates and, for an ORG mailbox, its members' (the mailbox
    comes back once with NULLs when it has none). Members without the "r" right (RFC 4314 2.1)
    may not read it: not encrypted to them. Built per call, its expression took more CPU than
    running it (py-spy under SMTP load)."""
    readers = select(LocalMailboxMember.member).where(
        LocalMailboxMember.mailbox == LocalMailbox.address, LocalMailboxMember.rights.contains("r")
    )
    owners = or_(
        MailboxCertificate.address == LocalMailbox.address,
        and_(LocalMailbox.type == "ORG", MailboxCertificate.address.in_(readers.scalar_subquery())),
    )
    return (
        select(
            LocalMailbox.type,
            LocalMailbox.sent_copy,
            MailboxCertificate.cert_der,
            MailboxCertificate.not_before,
            MailboxCertificate.not_after,
        )
        .select_from(LocalMailbox)
        .outerjoin(MailboxCertificate, and_(owners, MailboxCertificate.active.is_(True)))
        .where(LocalMailbox.address == bindparam("b_address"))
        .order_by(MailboxCertificate.id)
    )


_DELIVERY_TARGET = _delivery_target()


class LocalDirectory:
    """Queries over the local mailbox tables, bound to one session (one transaction)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, address: str) -> MailboxEntry | None:
        address = normalize_address(address)
        row = await self.session.get(LocalMailbox, address)
        if row is None:
            return None
        return _entry(row, await self.member_rights(address))

    async def members(self, address: str) -> list[str]:
        res = await self.session.execute(
            select(LocalMailboxMember.member).where(LocalMailboxMember.mailbox == normalize_address(address))
        )
        return list(res.scalars())

    async def member_rights(self, address: str) -> dict[str, str]:
        """An ORG mailbox's members and their RFC 4314 rights letters."""
        res = await self.session.execute(
            select(LocalMailboxMember.member, LocalMailboxMember.rights).where(
                LocalMailboxMember.mailbox == normalize_address(address)
            )
        )
        return dict(res.all())

    async def grant(self, address: str, member: str, rights: str) -> str | None:
        """Give `member` (a PER mailbox) `rights` on the ORG mailbox `address`, adding the
        membership if new; returns the rights it had before (None: it was no member)."""
        address, member = normalize_address(address), normalize_address(member)
        row = await self.session.get(LocalMailboxMember, (address, member))
        if row is None:
            self.session.add(LocalMailboxMember(mailbox=address, member=member, rights=rights))
            await self.session.flush()
            return None
        before = row.rights
        row.rights = rights
        await self.session.flush()
        return before

    async def revoke(self, address: str, member: str) -> str | None:
        """End `member`'s membership of `address`; returns the rights it had (None: none)."""
        address, member = normalize_address(address), normalize_address(member)
        row = await self.session.get(LocalMailboxMember, (address, member))
        if row is None:
            return None
        before = row.rights
        await self.session.delete(row)
        await self.session.flush()
        return before

    async def for_idnat(self, idnat: str) -> list[MailboxEntry]:
        """PER mailboxes of a professional, plus the ORG mailboxes any of them belongs to."""
        res = await self.session.execute(select(LocalMailbox).where(LocalMailbox.idnat == idnat))
        own = [_entry(r) for r in res.scalars()]
        if not own:
            return []
        res = await self.session.execute(
            select(LocalMailbox)
            .join(LocalMailboxMember, LocalMailboxMember.mailbox == LocalMailbox.address)
            .where(LocalMailboxMember.member.in_([m.address for m in own]))
        )
        shared = [_entry(r) for r in res.scalars()]
        return own + [s for s in shared if s.address not in {o.address for o in own}]

    async def for_structure(self, structure_id: str) -> list[MailboxEntry]:
        res = await self.session.execute(select(LocalMailbox).where(LocalMailbox.structure_id == structure_id))
        return [_entry(r) for r in res.scalars()]

    async def exists(self, address: str) -> bool:
        """One indexed look-up: what routing asks for every RCPT."""
        res = await self.session.execute(
            select(LocalMailbox.address).where(LocalMailbox.address == normalize_address(address))
        )
        return res.first() is not None

    async def delivery_target(
        self, address: str, *, at: datetime | None = None, certificates: bool = True
    ) -> DeliveryTarget | None:
        """What delivery needs of a mailbox, in one query (what every RCPT asks): its type,
        whether it keeps a Sent copy, and (unless `certificates` is false) the certificates
        a message for it is encrypted to.

        An ORG mailbox is encrypted to the active certificate of every member with the "r"
        right (and to its own,
        if it has one). Certificates outside their validity window are skipped, so that an
        expired key never receives new mail.
        """
        at = at or datetime.now(UTC)
        address = normalize_address(address)
        if not certificates:
            row = (
                await self.session.execute(
                    select(LocalMailbox.type, LocalMailbox.sent_copy).where(LocalMailbox.address == address)
                )
            ).first()
            return None if row is None else DeliveryTarget(address, row.type, bool(row.sent_copy), ())
        res = await (await self.session.connection()).execute(_DELIVERY_TARGET, {"b_address": address})
        rows = res.all()
        if not rows:
            return None
        certs = []
        for row in rows:
            if row.cert_der is None:
                continue
            nb, na = as_utc(row.not_before), as_utc(row.not_after)
            if nb <= at <= na:
                certs.append(x509.load_der_x509_certificate(row.cert_der))
        return DeliveryTarget(address, rows[0].type, bool(rows[0].sent_copy), tuple(certs))

    async def encryption_certificates(self, address: str, *, at: datetime | None = None) -> list[x509.Certificate]:
        """The certificates a message for `address` is encrypted to (see `delivery_target`)."""
        target = await self.delivery_target(address, at=at)
        return list(target.certificates) if target else []

    async def add_mailbox(
        self,
        address: str,
        type: str,
        *,
        idnat: str | None = None,
        structure_id: str | None = None,
        display_name: str = "",
        sent_copy: bool | None = None,
        members: Iterable[str] = (),
    ) -> MailboxEntry:
        if type not in MAILBOX_TYPES:
            raise ValueError(f"unknown mailbox type {type!r}; expected one of {', '.join(MAILBOX_TYPES)}")
        address = normalize_address(address)
        if await self.session.get(LocalMailbox, address) is not None:
            raise ValueError(f"mailbox {address} already exists")
        row = LocalMailbox(
            address=address,
            type=type,
            idnat=idnat,
            structure_id=structure_id,
            display_name=display_name,
            sent_copy=(type == "APP") if sent_copy is None else sent_copy,
            red_list=False,
            created_at=datetime.now(UTC),
        )
        self.session.add(row)
        member_list = [normalize_address(m) for m in members]
        for m in member_list:
            self.session.add(LocalMailboxMember(mailbox=address, member=m))
        await self.session.flush()
        return _entry(row, {m: "lrswikxte" for m in member_list})  # the column default: `write`

    async def add_certificate(self, address: str, cert: x509.Certificate, *, active: bool = True) -> None:
        der = cert.public_bytes(Encoding.DER)
        self.session.add(
            MailboxCertificate(
                address=normalize_address(address),
                cert_der=der,
                sha256=hashlib.sha256(der).hexdigest(),
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                active=active,
                created_at=datetime.now(UTC),
            )
        )
        await self.session.flush()

    async def add_remote_certificate(self, address: str, cert: x509.Certificate) -> bool:
        """Record another operator's mailbox's encryption certificate; False when it is
        known already (the same certificate, by its SHA-256)."""
        der = cert.public_bytes(Encoding.DER)
        digest = hashlib.sha256(der).hexdigest()
        exists = await self.session.execute(select(RemoteCertificate.id).where(RemoteCertificate.sha256 == digest))
        if exists.first() is not None:
            return False
        self.session.add(
            RemoteCertificate(
                address=normalize_address(address),
                cert_der=der,
                sha256=digest,
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                created_at=datetime.now(UTC),
            )
        )
        await self.session.flush()
        return True

    async def remote_certificates(self, address: str, *, at: datetime | None = None) -> list[x509.Certificate]:
        """Another operator's mailbox's certificates valid at `at` (an expired key never
        receives new mail), for sealing mail relayed to it end to end."""
        at = at or datetime.now(UTC)
        rows = await self.session.execute(
            select(RemoteCertificate.cert_der, RemoteCertificate.not_before, RemoteCertificate.not_after)
            .where(RemoteCertificate.address == normalize_address(address))
            .order_by(RemoteCertificate.id)
        )
        return [x509.load_der_x509_certificate(der) for der, nb, na in rows.all() if as_utc(nb) <= at <= as_utc(na)]

    async def all(self) -> list[MailboxEntry]:
        """Every local mailbox with its members, by address."""
        rows = (await self.session.execute(select(LocalMailbox).order_by(LocalMailbox.address))).scalars().all()
        members: dict[str, dict[str, str]] = {}
        for mbox, member, rights in (
            await self.session.execute(
                select(LocalMailboxMember.mailbox, LocalMailboxMember.member, LocalMailboxMember.rights)
            )
        ).all():
            members.setdefault(mbox, {})[member] = rights
        return [_entry(r, members.get(r.address, {})) for r in rows]

    async def certificates(self, address: str) -> list[CertificateEntry]:
        """The mailbox's own encryption certificates, oldest first (active and retired)."""
        res = await self.session.execute(
            select(MailboxCertificate)
            .where(MailboxCertificate.address == normalize_address(address))
            .order_by(MailboxCertificate.id)
        )
        out = []
        for r in res.scalars():
            nb, na = as_utc(r.not_before), as_utc(r.not_after)
            out.append(CertificateEntry(r.id, r.address, r.sha256, nb, na, r.active, r.cert_der))
        return out

    async def retire_certificates(self, address: str) -> int:
        """Key rollover: the mailbox's current certificates stop receiving new mail.

        The rows are kept (inactive): messages already encrypted to them stay readable by the
        owner's older key, and the history shows which key a message needs.
        """
        res = await self.session.execute(
            update(MailboxCertificate)
            .where(MailboxCertificate.address == normalize_address(address), MailboxCertificate.active.is_(True))
            .values(active=False)
        )
        await self.session.flush()
        return res.rowcount or 0
