"""`mss demo DIR`: a complete deployment for trying MSS with a real mail client.

It makes a test health PKI, a server certificate, two professionals with PER mailboxes,
an ORG mailbox they share, and an APP mailbox for practice software; then writes
`mss.toml` and `demo.json` (the stable contract that scripts and docs rely on). Private
keys go to the users' folders only: the server never reads them.

`mss demo DIR2 --domain D2 --peer DIR1` makes a second operator of the same trust space
(docs/relay.md): it shares DIR1's test PKI (its own SERV certificate and users, issued by the
same CAs), both domains go on both whitelists, each gets a static route to the other's `mta`
port and trusts the other's DKIM key, and each directory knows the other's professionals'
encryption certificates (end-to-end encryption across operators). DIR1 is updated too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import socket
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

from cryptography import x509
from sqlalchemy.ext.asyncio import AsyncEngine

from annuaire.local import LocalDirectory
from annuaire.whitelist import NAMESPACE as WHITELIST_NAMESPACE
from annuaire.whitelist import import_whitelist
from crypto import dkim
from crypto.identity import luhn_check_digit
from crypto.ins import ins_key
from crypto.keys import new_password, write_pkcs12
from crypto.patient_client import PatientClient
from crypto.pki import Issued, TestPKI
from crypto.tokens import TokenIssuer
from mss.config import resolve_database_url
from mss.db.engine import create_engine, sessionmaker, upgrade
from mss.demo_nodes import NodesError, check_nodes, write_node_configs
from mss.store import Store

DEFAULT_DOMAIN = "hopital-demo.mssante.test"
DEFAULT_BASE_PORT = 2587
PORT_ORDER = ("submission", "submissions", "mta", "imap", "imaps", "http")


log = logging.getLogger(__name__)


class DemoError(Exception):
    """A demo that cannot be made as asked (the message says why and what to do)."""


class DemoExists(DemoError):
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
# The second operator's people (`mss demo DIR2 --peer DIR1`): other professionals, so that
# a card of one operator never opens a mailbox of the other.
PEER_PROFESSIONALS = (
    Professional("sophie.bernard", "BERNARD", "SOPHIE", "Médecin", "1000234567"),
    Professional("luc.petit", "PETIT", "LUC", "Sage-Femme", "1000876543"),
)
PEER_DOMAIN = "clinique-demo.mssante.test"
PEER_BASE_PORT = DEFAULT_BASE_PORT + 10
ORG_MAILBOX = "secretariat.cardiologie"
APP_MAILBOX = "lps.cabinet"
FINESS_PAYLOAD = "75000123"  # 8 digits + Luhn = a 9-digit FINESS
STRUCTURE_NAME = "HOPITAL DEMO"
PEER_FINESS_PAYLOAD = "69000456"
PEER_STRUCTURE_NAME = "CLINIQUE DEMO"
WHITELIST_FILE = "whitelist.xml"
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


def structure_id(finess_payload: str = FINESS_PAYLOAD) -> str:
    return "1" + finess_payload + luhn_check_digit(finess_payload)


@dataclass(frozen=True)
class Operator:
    """Who runs one demo deployment: its structure and its people."""

    finess_payload: str
    structure_name: str
    professionals: tuple[Professional, ...]

    @property
    def structure_id(self) -> str:
        return structure_id(self.finess_payload)


OPERATOR = Operator(FINESS_PAYLOAD, STRUCTURE_NAME, PROFESSIONALS)
PEER_OPERATOR = Operator(PEER_FINESS_PAYLOAD, PEER_STRUCTURE_NAME, PEER_PROFESSIONALS)


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


def _config_text(
    domain: str,
    ports: dict[str, int],
    database_url: str,
    notify_url: str,
    *,
    pki_dir: str = "pki/ca",
    crl_files: Sequence[str] = CRL_FILES,
) -> str:
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
        "crl_files = [" + ", ".join(f'"{p}"' for p in crl_files) + "]",
        "crl_refresh_s = 60",
        "crl_fail_closed = true",
        "",
        "[pki]",
        "# The test PKI with its CA keys (`mss pki ...`): demo only, never on a production node.",
        f'directory = "{pki_dir}"',
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
        "[dkim]",
        "# Signing keys of this operator's domains (`mss dkim keygen DOMAIN`): <directory>/<domain>/<selector>.key",
        'directory = "dkim"',
        'selector = "mss"',
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- [relay] section

_TABLE = re.compile(r"^\s*\[\s*([^\]\s]+)\s*\]\s*(#.*)?$")
_RELAY_COMMENTS = (
    "# Mail to other operators of the trust space (docs/relay.md): queued, then relayed over",
    "# mutual TLS with [tls] cert; routes: static transport map (else DNS MX); dkim_keys: the",
    "# peers' DKIM public keys (else DNS TXT). `mss demo DIR2 --peer DIR1` fills both.",
)


def _toml_value(value: object) -> str:
    """A TOML value for the few types the [relay] section holds (JSON string escapes are
    valid TOML basic-string escapes, TOML 1.0 "String")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _relay_text(relay: Mapping[str, object]) -> str:
    lines = ["[relay]", *_RELAY_COMMENTS]
    scalars = {k: v for k, v in relay.items() if not isinstance(v, Mapping)}
    scalars.setdefault("enabled", True)
    lines += [f"{k} = {_toml_value(v)}" for k, v in scalars.items()]
    for table in ("routes", "dkim_keys"):
        entries = relay.get(table) or {}
        assert isinstance(entries, Mapping)
        lines += ["", f"[relay.{table}]"]
        lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in sorted(entries.items())]
    return "\n".join(lines) + "\n"


def update_relay_config(
    config: Path,
    *,
    routes: Mapping[str, str] | None = None,
    dkim_keys: Mapping[str, str] | None = None,
    **settings: object,
) -> dict:
    """Merge `routes`, `dkim_keys` and plain `[relay]` settings into the `[relay]` tables
    of a demo's `mss.toml` and return the new `[relay]` table.

    The tables `[relay]`, `[relay.routes]` and `[relay.dkim_keys]` are rewritten at the end
    of the file; every other line stays as it was (operators' edits included). Tests use it
    for short retry schedules and extra routes (a Postfix peer)."""
    config = Path(config)
    text = config.read_text(encoding="utf-8")
    relay = dict(tomllib.loads(text).get("relay", {}))
    for name, extra in (("routes", routes), ("dkim_keys", dkim_keys)):
        merged = dict(relay.get(name) or {})
        merged.update(extra or {})
        relay[name] = merged
    relay.update(settings)
    kept: list[str] = []
    skipping = False
    for line in text.splitlines():
        m = _TABLE.match(line)
        if m:
            name = m.group(1).strip('"')
            skipping = name == "relay" or name.startswith("relay.")
        if not skipping:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    config.write_text("\n".join(kept) + "\n\n" + _relay_text(relay), encoding="utf-8")
    return relay


def _set_listen_port(config: Path, name: str, port: int) -> None:
    """`[listen] NAME = PORT` in place (a peer's route needs a fixed `mta` port)."""
    lines = config.read_text(encoding="utf-8").splitlines()
    table = ""
    for i, line in enumerate(lines):
        m = _TABLE.match(line)
        if m:
            table = m.group(1)
        elif table == "listen" and re.match(rf"^\s*{name}\s*=", line):
            lines[i] = f"{name} = {port}"
            break
    else:
        raise DemoError(f"{config}: no [listen] {name} to set")
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _free_port() -> int:
    """A port the OS has free now on 127.0.0.1 (a peer route cannot say "ephemeral")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def whitelist_xml(domains: Sequence[str]) -> bytes:
    """A trust-space whitelist file in the national format (`mss annuaire whitelist import`)."""
    body = "".join(f"  <Domaine><Nom>{xml_escape(d)}</Nom></Domaine>\n" for d in domains)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListeBlanche xmlns="{WHITELIST_NAMESPACE}">\n{body}</ListeBlanche>\n'
    ).encode()


def _dkim_key(directory: Path, domain: str) -> dict:
    """The domain's DKIM signing key under `dkim/` (as `mss dkim keygen DOMAIN` writes it)."""
    key = dkim.generate(domain, "mss", "rsa")
    path = key.write(directory / "dkim")
    return {
        "selector": key.selector,
        "key": str(path.relative_to(directory)),
        "record_name": key.record_name,
        "txt": key.txt_value(),
    }


@dataclass(frozen=True)
class _Peer:
    """The deployment `--peer` names, as read from its files."""

    directory: Path
    doc: dict
    config: Path
    pki_dir: Path
    crl_files: tuple[Path, ...]
    database_url: str

    @classmethod
    def open(cls, directory: Path) -> _Peer:
        from mss.config import load_settings

        directory = Path(directory)
        doc_path = directory / "demo.json"
        if not doc_path.is_file():
            raise DemoError(f"{directory} is not a demo deployment (no demo.json); make it first with `mss demo`")
        doc = json.loads(doc_path.read_text(encoding="utf-8"))
        config = directory / doc["config"]
        settings = load_settings(config)
        pki_dir = settings.path(settings.pki.directory)
        if not (pki_dir / "pki.json").is_file():
            raise DemoError(f"{directory} has no test PKI in {pki_dir}")
        crls = tuple(settings.path(p) for p in settings.tls.crl_files)
        return cls(directory, doc, config, pki_dir, crls, settings.resolved_database_url)

    @property
    def domain(self) -> str:
        return self.doc["domain"]

    def per_certificates(self) -> dict[str, x509.Certificate]:
        """The encryption certificate of each of its professionals' PER mailboxes."""
        out = {}
        for m in self.doc["mailboxes"]:
            if m["type"] == "PER" and "smime_cert" in m:
                out[m["address"]] = x509.load_pem_x509_certificates((self.directory / m["smime_cert"]).read_bytes())[0]
        return out

    def save(self) -> None:
        path = self.directory / "demo.json"
        path.write_text(json.dumps(self.doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _relpath(target: Path, start: Path) -> str:
    return os.path.relpath(target.resolve(), start.resolve())


def create_demo(
    directory: Path,
    *,
    domain: str | None = None,
    base_port: int | None = None,
    force: bool = False,
    database_url: str = "sqlite+aiosqlite:///mss.db",
    notify_url: str = f"file:{NOTIFICATIONS}",
    patients: bool = True,
    peer: Path | None = None,
    nodes: int = 1,
) -> dict:
    """Create the deployment and return the `demo.json` document.

    With `peer` (the folder of another demo), this one is a second operator of the same
    trust space and the peer's `mss.toml` and `demo.json` are updated to know it. With
    `nodes` > 1 (PostgreSQL only), one configuration per node (`mss.demo_nodes`)."""
    try:
        check_nodes(nodes, database_url)
    except NodesError as exc:
        raise DemoError(str(exc)) from exc
    directory = Path(directory)
    other = _Peer.open(peer) if peer is not None else None
    if domain is None:
        domain = PEER_DOMAIN if other is not None else DEFAULT_DOMAIN
    domain = domain.lower()
    if base_port is None:
        base_port = PEER_BASE_PORT if other is not None else DEFAULT_BASE_PORT
    # Port 0 everywhere asks the OS for ephemeral ports (tests); otherwise consecutive.
    ports = {name: (base_port + i if base_port else 0) for i, name in enumerate(PORT_ORDER)}
    if other is not None:
        _check_peer(directory, domain, ports, other)
        if not ports["mta"]:
            ports["mta"] = _free_port()  # the peer's route must name it
    if directory.exists() and any(directory.iterdir()):
        if not force:
            raise DemoExists(f"{directory} already exists and is not empty; use --force to replace it")
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    operator = PEER_OPERATOR if other is not None else OPERATOR

    pki_dir = directory / "pki"
    if other is None:
        pki = TestPKI.create(pki_dir / "ca")
        pki_setting, crl_setting = "pki/ca", list(CRL_FILES)
    else:
        # One PKI for both operators: the peer's CAs issue this one's certificates, and both
        # read the same CRLs, so `mss pki revoke` in either folder reaches both servers.
        pki = TestPKI.load(other.pki_dir)
        pki_setting = _relpath(other.pki_dir, directory)
        crl_setting = [_relpath(p, directory) for p in other.crl_files]
    pki.write_trust_anchors(pki_dir / "trust-anchors.pem")
    server = pki.issue_serv(
        ["localhost", domain], operator.structure_id, operator.structure_name, ip_addresses=["127.0.0.1"]
    )
    server.write_pem(pki_dir / "server.crt", pki_dir / "server.key", with_chain=True)
    if other is None:
        pki.write_crls(next_update=DEMO_CRL_LIFETIME)
    issuer = TokenIssuer.generate(token_issuer_name(domain))
    issuer.save_key(directory / TOKEN_KEY)
    issuer.write_jwks(directory / TOKEN_JWKS)

    users = directory / "users"
    entries: list[dict] = []
    certs: dict[str, object] = {}
    for pro in operator.professionals:
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
            "structure": operator.structure_id,
            "name": "Secrétariat de cardiologie",
            "members": [e["address"] for e in entries],
        }
    )
    app_address = f"{APP_MAILBOX}@{domain}"
    org_auth = pki.issue_org(operator.structure_id, operator.structure_name, "LPS CABINET DEMO")
    app_enc = pki.issue_encryption(
        app_address, kind="ORG", structure_id=operator.structure_id, organization=operator.structure_name
    )
    certs[app_address] = app_enc.cert
    entries.append(
        {
            "address": app_address,
            "type": "APP",
            "structure": operator.structure_id,
            "name": "Logiciel de cabinet (démo)",
            **_user_files(users / APP_MAILBOX, app_address, org_auth, app_enc),
        }
    )

    config = directory / "mss.toml"
    config.write_text(
        _config_text(domain, ports, database_url, notify_url, pki_dir=pki_setting, crl_files=crl_setting),
        encoding="utf-8",
    )
    own_dkim = _dkim_key(directory, domain)
    update_relay_config(config)
    url = resolve_database_url(database_url, directory)
    asyncio.run(_load_directory(url, entries, certs))
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
        "dkim": own_dkim,
        "peers": [],
    }
    if other is not None:
        _pair(directory, doc, config, url, other, own_dkim)
    if nodes > 1:
        doc["nodes"] = write_node_configs(directory, config, nodes, ports, PORT_ORDER)
    (directory / "demo.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return doc


def _check_peer(directory: Path, domain: str, ports: dict[str, int], other: _Peer) -> None:
    """Refuse a pairing that cannot work, before anything is written."""
    here, there = directory.resolve(), other.directory.resolve()
    if here == there or here in there.parents:
        raise DemoError(f"{directory} would replace its own peer {other.directory}; choose another folder")
    if domain == other.domain or domain == f"patient.{other.domain}":
        raise DemoError(f"{other.directory} already serves {domain}; give the second operator another --domain")
    taken = {p for p in other.doc["ports"].values() if p}
    clash = sorted(taken & {p for p in ports.values() if p})
    if clash:
        raise DemoError(
            f"ports {', '.join(map(str, clash))} are {other.directory}'s; choose another --base-port "
            f"(its ports are {min(taken)}-{max(taken)})"
        )


def _pair(directory: Path, doc: dict, config: Path, url: str, other: _Peer, own_dkim: dict) -> None:
    """Make this deployment and `other` two operators of one trust space (both sides)."""
    if not other.doc["ports"].get("mta"):
        other.doc["ports"]["mta"] = _free_port()
        _set_listen_port(other.config, "mta", other.doc["ports"]["mta"])
    other_dkim = other.doc.get("dkim") or _peer_dkim(other)
    update_relay_config(
        config,
        routes={other.domain: f"localhost:{other.doc['ports']['mta']}"},
        dkim_keys={other_dkim["record_name"]: other_dkim["txt"]},
    )
    update_relay_config(
        other.config,
        routes={doc["domain"]: f"localhost:{doc['ports']['mta']}"},
        dkim_keys={own_dkim["record_name"]: own_dkim["txt"]},
    )
    peers_of_other = [p for p in other.doc.get("peers", []) if p["domain"] != doc["domain"]]
    domains = sorted({doc["domain"], other.domain, *(p["domain"] for p in peers_of_other)})
    for folder, db_url in ((directory, url), (other.directory, other.database_url)):
        (folder / WHITELIST_FILE).write_bytes(whitelist_xml(domains))
        asyncio.run(_import_whitelist(db_url, folder / WHITELIST_FILE))
    own_certs = {
        m["address"]: x509.load_pem_x509_certificates((directory / m["smime_cert"]).read_bytes())[0]
        for m in doc["mailboxes"]
        if m["type"] == "PER"
    }
    asyncio.run(_add_remote_certificates(url, other.per_certificates()))
    asyncio.run(_add_remote_certificates(other.database_url, own_certs))
    doc["peers"] = [{"domain": other.domain, "mta": other.doc["ports"]["mta"]}]
    other.doc["dkim"] = other_dkim
    other.doc["peers"] = [*peers_of_other, {"domain": doc["domain"], "mta": doc["ports"]["mta"]}]
    other.save()


def _peer_dkim(other: _Peer) -> dict:
    """A demo made before DKIM keys were part of it: its key, made now (or read when there)."""
    existing = other.directory / "dkim" / other.domain / "mss.key"
    if existing.is_file():
        key = dkim.load(existing, other.domain, "mss")
        return {
            "selector": key.selector,
            "key": str(existing.relative_to(other.directory)),
            "record_name": key.record_name,
            "txt": key.txt_value(),
        }
    return _dkim_key(other.directory, other.domain)


async def _import_whitelist(url: str, path: Path) -> None:
    await upgrade(url)
    engine = create_engine(url)
    try:
        await import_whitelist(engine, path)
    finally:
        await engine.dispose()


async def _add_remote_certificates(url: str, certs: Mapping[str, x509.Certificate]) -> None:
    """Encryption certificates of another operator's mailboxes, for end-to-end encryption
    across operators: outbound mail is sealed to them when the directory knows every
    recipient's (docs/relay.md). Without them mail still flows, protected by mutual TLS and
    encrypted at the peer's ingest."""
    engine = create_engine(url)
    try:
        async with sessionmaker(engine)() as s, s.begin():
            d = LocalDirectory(s)
            for address, cert in certs.items():
                await d.add_remote_certificate(address, cert)
    finally:
        await engine.dispose()


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
