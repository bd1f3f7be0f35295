"""The trust-space whitelist: which mail domains belong to the MSSanté space.

The national file is XML (namespace https://listeblanche.mssante.fr/schema), one domain at
each `//Domaine/Nom`; names may be Unicode and are stored in their IDNA (A-label) form, the
form DNS and SMTP use, so a look-up by either spelling matches.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import defusedxml.ElementTree as DefusedET
from defusedxml import DefusedXmlException
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from annuaire.ids import idna_domain
from annuaire.national import DirectoryImport, TrustDomain

NAMESPACE = "https://listeblanche.mssante.fr/schema"
MAX_FILE_BYTES = 50 * 1024 * 1024


class WhitelistError(ValueError):
    """The file is not a whitelist (not XML, or no domain at all)."""


@dataclass
class WhitelistReport:
    source: str
    domains: int = 0
    added: int = 0
    removed: int = 0
    rejected: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "kind": "whitelist",
            "domains": self.domains,
            "added": self.added,
            "removed": self.removed,
            "rejected": self.rejected,
        }


def parse_whitelist(data: bytes) -> tuple[dict[str, str], list[str]]:
    """({ascii domain: name as written}, [names that are not domains]) from the XML bytes.

    Accepts the namespaced form and, for robustness, the same elements without namespace.
    DTDs and entities are refused (no billion laughs from a downloaded file).
    """
    if len(data) > MAX_FILE_BYTES:
        raise WhitelistError("whitelist file too large")
    try:
        # defusedxml refuses DTDs, entities and external references whatever the encoding
        # (a byte search for "<!DOCTYPE" misses UTF-16 documents).
        root = DefusedET.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise WhitelistError("whitelist with a DTD or entities refused") from exc
    except ET.ParseError as exc:
        raise WhitelistError(f"not XML: {exc}") from exc
    names = [e.text or "" for e in root.iterfind(f".//{{{NAMESPACE}}}Domaine/{{{NAMESPACE}}}Nom")]
    names += [e.text or "" for e in root.iterfind(".//Domaine/Nom")]
    out: dict[str, str] = {}
    bad: list[str] = []
    for raw in names:
        label = raw.strip()
        try:
            d = idna_domain(label)
        except Exception:  # noqa: BLE001 - idna.IDNAError, UnicodeError: a name that is not a valid domain
            bad.append(label)
            continue
        if not d or "." not in d:
            bad.append(label)
            continue
        out.setdefault(d, label)
    if not out:
        raise WhitelistError("no //Domaine/Nom in the file")
    return out, bad


async def import_whitelist(engine: AsyncEngine, path: Path | str) -> WhitelistReport:
    """Replace the stored whitelist by the file's, as a diff in one transaction."""
    path = Path(path)
    domains, bad = parse_whitelist(path.read_bytes())
    report = WhitelistReport(source=path.name, domains=len(domains), rejected=bad)
    async with engine.begin() as conn:
        stored = dict((await conn.execute(select(TrustDomain.domain, TrustDomain.label))).all())
        gone = [d for d in stored if d not in domains]
        new = [{"domain": d, "label": label} for d, label in domains.items() if d not in stored]
        if gone:
            await conn.execute(delete(TrustDomain).where(TrustDomain.domain.in_(gone)))
        if new:
            await conn.execute(insert(TrustDomain), new)
        report.added, report.removed = len(new), len(gone)
        await conn.execute(
            insert(DirectoryImport),
            [
                {
                    "kind": "whitelist",
                    "source": report.source,
                    "finished_at": datetime.now(UTC),
                    "rows_read": len(domains) + len(bad),
                    "added": report.added,
                    "changed": 0,
                    "removed": report.removed,
                    "rejected": len(bad),
                }
            ],
        )
    return report


def _domain_of(domain_or_address: str) -> str:
    d = domain_or_address.rpartition("@")[2]
    try:
        return idna_domain(d)
    except Exception:  # noqa: BLE001 - any name idna refuses is no domain of the trust space
        return ""


async def in_trust_space(session: AsyncSession, domain: str) -> bool:
    """Is `domain` (or the domain of an address) on the whitelist? Exact match, no subdomains."""
    d = _domain_of(domain)
    if not d:
        return False
    return (await session.get(TrustDomain, d)) is not None


def is_local(domain: str, local_domains: Iterable[str]) -> bool:
    """Is `domain` (or the domain of an address) one this operator hosts?"""
    d = _domain_of(domain)
    if not d:
        return False
    return any(d == _domain_of(x) for x in local_domains)


async def trust_domains(session: AsyncSession) -> list[str]:
    return list((await session.execute(select(TrustDomain.domain).order_by(TrustDomain.domain))).scalars())
