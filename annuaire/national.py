"""Tables of the national directory extraction and of the trust-space whitelist.

Declared on `annuaire.model.Base` so that they share metadata with the local mailbox tables;
created by migration 0002. Every row carries `row_hash`, the 64-bit digest of the line it was
imported from (of its values for rows merged from duplicate lines): a re-import compares
digests instead of columns, so an unchanged file costs one read of the digests, one digest per
line and no writes (annuaire/importer.py, docs/annuaire.md).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from annuaire.model import Base

# (attribute, header) of the 31 columns of Extraction_Correspondance_MSSante, in file order.
MAILBOX_FIELDS: tuple[tuple[str, str], ...] = (
    ("type", "Type de BAL"),
    ("address", "Adresse BAL"),
    ("pp_type", "Type Identifiant PP"),
    ("pp_id", "Identifiant PP"),
    ("idnat", "Identification nationale PP"),
    ("structure_type", "Type identifiant structure"),
    ("structure_id", "Identification Structure"),
    ("service", "Service de rattachement"),
    ("civility", "Civilité d'exercice"),
    ("last_name", "Nom d'exercice"),
    ("first_name", "Prénom d'exercice"),
    ("category_code", "Catégorie profession"),
    ("category_label", "Libellé de catégorie profession"),
    ("profession_code", "Code Profession"),
    ("profession_label", "Libellé Profession"),
    ("specialty_code", "Code savoir-faire"),
    ("specialty_label", "Libellé savoir-faire"),
    ("dematerialisation", "Dématérialisation"),
    ("org_name", "Raison Sociale structure BAL"),
    ("org_trade_name", "Enseigne commerciale structure BAL"),
    ("addr_l2", "L2COMPLEMENTLOCALISATION structure BAL"),
    ("addr_l3", "L3COMPLEMENTDISTRIBUTION structure BAL"),
    ("addr_l4_number", "L4NUMEROVOIE structure BAL"),
    ("addr_l4_repeat", "L4COMPLEMENTNUMEROVOIE structure BAL"),
    ("addr_l4_street_type", "NL4TYPEVOIE structure BAL"),
    ("addr_l4_street", "L4LIBELLEVOIE structure BAL"),
    ("addr_l5", "L5LIEUDITMENTION structure BAL"),
    ("addr_l6", "L6LIGNEACHEMINEMENT structure BAL"),
    ("postcode", "Code postal structure BAL"),
    ("department", "Département structure BAL"),
    ("country", "Pays structure BAL"),
)

# Columns of PS_LibreAcces_Personne_activite kept as columns; every other non-empty field of a
# row is kept in `extra` (JSON), so nothing the agency publishes is lost when the layout drifts.
ACTIVITY_FIELDS: tuple[tuple[str, str], ...] = (
    ("pp_type", "Type d'identifiant PP"),
    ("pp_id", "Identifiant PP"),
    ("idnat", "Identification nationale PP"),
    ("civility_code", "Code civilité d'exercice"),
    ("civility_label", "Libellé civilité d'exercice"),
    ("last_name", "Nom d'exercice"),
    ("first_name", "Prénom d'exercice"),
    ("profession_code", "Code profession"),
    ("profession_label", "Libellé profession"),
    ("category_code", "Code catégorie professionnelle"),
    ("specialty_code", "Code savoir-faire"),
    ("specialty_label", "Libellé savoir-faire"),
    ("mode_code", "Code mode exercice"),
    ("siret", "Numéro SIRET site"),
    ("finess", "Numéro FINESS site"),
    ("structure_tech_id", "Identifiant technique de la structure"),
    ("org_name", "Raison sociale site"),
    ("postcode", "Code postal (coord. structure)"),
    ("commune_code", "Code commune (coord. structure)"),
    ("commune_label", "Libellé commune (coord. structure)"),
    ("phone", "Téléphone (coord. structure)"),
    ("email", "Adresse e-mail (coord. structure)"),
    ("department", "Code Département (structure)"),
    ("authority", "Autorité d'enregistrement"),
)

_BIG = BigInteger().with_variant(Integer(), "sqlite")
# Byte ordering for the folded name so that a prefix search is a B-tree range scan on
# PostgreSQL whatever the database's locale (SQLite compares bytes already).
NAME_KEY = String(200).with_variant(String(200, collation="C"), "postgresql")
ADDRESS_KEY = String(320).with_variant(String(320, collation="C"), "postgresql")


class NationalMailbox(Base):
    """One row of Extraction_Correspondance_MSSante, keyed by the lower-case address."""

    __tablename__ = "national_mailbox"

    address: Mapped[str] = mapped_column(ADDRESS_KEY, primary_key=True)
    type: Mapped[str] = mapped_column(String(8), default="")
    pp_type: Mapped[str] = mapped_column(String(4), default="")
    pp_id: Mapped[str] = mapped_column(String(32), default="")
    idnat: Mapped[str] = mapped_column(String(32), default="")
    structure_type: Mapped[str] = mapped_column(String(4), default="")
    structure_id: Mapped[str] = mapped_column(String(32), default="")
    service: Mapped[str] = mapped_column(Text, default="")
    civility: Mapped[str] = mapped_column(String(16), default="")
    last_name: Mapped[str] = mapped_column(Text, default="")
    first_name: Mapped[str] = mapped_column(Text, default="")
    category_code: Mapped[str] = mapped_column(String(8), default="")
    category_label: Mapped[str] = mapped_column(Text, default="")
    profession_code: Mapped[str] = mapped_column(String(8), default="")
    profession_label: Mapped[str] = mapped_column(Text, default="")
    specialty_code: Mapped[str] = mapped_column(String(16), default="")
    specialty_label: Mapped[str] = mapped_column(Text, default="")
    dematerialisation: Mapped[bool] = mapped_column(Boolean, default=False)
    org_name: Mapped[str] = mapped_column(Text, default="")
    org_trade_name: Mapped[str] = mapped_column(Text, default="")
    addr_l2: Mapped[str] = mapped_column(Text, default="")
    addr_l3: Mapped[str] = mapped_column(Text, default="")
    addr_l4_number: Mapped[str] = mapped_column(Text, default="")
    addr_l4_repeat: Mapped[str] = mapped_column(Text, default="")
    addr_l4_street_type: Mapped[str] = mapped_column(Text, default="")
    addr_l4_street: Mapped[str] = mapped_column(Text, default="")
    addr_l5: Mapped[str] = mapped_column(Text, default="")
    addr_l6: Mapped[str] = mapped_column(Text, default="")
    postcode: Mapped[str] = mapped_column(String(16), default="")
    department: Mapped[str] = mapped_column(String(8), default="")
    country: Mapped[str] = mapped_column(Text, default="")
    red_list: Mapped[bool] = mapped_column(Boolean, default=False)
    name_key: Mapped[str] = mapped_column(NAME_KEY, default="")
    row_hash: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_national_mailbox_idnat", "idnat"),
        Index("ix_national_mailbox_structure_id", "structure_id"),
        Index("ix_national_mailbox_name_key", "name_key"),
        Index("ix_national_mailbox_profession", "profession_code"),
        Index("ix_national_mailbox_specialty", "specialty_code"),
        Index("ix_national_mailbox_postcode", "postcode"),
        Index("ix_national_mailbox_department", "department"),
        Index("ix_national_mailbox_type", "type"),
    )


class NationalActivity(Base):
    """One activity of a professional (PS_LibreAcces_Personne_activite).

    The file has no key; `key` is built from the fields that name an activity (national id,
    structure and site, profession, savoir-faire, mode of practice), so that a new phone number is a
    change and a new structure is an addition.
    """

    __tablename__ = "national_activity"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    pp_type: Mapped[str] = mapped_column(String(4), default="")
    pp_id: Mapped[str] = mapped_column(String(32), default="")
    idnat: Mapped[str] = mapped_column(String(32), default="")
    civility_code: Mapped[str] = mapped_column(String(16), default="")
    civility_label: Mapped[str] = mapped_column(Text, default="")
    last_name: Mapped[str] = mapped_column(Text, default="")
    first_name: Mapped[str] = mapped_column(Text, default="")
    profession_code: Mapped[str] = mapped_column(String(8), default="")
    profession_label: Mapped[str] = mapped_column(Text, default="")
    category_code: Mapped[str] = mapped_column(String(8), default="")
    specialty_code: Mapped[str] = mapped_column(String(16), default="")
    specialty_label: Mapped[str] = mapped_column(Text, default="")
    mode_code: Mapped[str] = mapped_column(String(8), default="")
    siret: Mapped[str] = mapped_column(String(32), default="")
    finess: Mapped[str] = mapped_column(String(32), default="")
    structure_tech_id: Mapped[str] = mapped_column(String(64), default="")
    org_name: Mapped[str] = mapped_column(Text, default="")
    postcode: Mapped[str] = mapped_column(String(16), default="")
    commune_code: Mapped[str] = mapped_column(String(16), default="")
    commune_label: Mapped[str] = mapped_column(Text, default="")
    phone: Mapped[str] = mapped_column(Text, default="")
    email: Mapped[str] = mapped_column(Text, default="")
    department: Mapped[str] = mapped_column(String(8), default="")
    authority: Mapped[str] = mapped_column(Text, default="")
    extra: Mapped[str] = mapped_column(Text, default="")
    name_key: Mapped[str] = mapped_column(NAME_KEY, default="")
    row_hash: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_national_activity_idnat", "idnat"),
        Index("ix_national_activity_name_key", "name_key"),
        Index("ix_national_activity_structure", "structure_tech_id"),
    )


class TrustDomain(Base):
    """A mail domain of the trust-space whitelist, in ASCII (IDNA) form."""

    __tablename__ = "trust_domain"

    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    label: Mapped[str] = mapped_column(Text, default="")  # as written in the file (Unicode)


class DirectoryImport(Base):
    """One import run: what file, when, and what it changed (for operators and audits)."""

    __tablename__ = "directory_import"

    id: Mapped[int] = mapped_column(_BIG, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # mailbox | activity | whitelist
    source: Mapped[str] = mapped_column(Text)
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rows_read: Mapped[int] = mapped_column(Integer, default=0)
    added: Mapped[int] = mapped_column(Integer, default=0)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    removed: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
