"""`mss demo DIR`: a complete deployment for trying MSS with a real mail client.

It makes a test health PKI, a server certificate, two professionals with PER mailboxes,
an ORG mailbox they share, and an APP mailbox for practice software; then writes
`mss.toml` and `demo.json` (the stable contract that scripts and docs rely on). Private
keys go to the users' folders only: the server never reads them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from annuaire.local import LocalDirectory
from crypto.identity import luhn_check_digit
from crypto.ins import ins_key
from crypto.keys import new_password, write_pkcs12
from crypto.patient_client import PatientClient
from crypto.pki import Issued, TestPKI
from crypto.tokens import TokenIssuer
from mss.config import resolve_database_url
from mss.db.engine import create_engine, sessionmaker, upgrade
from mss.store import Store

DEFAULT_DOMAIN = "hopital-demo.mssante.test"
DEFAULT_BASE_PORT = 2587
PORT_ORDER = ("submission", "submissions", "mta", "imap", "imaps", "http")


class DemoExists(Exception):
    pass


@dataclass(frozen=True)
class Professional:
    local: str
    surname: str
    given_name: str
    profession: str
    rpps_payload: str  # 10 digits; the 11th is the Luhn check digit

    @property
    def idnat(self) -> str:
        return "8" + self.rpps_payload + luhn_check_digit(self.rpps_payload)


PROFESSIONALS = (
    Professional("claire.martin", "MARTIN", "CLAIRE", "Médecin", "1000123456"),
    Professional("paul.durand", "DURAND", "PAUL", "Infirmier", "1000765432"),
)
ORG_MAILBOX = "secretariat.cardiologie"
APP_MAILBOX = "lps.cabinet"
FINESS_PAYLOAD = "75000123"  # 8 digits + Luhn = a 9-digit FINESS
STRUCTURE_NAME = "HOPITAL DEMO"
# Demo CRLs outlive a forgotten demo; `mss pki crl` writes fresh ones (7 days by default).
DEMO_CRL_LIFETIME = timedelta(days=90)
CRL_FILES = ("pki/ca/crl/root.crl", "pki/ca/crl/personnes.crl", "pki/ca/crl/organisations.crl")
TOKEN_KEY = "pki/tokens/issuer.key"  # noqa: S105 - a path, not a secret
TOKEN_JWKS = "pki/tokens/jwks.json"  # noqa: S105 - a path, not a secret
TOKEN_ACR = "eidas1"  # noqa: S105 - an assurance level name


@dataclass(frozen=True)
class DemoPatient:
    ins_body: str  # 13 characters; the 2-digit key is computed (MSSANTE.md "Identifiers")
    name: str
    email: str
    activated: bool

    @property
    def ins(self) -> str:
        return self.ins_body + ins_key(self.ins_body)


PATIENTS = (
    DemoPatient("2690575123456", "Marie DUPONT", "marie.dupont@example.org", activated=True),
    DemoPatient("1850869123789", "Jean LEROY", "jean.leroy@example.org", activated=False),
)
NOTIFICATIONS = "notifications"


def token_issuer_name(domain: str) -> str:
    return f"https://{domain}/demo-token-issuer"


def structure_id() -> str:
    return "1" + FINESS_PAYLOAD + luhn_check_digit(FINESS_PAYLOAD)


_PATH_KEYS = ("tls_cert", "tls_key", "smime_cert", "smime_key", "p12", "tls_p12")


def _write_pair(folder: Path, prefix: str, issued: Issued) -> tuple[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{prefix}.crt", folder / f"{prefix}.key"
    issued.write_pem(cert, key, with_chain=True)
    return str(cert), str(key)


def _user_files(folder: Path, address: str, auth: Issued, enc: Issued) -> dict:
    """What the owner of a mailbox is handed: the authentication certificate (PEM and
    PKCS#12, for TLS client authentication) and the decryption key (PEM and PKCS#12)."""
    tls_cert, tls_key = _write_pair(folder, "auth", auth)
    smime_cert, smime_key = _write_pair(folder, "smime", enc)
    p12_password, tls_p12_password = new_password(), new_password()
    write_pkcs12(folder / "smime.p12", enc.key, enc.cert, enc.chain, p12_password, friendly_name=address)
    write_pkcs12(
        folder / "auth.p12", auth.key, auth.cert, auth.chain, tls_p12_password, friendly_name=f"{address} (auth)"
    )
    return {
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "smime_cert": smime_cert,
        "smime_key": smime_key,
        "p12": str(folder / "smime.p12"),
        "p12_password": p12_password,
        "tls_p12": str(folder / "auth.p12"),
        "tls_p12_password": tls_p12_password,
    }


def _config_text(domain: str, ports: dict[str, int], database_url: str, notify_url: str) -> str:
    lines = [
        "# MSS demo deployment (made by `mss demo`). Paths are relative to this file.",
        f'domain = "{domain}"',
        f'database_url = "{database_url}"',
        'log_file = "mss.log"',
        "",
        "[listen]",
        'host = "127.0.0.1"',
        *(f"{name} = {port}" for name, port in ports.items()),
        "# Plain HTTP on the http listener: only on a loopback host (true: HTTPS, [tls] cert).",
        "http_tls = false",
        "",
        "[tls]",
        'cert = "pki/server.crt"',
        'key = "pki/server.key"',
        'trust_anchors = "pki/trust-anchors.pem"',
        "# Re-read every crl_refresh_s: `mss pki revoke CERT` + `mss pki crl` reach a running node.",
        "crl_files = [" + ", ".join(f'"{p}"' for p in CRL_FILES) + "]",
        "crl_refresh_s = 60",
        "crl_fail_closed = true",
        "",
        "[pki]",
        "# The test PKI with its CA keys (`mss pki ...`): demo only, never on a production node.",
        'directory = "pki/ca"',
        "",
        "[tokens]",
        "# e-CPS tokens (OAUTHBEARER/XOAUTH2), here from the demo issuer (`mss token issue`).",
        f'jwks = "{TOKEN_JWKS}"',
        f'issuer = "{token_issuer_name(domain)}"',
        'audience = "mss"',
        f'acr_values = ["{TOKEN_ACR}"]',
        "skew_s = 30",
        f'signing_key = "{TOKEN_KEY}"',
        "serve_jwks = true",
        "",
        "[limits]",
        "max_message_size = 26214400",
        "",
        "[delivery]",
        'placeholder_subject = "[...]"',
        "# Mail to postmaster (RFC 5321 4.5.1) lands here, encrypted to every member's key.",
        f'postmaster = "{ORG_MAILBOX}@{domain}"',
        "",
        "[patients]",
        f'domain = "patient.{domain}"',
        "# Arrival notifications (content-free): one .eml per notification in this folder.",
        f'notify_url = "{notify_url}"',
        "notify_window_s = 60",
        f'portal_url = "http://127.0.0.1:{ports["http"]}/portal/"' if ports["http"] else 'portal_url = ""',
        "",
    ]
    return "\n".join(lines)


def create_demo(
    directory: Path,
    *,
    domain: str = DEFAULT_DOMAIN,
    base_port: int = DEFAULT_BASE_PORT,
    force: bool = False,
    database_url: str = "sqlite+aiosqlite:///mss.db",
    notify_url: str = f"file:{NOTIFICATIONS}",
    patients: bool = True,
) -> dict:
    """Create the deployment and return the `demo.json` document."""
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        if not force:
            raise DemoExists(f"{directory} already exists and is not empty; use --force to replace it")
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    domain = domain.lower()
    # Port 0 everywhere asks the OS for ephemeral ports (tests); otherwise consecutive.
    ports = {name: (base_port + i if base_port else 0) for i, name in enumerate(PORT_ORDER)}

    pki_dir = directory / "pki"
    pki = TestPKI.create(pki_dir / "ca")
    pki.write_trust_anchors(pki_dir / "trust-anchors.pem")
    server = pki.issue_serv(["localhost", domain], structure_id(), STRUCTURE_NAME, ip_addresses=["127.0.0.1"])
    server.write_pem(pki_dir / "server.crt", pki_dir / "server.key", with_chain=True)
    pki.write_crls(next_update=DEMO_CRL_LIFETIME)
    issuer = TokenIssuer.generate(token_issuer_name(domain))
    issuer.save_key(directory / TOKEN_KEY)
    issuer.write_jwks(directory / TOKEN_JWKS)

    users = directory / "users"
    entries: list[dict] = []
    certs: dict[str, object] = {}
    for pro in PROFESSIONALS:
        address = f"{pro.local}@{domain}"
        auth = pki.issue_ps(pro.idnat, pro.surname, pro.given_name, pro.profession)
        enc = pki.issue_encryption(address, kind="PS", idnat=pro.idnat, surname=pro.surname, given_name=pro.given_name)
        certs[address] = enc.cert
        entries.append(
            {
                "address": address,
                "type": "PER",
                "idnat": pro.idnat,
                "name": f"{pro.given_name.title()} {pro.surname}",
                "profession": pro.profession,
                **_user_files(users / pro.local, address, auth, enc),
            }
        )
    entries.append(
        {
            "address": f"{ORG_MAILBOX}@{domain}",
            "type": "ORG",
            "structure": structure_id(),
            "name": "Secrétariat de cardiologie",
            "members": [e["address"] for e in entries],
        }
    )
    app_address = f"{APP_MAILBOX}@{domain}"
    org_auth = pki.issue_org(structure_id(), STRUCTURE_NAME, "LPS CABINET DEMO")
    app_enc = pki.issue_encryption(app_address, kind="ORG", structure_id=structure_id(), organization=STRUCTURE_NAME)
    certs[app_address] = app_enc.cert
    entries.append(
        {
            "address": app_address,
            "type": "APP",
            "structure": structure_id(),
            "name": "Logiciel de cabinet (démo)",
            **_user_files(users / APP_MAILBOX, app_address, org_auth, app_enc),
        }
    )

    (directory / "mss.toml").write_text(_config_text(domain, ports, database_url, notify_url), encoding="utf-8")
    asyncio.run(_load_directory(resolve_database_url(database_url, directory), entries, certs))
    patient_docs = asyncio.run(_create_patients(directory)) if patients else []

    # demo.json paths are relative to the deployment folder.
    for e in entries:
        for k in _PATH_KEYS:
            if k in e:
                e[k] = str(Path(e[k]).relative_to(directory))
    doc = {
        "domain": domain,
        "config": "mss.toml",
        "ports": ports,
        "trust_anchors": "pki/trust-anchors.pem",
        "mailboxes": entries,
        "patients": patient_docs,
    }
    (directory / "demo.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return doc


async def _load_directory(url: str, entries: list[dict], certs: dict) -> None:
    await upgrade(url)
    engine: AsyncEngine = create_engine(url)
    try:
        sessions = sessionmaker(engine)
        async with sessions() as s, s.begin():
            d = LocalDirectory(s)
            for e in entries:
                await d.add_mailbox(
                    e["address"],
                    e["type"],
                    idnat=e.get("idnat"),
                    structure_id=e.get("structure"),
                    display_name=e.get("name", ""),
                    members=e.get("members", ()),
                )
                if e["address"] in certs:
                    await d.add_certificate(e["address"], certs[e["address"]])
        store = Store(sessions)
        try:
            for e in entries:
                await store.ensure_default_folders(e["address"])
        finally:
            await store.close()
    finally:
        await engine.dispose()


async def _create_patients(directory: Path) -> list[dict]:
    """The demo's patients, made as the operator would (`mss patient create`); the first is
    activated as the patient's browser would, by the Python reference client (the server sees
    neither the activation code nor the password, only what the client derives from them)."""
    from mss.config import load_settings
    from mss.patients import PatientSpaces

    settings = load_settings(directory / "mss.toml")
    engine = create_engine(settings.resolved_database_url)
    store = Store(sessionmaker(engine))
    docs: list[dict] = []
    try:
        spaces = PatientSpaces(settings, sessionmaker(engine), store)
        client = PatientClient(iterations=settings.patients.kdf_iterations)
        for patient in PATIENTS:
            record, code = await spaces.create(patient.ins, email=patient.email, name=patient.name)
            doc = {"ins": record.ins, "address": record.address, "name": record.name, "email": record.email}
            if patient.activated:
                password = new_password()
                rewrap = await asyncio.to_thread(client.activate, code, password, await spaces.key_record(record.ins))
                await spaces.activate(record.ins, rewrap.old_auth_key, rewrap.new_auth_key, rewrap.wrapped.to_json())
                doc["password"] = password
            else:
                doc["activation_code"] = code
            docs.append(doc)
    finally:
        await store.close()
        await engine.dispose()
    return docs
