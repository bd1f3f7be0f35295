"""The test PKI issues certificates that real OpenSSL accepts, with the health PKI's shapes."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from crypto.pki import Issued, TestPKI

requires_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl binary not installed")


def _openssl_verify(
    world, issued: Issued, purpose: str, tmp_path: Path, trusted_root: TestPKI | None = None
) -> subprocess.CompletedProcess[str]:
    leaf, key = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    issued.write_pem(leaf, key, with_chain=False)
    untrusted = tmp_path / "untrusted.pem"
    untrusted.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in issued.chain))
    root = tmp_path / "root.pem"
    root.write_bytes((trusted_root or world.pki).root.cert.public_bytes(Encoding.PEM))
    return subprocess.run(
        [
            "openssl",
            "verify",
            "-x509_strict",
            "-purpose",
            purpose,
            "-CAfile",
            str(root),
            "-untrusted",
            str(untrusted),
            str(leaf),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


@requires_openssl
@pytest.mark.parametrize(
    ("which", "purpose"),
    [
        ("ps", "sslclient"),
        ("org", "sslclient"),
        ("serv", "sslserver"),
        ("serv", "sslclient"),
        ("enc", "smimeencrypt"),
        ("enc2", "smimeencrypt"),
    ],
)
def test_openssl_verifies_issued(world, which: str, purpose: str, tmp_path: Path) -> None:
    result = _openssl_verify(world, getattr(world, which), purpose, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": OK")


@requires_openssl
def test_openssl_refuses_foreign_pki(world, tmp_path: Path) -> None:
    # The foreign chain carries our CA names, so openssl finds a name match for its
    # intermediate's issuer but no certificate that signed it: a chain-building failure one
    # level above the leaf, not a file or option error.
    result = _openssl_verify(world, world.foreign_ps, "sslclient", tmp_path)
    output = result.stdout + result.stderr  # OpenSSL 1.1 prints to stdout, 3.x to stderr
    assert result.returncode != 0, output
    assert "error 20 at 1 depth lookup: unable to get local issuer certificate" in output, output
    assert "verification failed" in output, output
    # Control: the very same files verify once the foreign root is the trusted one, so the
    # refusal above comes from the trust anchor and nothing else.
    own = _openssl_verify(world, world.foreign_ps, "sslclient", tmp_path, trusted_root=world.other)
    assert own.returncode == 0, own.stdout + own.stderr


@requires_openssl
def test_openssl_prints_ps_subject(world, tmp_path: Path) -> None:
    pem = tmp_path / "ps.pem"
    pem.write_bytes(world.ps.cert.public_bytes(Encoding.PEM))
    out = subprocess.run(
        ["openssl", "x509", "-in", str(pem), "-noout", "-subject", "-issuer", "-nameopt", "RFC2253"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "CN=810001045367" in out and "SN=DUPONT" in out and "GN=JEAN" in out
    assert "title=" in out and out.split("\n")[0].rstrip().endswith(",C=FR")
    assert "issuer=CN=AC IGC-SANTE FORT PERSONNES,OU=IGC-SANTE,OU=0002 187512751,O=ASIP-SANTE,C=FR" in out


def test_ps_subject_shape(world) -> None:
    rdns = world.ps.cert.subject.rdns
    multi = [r for r in rdns if len(r) > 1]
    assert len(multi) == 1
    assert {a.oid for a in multi[0]} == {NameOID.SURNAME, NameOID.COMMON_NAME, NameOID.GIVEN_NAME}
    assert [a.oid for r in rdns if len(r) == 1 for a in r] == [NameOID.COUNTRY_NAME, NameOID.TITLE]
    assert world.ps.cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "AC IGC-SANTE FORT PERSONNES"
    eku = world.ps.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert world.ps.cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature


def test_serv_and_encryption_profiles(world) -> None:
    san = world.serv.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mss.hopital.test", "mx.hopital.test"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert world.serv.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "mss.hopital.test"
    assert world.serv.chain == [world.pki.organisations.cert]

    enc = world.enc.cert
    assert enc.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.RFC822Name
    ) == ["jean.dupont@hopital.mssante.test"]
    ku = enc.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_encipherment and ku.data_encipherment
    assert list(enc.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.EMAIL_PROTECTION
    ]
    assert world.enc.key.key_size == 2048 and enc.signature_hash_algorithm.name == "sha256"


def test_ca_layout(world) -> None:
    names = [c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value for c in world.pki.ca_certificates]
    assert names == ["AC RACINE IGC-SANTE FORT", "AC IGC-SANTE FORT PERSONNES", "AC IGC-SANTE FORT ORGANISATIONS"]
    for ca in world.pki.ca_certificates:
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    dp = world.pki.personnes.cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert dp[0].full_name[0].value.startswith("file:")
    key_dir = world.pki.directory / "private"
    for f in key_dir.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert world.pki.trust_anchors_pem().count(b"BEGIN CERTIFICATE") == 3


def test_write_pem(world, tmp_path: Path) -> None:
    world.org.write_pem(tmp_path / "c.pem", tmp_path / "k.pem")
    certs = x509.load_pem_x509_certificates((tmp_path / "c.pem").read_bytes())
    assert certs == [world.org.cert, world.pki.organisations.cert]
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    key_pem = (tmp_path / "k.pem").read_bytes()
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    assert load_pem_private_key(key_pem, None).public_key() == world.org.cert.public_key()


def test_load_round_trip_and_crls(tmp_path: Path) -> None:
    pki = TestPKI.create(tmp_path / "pki", range_name="STANDARD")
    assert "AC RACINE IGC-SANTE STANDARD" in pki.root.cert.subject.rfc4514_string()
    victim = pki.issue_org("1209270651", "X", "APP")
    pki.revoke(victim.cert, x509.ReasonFlags.key_compromise)
    again = TestPKI.load(tmp_path / "pki")
    assert again.root.cert == pki.root.cert
    paths = again.write_crls()
    assert [p.name for p in paths] == ["root.crl", "personnes.crl", "organisations.crl"]
    crl = x509.load_der_x509_crl(paths[2].read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(victim.cert.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    assert crl.is_signature_valid(pki.organisations.cert.public_key())
    # The CRL landed where the certificates' distribution point says it is.
    dp = victim.cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert Path(dp[0].full_name[0].value.removeprefix("file://")) == paths[2].resolve()
