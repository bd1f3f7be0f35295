"""Read-only FHIR R4 face of the directory: Practitioner, PractitionerRole, Organization.

Shapes follow the national directory's FHIR API (Annuaire Santé IG): a mailbox is a
`telecom` with `system=email`, the FR Core e-mail type extension coded `MSSANTE`, and the
mailbox metadata extension carrying the BAL type. Red-listed mailboxes are never published:
they are left out of every telecom list and never match a `mailbox-mss` search.

Resource ids: Practitioner = national id (idNat_PS); Organization = structure national id;
PractitionerRole = `<idnat>-<n>`, the n-th activity of that professional in key order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from annuaire.ids import OID_IDNAT_PS, OID_IDNAT_STRUCT, fold, normalize_address, prefix_upper_bound
from annuaire.model import LocalMailbox
from annuaire.national import NationalActivity, NationalMailbox

EXT_EMAIL_TYPE = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-contact-point-email-type"
SYS_EMAIL_TYPE = "https://mos.esante.gouv.fr/NOS/TRE_R256-TypeMessagerie/FHIR/TRE-R256-TypeMessagerie"
EXT_MAILBOX_META = "https://interop.esante.gouv.fr/ig/fhir/annuaire/StructureDefinition/as-ext-mailbox-mss-metadata"
SYS_BAL_TYPE = "https://mos.esante.gouv.fr/NOS/JDV_J139-TypeBAL-RASS/FHIR/JDV-J139-TypeBAL-RASS"
SYS_PROFESSION = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
SYS_SAVOIR_FAIRE = "https://mos.esante.gouv.fr/NOS/TRE_R38-SpecialiteOrdinale/FHIR/TRE-R38-SpecialiteOrdinale"
SYS_IDNAT_PS = f"urn:oid:{OID_IDNAT_PS}"
SYS_IDNAT_STRUCT = f"urn:oid:{OID_IDNAT_STRUCT}"

DEFAULT_COUNT = 50
MAX_COUNT = 500


class FhirError(ValueError):
    """A search the server refuses (HTTP 400 with an OperationOutcome)."""


# ----------------------------------------------------------------------------- mailboxes


class _Box:
    """A publishable mailbox (national or local) with what telecom needs."""

    __slots__ = ("address", "demat", "idnat", "red", "service", "structure_id", "type")

    def __init__(self, address: str, type: str, idnat: str, structure_id: str, service: str, demat: bool, red: bool):
        self.address, self.type, self.idnat, self.structure_id = address, type, idnat, structure_id
        self.service, self.demat, self.red = service, demat, red


def telecom(box: _Box) -> dict[str, Any]:
    meta: list[dict[str, Any]] = [
        {"url": "type", "valueCodeableConcept": {"coding": [{"system": SYS_BAL_TYPE, "code": box.type}]}},
    ]
    if box.service:
        meta.append({"url": "description", "valueString": box.service})
    meta.append({"url": "digitization", "valueBoolean": bool(box.demat)})
    meta.append({"url": "listeRouge", "valueBoolean": False})  # red-listed ones never get here
    return {
        "system": "email",
        "value": box.address,
        "extension": [
            {"url": EXT_EMAIL_TYPE, "valueCoding": {"system": SYS_EMAIL_TYPE, "code": "MSSANTE"}},
            {"url": EXT_MAILBOX_META, "extension": meta},
        ],
    }


async def _boxes(session: AsyncSession, *conds_national: Any, local_cond: Any = None) -> list[_Box]:
    """Mailboxes matching, local rows overriding national ones, red-listed dropped."""
    n = NationalMailbox
    out: dict[str, _Box] = {}
    if conds_national:
        rows = await session.execute(
            select(n.address, n.type, n.idnat, n.structure_id, n.service, n.dematerialisation, n.red_list)
            .where(*conds_national)
            .order_by(n.address)
            .limit(5000)
        )
        for a, t, i, s, svc, d, r in rows.all():
            out[a] = _Box(a, t, i, s, svc, d, r)
    lm = LocalMailbox
    lrows = (
        await session.execute(
            select(lm.address, lm.type, lm.idnat, lm.structure_id, lm.display_name, lm.red_list).where(
                local_cond if local_cond is not None else lm.address.in_(list(out))
            )
        )
    ).all()
    for a, t, i, s, dn, r in lrows:
        prev = out.get(a)
        out[a] = _Box(
            a,
            t,
            i or (prev.idnat if prev else ""),
            s or (prev.structure_id if prev else ""),
            (dn if t != "PER" else "") or (prev.service if prev else ""),
            prev.demat if prev else True,
            bool(r),
        )
    return [b for b in out.values() if not b.red]


def _mailbox_conditions(value: str, modifier: str) -> tuple[Any, Any]:
    """(national condition, local condition) for `mailbox-mss[:modifier]=value`."""
    v = normalize_address(value)
    if modifier == "exact":
        return NationalMailbox.address == v, LocalMailbox.address == v
    if modifier == "contains":
        pat = "%" + v.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return NationalMailbox.address.like(pat, escape="\\"), LocalMailbox.address.like(pat, escape="\\")
    if modifier == "":  # FHIR string search default: starts with
        hi = prefix_upper_bound(v) if v.isascii() else v + "\uffff"
        return (
            and_(NationalMailbox.address >= v, NationalMailbox.address < hi),
            and_(LocalMailbox.address >= v, LocalMailbox.address < hi),
        )
    raise FhirError(f"unsupported modifier :{modifier} for mailbox-mss (use :exact or :contains)")


# ----------------------------------------------------------------------------- helpers


def _token(value: str) -> str:
    """`system|value` or `value` -> value."""
    return value.rpartition("|")[2].strip()


def _bundle(resources: list[dict], base: str, self_url: str) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "link": [{"relation": "self", "url": self_url}],
        "entry": [
            {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in resources
        ],
    }


def outcome(severity: str, code: str, text: str) -> dict:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": severity, "code": code, "diagnostics": text}]}


def _param(params: dict[str, list[str]], name: str) -> list[tuple[str, str]]:
    """[(modifier, value)] for `name` and `name:modifier` parameters."""
    out = []
    for k, vs in params.items():
        base, _, mod = k.partition(":")
        if base == name:
            out.extend((mod, v) for v in vs if v != "")
    return out


def _count(params: dict[str, list[str]]) -> int:
    try:
        c = int((params.get("_count") or [str(DEFAULT_COUNT)])[0])
    except ValueError:
        raise FhirError("_count must be an integer") from None
    return max(1, min(c, MAX_COUNT))


def _intersect(current: set[str] | None, new: Iterable[str]) -> set[str]:
    s = set(new)
    return s if current is None else current & s


# ----------------------------------------------------------------------------- Practitioner


async def _practitioner_ids(session: AsyncSession, params: dict[str, list[str]], limit: int) -> list[str]:
    ids: set[str] | None = None
    for _, v in _param(params, "identifier"):
        ids = _intersect(ids, [_token(v)])
    for _, v in _param(params, "name") + _param(params, "family"):
        key = fold(v)
        if not key:
            continue
        hi = prefix_upper_bound(key)
        a = NationalActivity
        found = set(
            (
                await session.execute(
                    select(a.idnat).where(a.name_key >= key, a.name_key < hi).order_by(a.name_key).limit(limit * 4)
                )
            ).scalars()
        )
        m = NationalMailbox
        found |= set(
            (
                await session.execute(
                    select(m.idnat)
                    .where(m.name_key >= key, m.name_key < hi, m.idnat != "", m.red_list.is_(False))
                    .order_by(m.name_key)
                    .limit(limit * 4)
                )
            ).scalars()
        )
        ids = _intersect(ids, found)
    for mod, v in _param(params, "mailbox-mss"):
        nc, lc = _mailbox_conditions(v, mod)
        boxes = await _boxes(session, nc, local_cond=lc)
        ids = _intersect(ids, (b.idnat for b in boxes if b.type == "PER" and b.idnat))
    if ids is None:
        raise FhirError("give identifier, name or mailbox-mss")
    return sorted(ids)[:limit]


async def practitioner(session: AsyncSession, idnat: str) -> dict | None:
    acts = list(
        (
            await session.execute(
                select(NationalActivity).where(NationalActivity.idnat == idnat).order_by(NationalActivity.key)
            )
        ).scalars()
    )
    boxes = await _boxes(
        session,
        NationalMailbox.idnat == idnat,
        NationalMailbox.type == "PER",
        local_cond=and_(LocalMailbox.idnat == idnat, LocalMailbox.type == "PER"),
    )
    nat = (
        (
            await session.execute(
                select(NationalMailbox)
                .where(NationalMailbox.idnat == idnat, NationalMailbox.red_list.is_(False))
                .limit(1)
            )
        )
        .scalars()
        .first()
    )
    if not acts and not boxes and nat is None:
        return None
    src = acts[0] if acts else nat
    name: dict[str, Any] = {"use": "official"}
    if src is not None:
        if src.last_name:
            name["family"] = src.last_name
        if src.first_name:
            name["given"] = [src.first_name]
        civ = getattr(src, "civility_code", "") or getattr(src, "civility", "")
        if civ:
            name["prefix"] = [civ]
    quals, seen = [], set()
    for a in acts or ([nat] if nat is not None else []):
        if a.profession_code and a.profession_code not in seen:
            seen.add(a.profession_code)
            quals.append(
                {
                    "code": {
                        "coding": [{"system": SYS_PROFESSION, "code": a.profession_code, "display": a.profession_label}]
                    }
                }
            )
    res: dict[str, Any] = {
        "resourceType": "Practitioner",
        "id": idnat,
        "identifier": [{"system": SYS_IDNAT_PS, "value": idnat}],
        "active": True,
        "name": [name],
    }
    if boxes:
        res["telecom"] = [telecom(b) for b in boxes]
    if quals:
        res["qualification"] = quals
    return res


# ----------------------------------------------------------------------------- PractitionerRole


def _role(idnat: str, n: int, a: NationalActivity, boxes: list[_Box]) -> dict:
    res: dict[str, Any] = {
        "resourceType": "PractitionerRole",
        "id": f"{idnat}-{n}",
        "active": True,
        "practitioner": {"reference": f"Practitioner/{idnat}"},
        "code": [{"coding": [{"system": SYS_PROFESSION, "code": a.profession_code, "display": a.profession_label}]}],
    }
    if a.specialty_code:
        res["specialty"] = [
            {"coding": [{"system": SYS_SAVOIR_FAIRE, "code": a.specialty_code, "display": a.specialty_label}]}
        ]
    org_id = ("3" + a.siret) if a.siret else (("1" + a.finess) if a.finess else "")
    if org_id or a.org_name:
        res["organization"] = {"display": a.org_name} | ({"reference": f"Organization/{org_id}"} if org_id else {})
    if boxes:
        res["telecom"] = [telecom(b) for b in boxes]
    return res


async def roles_of(session: AsyncSession, idnat: str) -> list[dict]:
    acts = list(
        (
            await session.execute(
                select(NationalActivity).where(NationalActivity.idnat == idnat).order_by(NationalActivity.key)
            )
        ).scalars()
    )
    if not acts:
        return []
    boxes = await _boxes(
        session,
        NationalMailbox.idnat == idnat,
        NationalMailbox.type == "PER",
        local_cond=and_(LocalMailbox.idnat == idnat, LocalMailbox.type == "PER"),
    )
    return [_role(idnat, i, a, boxes) for i, a in enumerate(acts)]


# ----------------------------------------------------------------------------- Organization


async def _organization_ids(session: AsyncSession, params: dict[str, list[str]], limit: int) -> list[str]:
    ids: set[str] | None = None
    not_per = NationalMailbox.type != "PER"
    for _, v in _param(params, "identifier"):
        ids = _intersect(ids, [_token(v)])
    for _, v in _param(params, "name"):
        key = fold(v)
        if not key:
            continue
        m = NationalMailbox
        found = (
            await session.execute(
                select(m.structure_id)
                .where(
                    or_(and_(m.name_key >= key, m.name_key < prefix_upper_bound(key))),
                    not_per,
                    m.structure_id != "",
                    m.red_list.is_(False),
                )
                .order_by(m.name_key)
                .limit(limit * 4)
            )
        ).scalars()
        ids = _intersect(ids, found)
    for mod, v in _param(params, "mailbox-mss"):
        nc, lc = _mailbox_conditions(v, mod)
        boxes = await _boxes(session, nc, local_cond=lc)
        ids = _intersect(ids, (b.structure_id for b in boxes if b.type != "PER" and b.structure_id))
    if ids is None:
        raise FhirError("give identifier, name or mailbox-mss")
    return sorted(ids)[:limit]


async def organization(session: AsyncSession, structure_id: str) -> dict | None:
    m = NationalMailbox
    rows = list(
        (
            await session.execute(
                select(m).where(m.structure_id == structure_id, m.red_list.is_(False)).order_by(m.address)
            )
        ).scalars()
    )
    boxes = await _boxes(
        session,
        m.structure_id == structure_id,
        m.type != "PER",
        local_cond=and_(LocalMailbox.structure_id == structure_id, LocalMailbox.type != "PER"),
    )
    if not rows and not boxes:
        return None
    ref = next((r for r in rows if r.type != "PER"), rows[0] if rows else None)
    res: dict[str, Any] = {
        "resourceType": "Organization",
        "id": structure_id,
        "identifier": [{"system": SYS_IDNAT_STRUCT, "value": structure_id}],
        "active": True,
    }
    if ref is not None:
        name = ref.org_name or ref.org_trade_name or ref.service
        if name:
            res["name"] = name
        line = " ".join(
            p for p in (ref.addr_l4_number, ref.addr_l4_repeat, ref.addr_l4_street_type, ref.addr_l4_street) if p
        )
        addr = {
            k: v
            for k, v in (
                ("line", [x for x in (ref.addr_l2, ref.addr_l3, line, ref.addr_l5) if x]),
                ("postalCode", ref.postcode),
                ("district", ref.department),
                ("country", ref.country),
            )
            if v
        }
        if ref.addr_l6:
            addr["city"] = ref.addr_l6.partition(" ")[2] if ref.addr_l6[:5].isdigit() else ref.addr_l6
        if addr:
            res["address"] = [addr]
    if boxes:
        res["telecom"] = [telecom(b) for b in boxes]
    return res


# ----------------------------------------------------------------------------- entry points


async def search(session: AsyncSession, resource: str, params: dict[str, list[str]], base: str, self_url: str) -> dict:
    limit = _count(params)
    out: list[dict] = []
    if resource == "Practitioner":
        for i in await _practitioner_ids(session, params, limit):
            r = await practitioner(session, i)
            if r is not None:
                out.append(r)
    elif resource == "PractitionerRole":
        p = dict(params)
        for _modifier, v in _param(params, "practitioner"):
            p.setdefault("identifier", []).append(v.rpartition("/")[2])
        p.pop("practitioner", None)
        for i in await _practitioner_ids(session, p, limit):
            out.extend(await roles_of(session, i))
        out = out[:limit]
    elif resource == "Organization":
        for i in await _organization_ids(session, params, limit):
            r = await organization(session, i)
            if r is not None:
                out.append(r)
    else:
        raise FhirError(f"unknown resource type {resource}")
    return _bundle(out, base, self_url)


async def read(session: AsyncSession, resource: str, rid: str) -> dict | None:
    if resource == "Practitioner":
        return await practitioner(session, rid)
    if resource == "Organization":
        return await organization(session, rid)
    if resource == "PractitionerRole":
        idnat, _, n = rid.rpartition("-")
        if not idnat or not n.isdigit():
            return None
        roles = await roles_of(session, idnat)
        return roles[int(n)] if int(n) < len(roles) else None
    return None


def capability_statement(base: str) -> dict:
    def res(t: str, params: list[tuple[str, str]]) -> dict:
        return {
            "type": t,
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "searchParam": [{"name": n, "type": ty} for n, ty in params],
        }

    common = [("identifier", "token"), ("mailbox-mss", "string")]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-24",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "implementation": {"description": "MSS directory (read-only)", "url": base},
        "rest": [
            {
                "mode": "server",
                "resource": [
                    res("Practitioner", common + [("name", "string"), ("family", "string")]),
                    res("PractitionerRole", common + [("practitioner", "reference")]),
                    res("Organization", common + [("name", "string")]),
                ],
            }
        ],
    }
