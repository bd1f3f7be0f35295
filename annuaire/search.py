"""`Directory`: every look-up the rest of MSS and people need, national and local together.

This operator's own mailboxes (`annuaire.local`) take precedence over the national row of the
same address: they are the ones this server delivers to, and they are fresher than the
daily extraction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import bindparam, exists, literal_column, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from annuaire.ids import fold, normalize_address, prefix_upper_bound
from annuaire.local import LocalDirectory, MailboxEntry
from annuaire.model import LocalMailbox, MailboxCertificate
from annuaire.national import NationalActivity, NationalMailbox

_RESOLVE = select(
    *NationalMailbox.__table__.columns,
    exists().where(LocalMailbox.address == bindparam("a")).label("is_local"),
).where(NationalMailbox.address == bindparam("a"))

LOCAL = "local"
NATIONAL = "national"
MAX_LIMIT = 1000


@dataclass(frozen=True)
class DirectoryEntry:
    """A mailbox as the directory answers it (national or local), no ORM object."""

    address: str
    type: str
    source: str
    idnat: str = ""
    structure_id: str = ""
    display_name: str = ""
    civility: str = ""
    last_name: str = ""
    first_name: str = ""
    profession_code: str = ""
    profession_label: str = ""
    specialty_code: str = ""
    specialty_label: str = ""
    service: str = ""
    organisation: str = ""
    postcode: str = ""
    city: str = ""
    department: str = ""
    dematerialisation: bool = False
    red_list: bool = False
    members: tuple[str, ...] = ()

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["members"] = list(self.members)
        return d


def _display(m: NationalMailbox) -> str:
    if m.last_name or m.first_name:
        return " ".join(p for p in (m.first_name, m.last_name) if p)
    parts = [p for p in (m.service, m.org_name or m.org_trade_name) if p]
    return " - ".join(parts)


def from_national(m: NationalMailbox) -> DirectoryEntry:
    return DirectoryEntry(
        address=m.address,
        type=m.type,
        source=NATIONAL,
        idnat=m.idnat,
        structure_id=m.structure_id,
        display_name=_display(m),
        civility=m.civility,
        last_name=m.last_name,
        first_name=m.first_name,
        profession_code=m.profession_code,
        profession_label=m.profession_label,
        specialty_code=m.specialty_code,
        specialty_label=m.specialty_label,
        service=m.service,
        organisation=m.org_name or m.org_trade_name,
        postcode=m.postcode,
        city=m.addr_l6,
        department=m.department,
        dematerialisation=bool(m.dematerialisation),
        red_list=bool(m.red_list),
    )


def from_local(
    e: MailboxEntry,
    red_list: bool = False,
    national: DirectoryEntry | None = None,
    names: tuple[str, str] | None = None,
) -> DirectoryEntry:
    """A local mailbox; descriptive fields the local table lacks come from the national row,
    the surname and given name from `names` (`_person_names`) when that row has none."""
    base = national.to_dict() if national else {}
    if names and not base.get("last_name"):
        base["last_name"], base["first_name"] = names
    base.update(
        address=e.address,
        type=e.type,
        source=LOCAL,
        idnat=e.idnat or base.get("idnat", ""),
        structure_id=e.structure_id or base.get("structure_id", ""),
        display_name=e.display_name or base.get("display_name", ""),
        red_list=red_list,
        members=tuple(e.members),
    )
    return DirectoryEntry(**base)


class Directory:
    """Look-ups bound to one session. All methods are read-only."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.local = LocalDirectory(session)

    async def _national(self, address: str) -> DirectoryEntry | None:
        m = await self.session.get(NationalMailbox, address)
        return from_national(m) if m is not None else None

    async def _local_red(self, address: str) -> bool:
        res = await self.session.execute(select(LocalMailbox.red_list).where(LocalMailbox.address == address))
        return bool(res.scalar())

    async def _enrich(self, entries: list[MailboxEntry]) -> list[DirectoryEntry]:
        """Local entries with their red-list flag and the national row's descriptive fields."""
        if not entries:
            return []
        addrs = [e.address for e in entries]
        red = dict(
            (
                await self.session.execute(
                    select(LocalMailbox.address, LocalMailbox.red_list).where(LocalMailbox.address.in_(addrs))
                )
            ).all()
        )
        nat = {
            m.address: from_national(m)
            for m in (
                await self.session.execute(select(NationalMailbox).where(NationalMailbox.address.in_(addrs)))
            ).scalars()
        }
        names = await self._person_names([e for e in entries if e.type == "PER" and e.address not in nat])
        return [from_local(e, bool(red.get(e.address)), nat.get(e.address), names.get(e.address)) for e in entries]

    async def _person_names(self, entries: list[MailboxEntry]) -> dict[str, tuple[str, str]]:
        """(surname, given name) of local PER mailboxes without a national row: the national row
        of the same professional (idNat_PS) under another address, else the subject of the
        mailbox's newest active encryption certificate when it was issued with real names
        (crypto.pki puts "-" as the given name when none was given)."""
        if not entries:
            return {}
        out: dict[str, tuple[str, str]] = {}
        idnats = {e.idnat for e in entries if e.idnat}
        by_idnat: dict[str, tuple[str, str]] = {}
        if idnats:
            res = await self.session.execute(
                select(NationalMailbox.idnat, NationalMailbox.last_name, NationalMailbox.first_name).where(
                    NationalMailbox.idnat.in_(idnats), NationalMailbox.last_name != ""
                )
            )
            for idnat, last, first in res.all():
                by_idnat.setdefault(idnat, (last, first))
        rest = []
        for e in entries:
            if e.idnat in by_idnat:
                out[e.address] = by_idnat[e.idnat]
            else:
                rest.append(e.address)
        if rest:
            res = await self.session.execute(
                select(MailboxCertificate.address, MailboxCertificate.cert_der)
                .where(MailboxCertificate.address.in_(rest), MailboxCertificate.active.is_(True))
                .order_by(MailboxCertificate.id.desc())
            )
            for address, der in res.all():
                if address in out:
                    continue
                subject = x509.load_der_x509_certificate(der).subject
                sn = subject.get_attributes_for_oid(NameOID.SURNAME)
                gn = subject.get_attributes_for_oid(NameOID.GIVEN_NAME)
                if sn and gn and gn[0].value != "-":
                    out[address] = (str(sn[0].value), str(gn[0].value))
        return out

    async def resolve(self, address: str) -> DirectoryEntry | None:
        """The mailbox at `address` (case-insensitive), local first, or None.

        The hot path of routing: one indexed query for a national address (it also says
        whether a local mailbox overrides it), no ORM objects.
        """
        address = normalize_address(address)
        if "@" not in address:
            return None
        row = (await self.session.execute(_RESOLVE, {"a": address})).first()
        if row is not None and not row.is_local:
            return from_national(row)  # type: ignore[arg-type]
        local = await self.local.get(address)
        if local is None:
            return None
        return from_local(local, await self._local_red(address), from_national(row) if row is not None else None)  # type: ignore[arg-type]

    async def by_idnat(self, idnat: str) -> list[DirectoryEntry]:
        """Every mailbox of a professional: local ones (with their ORG memberships) first."""
        idnat = idnat.strip()
        local = await self._enrich(await self.local.for_idnat(idnat))
        res = await self.session.execute(
            select(NationalMailbox).where(NationalMailbox.idnat == idnat).order_by(NationalMailbox.address)
        )
        return _merge_local(local, [from_national(m) for m in res.scalars()])

    async def by_structure(self, structure_id: str) -> list[DirectoryEntry]:
        structure_id = structure_id.strip()
        local = await self._enrich(await self.local.for_structure(structure_id))
        res = await self.session.execute(
            select(NationalMailbox)
            .where(NationalMailbox.structure_id == structure_id)
            .order_by(NationalMailbox.address)
        )
        return _merge_local(local, [from_national(m) for m in res.scalars()])

    async def activities(self, idnat: str) -> list[NationalActivity]:
        res = await self.session.execute(
            select(NationalActivity).where(NationalActivity.idnat == idnat.strip()).order_by(NationalActivity.key)
        )
        return list(res.scalars())

    async def search(
        self,
        *,
        name: str | None = None,
        profession: str | None = None,
        specialty: str | None = None,
        postcode: str | None = None,
        department: str | None = None,
        type: str | None = None,
        limit: int = 50,
        include_red_list: bool = False,
    ) -> list[DirectoryEntry]:
        """Mailboxes matching every given criterion, ordered by name.

        `name`: accent- and case-insensitive prefix of "last first" (PER) or of the service
        (ORG...) in the national rows; for this operator's own mailboxes, the start of any
        word of the display name or of the address (`martin` finds "Claire MARTIN"). `profession` and `specialty`: a code (`10`, `SM54`) or an exact label.
        `postcode`: a prefix (`75` finds Paris). Red-listed mailboxes are left out unless
        `include_red_list` (they are never published).
        """
        limit = max(1, min(int(limit), MAX_LIMIT))
        t = NationalMailbox
        q = select(t)
        key = fold(name) if name else ""
        # With a name prefix, the name index is the way in (a range, already in result order).
        # SQLite's planner otherwise picks the profession or department index and sorts tens
        # of thousands of rows: SQLite's unary `+` keeps it off the other indexes.
        plain = key and self.session.get_bind().dialect.name == "sqlite"

        def c(col: Any) -> Any:
            return literal_column(f"+{t.__tablename__}.{col.key}", col.type) if plain else col

        if key:
            q = q.where(t.name_key >= key, t.name_key < prefix_upper_bound(key))
        if profession:
            p = profession.strip()
            q = (
                q.where(c(t.profession_code) == p)
                if p.isdigit()
                else q.where(or_(c(t.profession_code) == p, t.profession_label == p))
            )
        if specialty:
            s = specialty.strip()
            q = q.where(or_(c(t.specialty_code) == s.upper(), t.specialty_label == s))
        if postcode:
            pc = postcode.strip()
            q = (
                q.where(c(t.postcode) == pc)
                if len(pc) >= 5
                else q.where(c(t.postcode) >= pc, c(t.postcode) < pc + "\x7f")
            )
        if department:
            q = q.where(c(t.department) == department.strip().upper())
        if type:
            q = q.where(c(t.type) == type.strip().upper())
        if not include_red_list:
            q = q.where(t.red_list.is_(False))
        if not any((key, profession, specialty, postcode, department, type)):
            return []  # no criterion: refuse to dump the directory
        q = q.order_by(t.name_key, t.address).limit(limit)
        res = await self.session.execute(q)
        national = [from_national(m) for m in res.scalars()]

        # Local mailboxes: only criteria the local table can answer (name, type).
        local_hits: list[MailboxEntry] = []
        if not any((profession, specialty, postcode, department)):
            lq = select(LocalMailbox)
            if type:
                lq = lq.where(LocalMailbox.type == type.strip().upper())
            if not include_red_list:
                lq = lq.where(LocalMailbox.red_list.is_(False))
            for lm in (await self.session.execute(lq.limit(10_000))).scalars():
                if key and not (_has_word_prefix(fold(lm.display_name), key) or _has_word_prefix(_name_of(lm), key)):
                    continue
                local_hits.append(await self.local.get(lm.address))  # type: ignore[arg-type]
        local = await self._enrich(local_hits)
        # A local mailbox overrides the national row of the same address, red list included.
        overridden = {e.address for e in national}
        if overridden:
            rows = await self.session.execute(
                select(LocalMailbox.address, LocalMailbox.red_list).where(LocalMailbox.address.in_(overridden))
            )
            hidden = {a for a, red in rows.all() if red and not include_red_list}
            national = [e for e in national if e.address not in hidden]
        return _merge_local(local, national)[:limit]


def _has_word_prefix(folded: str, key: str) -> bool:
    """Whether some word of `folded` (and the words after it) start with `key`: "claire
    martin" matches "martin", "mar" and "claire m", not "artin"."""
    return (" " + folded).find(" " + key) != -1


def _name_of(lm: LocalMailbox) -> str:
    return fold(lm.address.partition("@")[0].replace(".", " "))


def _merge_local(local: list[DirectoryEntry], national: list[DirectoryEntry]) -> list[DirectoryEntry]:
    by_addr = {e.address: e for e in local}
    out = list(local)
    for e in national:
        if e.address in by_addr:
            continue
        out.append(e)
    return out
