"""`mss pki`, `mss mailbox`, `mss token`, `mss dkim` as an operator runs them, and interop with
`openssl` on what they write (issue 3 §1, §3, §5)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, pkcs12
from identity_support import run_mss

from crypto import dkim as dk
from crypto.smime import SMimeError, decrypt, protect_and_encrypt
from crypto.tokens import TokenVerifier
from crypto.validate import load_certificates

requires_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl binary not installed")
PS_ID = "810001045367"
FINESS = "1209270651"


@pytest.fixture(scope="module")
def dep(tmp_path_factory):
    from mss.demo import create_demo

    d = tmp_path_factory.mktemp("cli") / "demo"
    doc = create_demo(d, base_port=0)
    return d, doc


def mss(dep, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_mss(*args, "-c", str(dep[0] / "mss.toml"), check=check)


def mss_json(dep, *args: str) -> dict:
    return json.loads(mss(dep, *args, "--json").stdout)


def _openssl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)


# ------------------------------------------------------------------------------------ pki


def test_pki_init_in_a_new_deployment(tmp_path) -> None:
    (tmp_path / "mss.toml").write_text('domain = "clinique.mssante.test"\n')
    doc = json.loads(run_mss("pki", "init", "-c", str(tmp_path / "mss.toml"), "--json").stdout)
    assert Path(doc["directory"]) == tmp_path / "pki" / "ca"
    assert doc["cas"] == [
        "CN=AC RACINE IGC-SANTE FORT,OU=IGC-SANTE,OU=0002 187512751,O=ASIP-SANTE,C=FR",
        "CN=AC IGC-SANTE FORT PERSONNES,OU=IGC-SANTE,OU=0002 187512751,O=ASIP-SANTE,C=FR",
        "CN=AC IGC-SANTE FORT ORGANISATIONS,OU=IGC-SANTE,OU=0002 187512751,O=ASIP-SANTE,C=FR",
    ]
    assert (tmp_path / "pki" / "trust-anchors.pem").is_file() and len(doc["crl_files"]) == 3
    assert stat.S_IMODE((tmp_path / "pki" / "ca" / "private" / "root.key").stat().st_mode) == 0o600
    again = run_mss("pki", "init", "-c", str(tmp_path / "mss.toml"), check=False)
    assert again.returncode != 0 and "already exists" in again.stderr
    # Without -c, $MSS_CONFIG names the configuration.
    doc = json.loads(run_mss("pki", "crl", "--json", env={"MSS_CONFIG": str(tmp_path / "mss.toml")}).stdout)
    assert doc["crl_files"][0].startswith(str(tmp_path))


@requires_openssl
@pytest.mark.parametrize(
    "kind,args,purpose",
    [
        ("ps", ["--idnat", PS_ID, "--surname", "Dupont", "--given", "Jean", "--profession", "Pharmacien"], "sslclient"),
        ("org", ["--structure", FINESS, "--name", "HOPITAL TEST", "--cn", "LPS CARDIO"], "sslclient"),
        ("serv", ["--dns", "mss.hopital.test", "--ip", "127.0.0.1"], "sslserver"),
    ],
)
def test_issue_then_openssl_verify(dep, tmp_path, kind, args, purpose) -> None:
    doc = mss_json(dep, "pki", "issue", kind, *args, "--out", str(tmp_path), "--p12")
    anchors = dep[0] / "pki" / "trust-anchors.pem"
    certs = load_certificates(Path(doc["cert"]).read_bytes())
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(
        Path(doc["cert"]).read_bytes().split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    )
    res = _openssl(
        "verify", "-x509_strict", "-purpose", purpose, "-CAfile", str(anchors), "-untrusted", doc["cert"], str(leaf)
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert stat.S_IMODE(Path(doc["key"]).stat().st_mode) == 0o600
    info = _openssl("pkcs12", "-in", doc["p12"], "-passin", f"pass:{doc['p12_password']}", "-nokeys")
    assert info.returncode == 0 and "BEGIN CERTIFICATE" in info.stdout, info.stderr
    if kind == "ps":
        # SN+CN+GN multi-valued RDN, title, C (MSSANTE.md), read back by openssl.
        subj = _openssl("x509", "-in", str(leaf), "-noout", "-subject").stdout
        assert "subject=C = FR, title = Pharmacien, GN = JEAN + SN = DUPONT + CN = 810001045367" in subj
    if kind == "org":
        assert certs[0].subject.rfc4514_string() == f"CN=LPS CARDIO,OU={FINESS},O=HOPITAL TEST,ST=75,C=FR"


def test_issue_validity_window_and_id_checks(dep, tmp_path) -> None:
    doc = mss_json(
        dep,
        "pki",
        "issue",
        "ps",
        "--idnat",
        PS_ID,
        "--surname",
        "A",
        "--given",
        "B",
        "--not-before",
        "2020-01-01",
        "--not-after",
        "2021-01-01",
        "--out",
        str(tmp_path),
    )
    cert = load_certificates(Path(doc["cert"]).read_bytes())[0]
    assert cert.not_valid_before_utc.isoformat().startswith("2020-01-01")
    assert cert.not_valid_after_utc.isoformat().startswith("2021-01-01T23:59:59")
    bad = mss(
        dep,
        "pki",
        "issue",
        "ps",
        "--idnat",
        "810001045368",
        "--surname",
        "A",
        "--given",
        "B",
        "--out",
        str(tmp_path),
        check=False,
    )
    assert bad.returncode == 2, bad.stderr
    bad = mss(
        dep, "pki", "issue", "org", "--structure", "1209270652", "--name", "X", "--out", str(tmp_path), check=False
    )
    assert bad.returncode == 2


@requires_openssl
def test_revoke_and_crl_openssl_sees_the_revocation(dep, tmp_path) -> None:
    doc = mss_json(
        dep, "pki", "issue", "ps", "--idnat", PS_ID, "--surname", "A", "--given", "B", "--out", str(tmp_path)
    )
    rev = mss_json(dep, "pki", "revoke", doc["cert"], "--reason", "key_compromise")
    assert rev["revoked"] == doc["serial"] and rev["crl_files"] == []
    crls = mss_json(dep, "pki", "crl")["crl_files"]
    personnes = next(p for p in crls if p.endswith("personnes.crl"))
    text = _openssl("crl", "-in", personnes, "-inform", "DER", "-noout", "-text").stdout
    assert doc["serial"].upper().lstrip("0") in text.replace(":", "").upper()
    assert "Key Compromise" in text
    anchors = dep[0] / "pki" / "trust-anchors.pem"
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(load_certificates(Path(doc["cert"]).read_bytes())[0].public_bytes(Encoding.PEM))
    crl_pem = tmp_path / "all.crl.pem"
    crl_pem.write_text("".join(_openssl("crl", "-in", p, "-inform", "DER").stdout for p in crls))
    res = _openssl(
        "verify", "-crl_check", "-CAfile", str(anchors), "-CRLfile", str(crl_pem), "-untrusted", doc["cert"], str(leaf)
    )
    assert res.returncode != 0 and "revoked" in (res.stdout + res.stderr)
    # By serial, for a certificate file the operator no longer has.
    doc2 = mss_json(dep, "pki", "issue", "org", "--structure", FINESS, "--name", "X", "--out", str(tmp_path))
    published = mss_json(dep, "pki", "revoke", "--serial", doc2["serial"], "--crl")["crl_files"]
    organisations = x509.load_der_x509_crl(
        Path(next(p for p in published if p.endswith("organisations.crl"))).read_bytes()
    )
    assert organisations.get_revoked_certificate_by_serial_number(int(doc2["serial"], 16)) is not None


# -------------------------------------------------------------------------------- mailbox


def _load_p12(doc: dict):
    key, cert, chain = pkcs12.load_key_and_certificates(Path(doc["p12"]).read_bytes(), doc["p12_password"].encode())
    return key, cert


async def _encryption_certs(dep_dir: Path, address: str) -> list[x509.Certificate]:
    from annuaire.local import LocalDirectory
    from mss.config import load_settings
    from mss.db.engine import create_engine, sessionmaker

    engine = create_engine(load_settings(dep_dir / "mss.toml").resolved_database_url)
    try:
        async with sessionmaker(engine)() as s:
            return await LocalDirectory(s).encryption_certificates(address)
    finally:
        await engine.dispose()


@requires_openssl
def test_mailbox_create_rollover_and_old_mail_stays_readable(dep, tmp_path) -> None:
    domain = dep[1]["domain"]
    address = f"jean.dupont@{domain}"
    first = mss_json(
        dep,
        "mailbox",
        "create",
        address,
        "--type",
        "PER",
        "--idnat",
        PS_ID,
        "--surname",
        "DUPONT",
        "--given",
        "JEAN",
        "--out",
        str(tmp_path),
    )
    assert stat.S_IMODE(Path(first["p12"]).stat().st_mode) == 0o600
    # openssl reads the PKCS#12 and the key in it.
    res = _openssl("pkcs12", "-in", first["p12"], "-passin", f"pass:{first['p12_password']}", "-nocerts", "-nodes")
    assert res.returncode == 0 and "PRIVATE KEY" in res.stdout, res.stderr
    # The server keeps no private key: nothing under the deployment holds this key.
    key1, cert1 = _load_p12(first)
    (certs_before,) = [asyncio.run(_encryption_certs(dep[0], address))]
    assert [c.serial_number for c in certs_before] == [cert1.serial_number]
    old_mail = protect_and_encrypt(
        b"From: a@x.test\r\nTo: " + address.encode() + b"\r\nSubject: old\r\n\r\nold body\r\n", certs_before
    )

    second = mss_json(dep, "mailbox", "rollover", address, "--out", str(tmp_path))
    assert second["retired"] == 1 and second["key_number"] == 2
    key2, cert2 = _load_p12(second)
    certs_after = asyncio.run(_encryption_certs(dep[0], address))
    assert [c.serial_number for c in certs_after] == [cert2.serial_number]  # new mail: new key only
    new_mail = protect_and_encrypt(
        b"From: a@x.test\r\nTo: " + address.encode() + b"\r\nSubject: new\r\n\r\nnew body\r\n", certs_after
    )
    assert b"old body" in decrypt(old_mail, cert1, key1)
    assert b"new body" in decrypt(new_mail, cert2, key2)
    with pytest.raises(SMimeError):  # the retired key cannot open mail encrypted after the rollover
        decrypt(new_mail, cert1, key1)
    # openssl cms opens the older message with the older PKCS#12's key.
    pem = tmp_path / "k1.pem"
    pem.write_text(res.stdout)
    msg = tmp_path / "old.eml"
    msg.write_bytes(old_mail)
    out = _openssl("cms", "-decrypt", "-in", str(msg), "-inkey", str(pem), "-recip", first["cert"])
    assert out.returncode == 0 and "old body" in out.stdout, out.stderr

    listed = {m["address"]: m for m in mss_json(dep, "mailbox", "list")["mailboxes"]}
    assert [c["active"] for c in listed[address]["certificates"]] == [False, True]
    scanned = []
    for path in dep[0].rglob("*"):
        if path.is_file() and path.suffix in (".db", ".db-wal", ".key", ".log", ".json", ".toml"):
            data = path.read_bytes()
            scanned.append(path.name)
            for k in (key1, key2):
                der = k.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
                assert der[-64:] not in data, path
    # The scan covered the store that holds the mailbox's certificates (else it proves nothing).
    assert "mss.db" in scanned and "mss.toml" in scanned, scanned


def test_org_mailbox_encrypts_to_every_member(dep, tmp_path) -> None:
    domain = dep[1]["domain"]
    members = [m["address"] for m in dep[1]["mailboxes"] if m["type"] == "PER"]
    args = ["mailbox", "create", f"urgences@{domain}", "--type", "ORG", "--structure", FINESS, "--out", str(tmp_path)]
    for m in members:
        args += ["--member", m]
    doc = mss_json(dep, *args)
    assert "p12" not in doc and doc["members"] == members
    certs = asyncio.run(_encryption_certs(dep[0], f"urgences@{domain}"))
    assert len(certs) == len(members)
    refusal = mss(dep, "mailbox", "rollover", f"urgences@{domain}", "--out", str(tmp_path), check=False)
    assert refusal.returncode == 1 and "members' keys" in refusal.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["nobody@elsewhere.test", "--type", "PER", "--idnat", PS_ID], "not in this operator's domain"),
        (["x1@{domain}", "--type", "PER", "--idnat", "810001045368"], "check digit"),
        (["x2@{domain}", "--type", "PER", "--structure", FINESS], "needs --idnat"),
        (["x3@{domain}", "--type", "APP"], "needs --structure"),
        (
            ["x4@{domain}", "--type", "ORG", "--structure", FINESS, "--member", "ghost@{domain}"],
            "not a local PER mailbox",
        ),
    ],
)
def test_mailbox_create_refusals(dep, tmp_path, args, message) -> None:
    args = [a.format(domain=dep[1]["domain"]) for a in args]
    res = mss(dep, "mailbox", "create", *args, "--out", str(tmp_path), check=False)
    assert res.returncode != 0 and message.lower() in res.stderr.lower(), res.stderr


def test_app_password_is_printed_once_and_stored_hashed(dep) -> None:
    address = next(m["address"] for m in dep[1]["mailboxes"] if m["type"] == "PER")
    out = mss(dep, "mailbox", "app-password", address, "--label", "Outlook").stdout
    password = out.strip().splitlines()[-1]
    assert len(password) == 27 and password.count("-") == 3
    db = dep[0] / "mss.db"
    assert db.is_file()  # the store the password row was written to (else the check below is vacuous)
    for path in (db, db.with_name("mss.db-wal")):
        if path.exists():
            assert password.encode() not in path.read_bytes()
    listed = mss_json(dep, "mailbox", "app-password", address, "--list")["app_passwords"]
    assert listed and listed[-1]["label"] == "Outlook" and "password" not in json.dumps(listed)
    assert mss_json(dep, "mailbox", "app-password", address, "--revoke-all")["revoked"] >= 1
    unknown = mss(dep, "mailbox", "app-password", f"ghost@{dep[1]['domain']}", check=False)
    assert unknown.returncode == 1 and "no local mailbox" in unknown.stderr


# ---------------------------------------------------------------------------------- token


def test_token_issue_verifies_with_the_published_jwks(dep) -> None:
    app = next(m for m in dep[1]["mailboxes"] if m["type"] == "APP")
    per = next(m for m in dep[1]["mailboxes"] if m["type"] == "PER")
    cert_path = dep[0] / app["tls_cert"]
    token = mss(
        dep, "token", "issue", "--idnat", per["idnat"], "--cnf-cert", str(cert_path), "--ttl", "60"
    ).stdout.strip()
    from mss.config import load_settings

    s = load_settings(dep[0] / "mss.toml")
    verifier = TokenVerifier(
        s.tokens.jwks_source(s), issuer=s.tokens.issuer, audience=s.tokens.audience, acr_values=s.tokens.acr_values
    )
    claims = verifier.verify(token, load_certificates(cert_path.read_bytes())[0])
    assert claims["sub"] == per["idnat"] and claims["exp"] - claims["iat"] == 60
    assert json.loads(mss(dep, "token", "jwks").stdout) == json.loads((dep[0] / "pki/tokens/jwks.json").read_text())
    bad = mss(dep, "token", "issue", "--idnat", "810001045368", "--cnf-cert", str(cert_path), check=False)
    assert bad.returncode == 2


async def test_jwks_served_over_http_and_usable_as_a_url(dep) -> None:
    from types import SimpleNamespace

    from crypto.tokens import TokenIssuer
    from mss.config import load_settings
    from web.server import start

    s = load_settings(dep[0] / "mss.toml")
    # The web front end on its own (uvicorn, an ephemeral port): only the JWKS route is used.
    server = await start(SimpleNamespace(settings=s, directory=None), port=0)
    try:
        port = server.port
        url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
        import urllib.request

        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
        assert json.loads(body) == json.loads((dep[0] / "pki/tokens/jwks.json").read_text())
        app = next(m for m in dep[1]["mailboxes"] if m["type"] == "APP")
        cert = load_certificates((dep[0] / app["tls_cert"]).read_bytes())[0]
        issuer = TokenIssuer.load(s.path(s.tokens.signing_key), s.tokens.issuer)
        verifier = TokenVerifier(url, issuer=s.tokens.issuer, audience="mss")
        token = issuer.issue(dep[1]["mailboxes"][0]["idnat"], cert, audience="mss")
        assert (await asyncio.to_thread(verifier.verify, token, cert))["sub"] == dep[1]["mailboxes"][0]["idnat"]
    finally:
        server.close()
        await server.wait_closed()


# ----------------------------------------------------------------------------------- dkim


needs_nacl = pytest.mark.skipif(
    importlib.util.find_spec("nacl") is None, reason="dkimpy needs PyNaCl for ed25519 (dkimpy[ed25519])"
)


@pytest.mark.parametrize("algorithm", ["rsa", pytest.param("ed25519", marks=needs_nacl)])
def test_dkim_keygen_sign_and_verify_with_the_printed_record(dep, algorithm) -> None:
    domain = dep[1]["domain"]
    doc = mss_json(dep, "dkim", "keygen", domain, "--algorithm", algorithm, "--selector", f"s-{algorithm}")
    key_path = Path(doc["key"])
    assert key_path.is_relative_to(dep[0]) and stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert doc["txt"].startswith(f"v=DKIM1; k={algorithm}; p=")
    key = dk.load(key_path, domain, doc["selector"])
    message = (
        f"From: Claire <claire.martin@{domain}>\r\nTo: bob@autre.mssante.test\r\nSubject: test\r\n"
        "Date: Mon, 01 Jan 2024 10:00:00 +0100\r\nMessage-ID: <1@x>\r\n\r\nBonjour.\r\n"
    ).encode()
    signed = dk.sign(message, key) + message
    published = {f"{doc['record_name']}.".encode(): doc["txt"].encode()}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return published.get(name)

    assert dk.verify(signed, dnsfunc)
    assert not dk.verify(signed.replace(b"Bonjour", b"Bonsoir"), dnsfunc)
    again = mss(dep, "dkim", "keygen", domain, "--algorithm", algorithm, "--selector", f"s-{algorithm}", check=False)
    assert again.returncode == 1 and "exists" in again.stderr


@requires_openssl
def test_dkim_key_is_readable_by_openssl(dep) -> None:
    doc = mss_json(dep, "dkim", "keygen", dep[1]["domain"], "--selector", "ossl")
    res = _openssl("pkey", "-in", doc["key"], "-noout", "-text")
    assert res.returncode == 0 and "2048 bit" in res.stdout
