"""A test PKI shaped like the health PKI (IGC-Santé): one root, PERSONNES and ORGANISATIONS CAs.

It exists so that tests and the demo exercise the same certificate shapes as production (PS
subjects with a multi-valued RDN, ORG/SERV subjects with the structure id in OU, CRLs per CA),
without ever committing key material: everything is written under a caller-chosen directory.

Profiles follow RFC 5280: CA certificates carry basicConstraints (§4.2.1.9), keyUsage
keyCertSign/cRLSign (§4.2.1.3), SKI/AKI (§4.2.1.1-2) and CRL distribution points (§4.2.1.13).
All keys are RSA-2048 with SHA-256 signatures, the floor of the real PKI. Key generation is the
slow part (~50-100 ms a key), so each issued certificate costs exactly one key.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .files import write_private
from .identity import luhn_check_digit

__all__ = ["Issued", "TestPKI", "generate_luhn_id"]

RSA_BITS = 2048
_ORG = "ASIP-SANTE"
_ORG_OU = "0002 187512751"
_PKI_OU = "IGC-SANTE"
_STATE_FILE = "pki.json"
PrivateKey = rsa.RSAPrivateKey


def _now() -> datetime:
    return datetime.now(UTC)


def _new_key() -> PrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def generate_luhn_id(prefix_digits: str, length: int) -> str:
    """Random numeric id of ``length`` digits starting with ``prefix_digits``, Luhn digit last.

    E.g. an RPPS is ``generate_luhn_id("1", 11)`` and its idNat_PS is "8" + that.
    """
    if len(prefix_digits) >= length:
        raise ValueError("prefix must be shorter than the id")
    body = prefix_digits + "".join(str(secrets.randbelow(10)) for _ in range(length - 1 - len(prefix_digits)))
    return body + luhn_check_digit(body)


@dataclass
class Issued:
    """A freshly issued end-entity certificate with its key and its intermediates (no root)."""

    cert: x509.Certificate
    key: PrivateKey
    chain: list[x509.Certificate] = field(default_factory=list)

    def cert_pem(self, *, with_chain: bool = True) -> bytes:
        certs = [self.cert, *(self.chain if with_chain else [])]
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

    def key_pem(self) -> bytes:
        return _key_pem(self.key)

    def write_pem(self, cert_path: Path, key_path: Path, *, with_chain: bool = True) -> None:
        """Leaf (then intermediates) to ``cert_path``; unencrypted PKCS#8 key, mode 0600."""
        cert_path = Path(cert_path)
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        cert_path.write_bytes(self.cert_pem(with_chain=with_chain))
        write_private(Path(key_path), self.key_pem())


@dataclass
class _CA:
    slug: str
    cert: x509.Certificate
    key: PrivateKey


def _ca_name(common_name: str) -> x509.Name:
    # DER order C, O, OU, OU, CN: printed by openssl as the IGC-Santé issuer DN in MSSANTE.md.
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _ORG_OU),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _PKI_OU),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


class TestPKI:
    """Root + PERSONNES + ORGANISATIONS CAs kept under ``directory`` (keys in ``private/``)."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, directory: Path, range_name: str, root: _CA, personnes: _CA, organisations: _CA) -> None:
        self.directory = Path(directory)
        self.range_name = range_name
        self.root = root
        self.personnes = personnes
        self.organisations = organisations
        self._revoked: dict[str, dict[int, tuple[str, str | None]]] = {}  # ca slug -> serial -> (when, reason)
        self._load_state()

    # ---------------------------------------------------------------- creation and persistence

    @classmethod
    def create(cls, directory: Path, *, range_name: str = "FORT") -> TestPKI:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        root_key = _new_key()
        root_name = _ca_name(f"AC RACINE IGC-SANTE {range_name}")
        root_cert = cls._ca_cert(root_name, root_key.public_key(), root_name, root_key, path_length=1, crl_slug=None)
        root = _CA("root", root_cert, root_key)
        cas = [root]
        for slug, label in (("personnes", "PERSONNES"), ("organisations", "ORGANISATIONS")):
            key = _new_key()
            cert = cls._ca_cert(
                _ca_name(f"AC IGC-SANTE {range_name} {label}"),
                key.public_key(),
                root_name,
                root_key,
                path_length=0,
                crl_slug="root",
                directory=directory,
            )
            cas.append(_CA(slug, cert, key))
        for ca in cas:
            (directory / f"{ca.slug}.pem").write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
            write_private(directory / "private" / f"{ca.slug}.key", _key_pem(ca.key))
        (directory / _STATE_FILE).write_text(json.dumps({"range": range_name, "revoked": {}}))
        return cls(directory, range_name, *cas)

    @classmethod
    def load(cls, directory: Path) -> TestPKI:
        directory = Path(directory)
        state = json.loads((directory / _STATE_FILE).read_text())
        cas = []
        for slug in ("root", "personnes", "organisations"):
            cert = x509.load_pem_x509_certificate((directory / f"{slug}.pem").read_bytes())
            key = serialization.load_pem_private_key((directory / "private" / f"{slug}.key").read_bytes(), None)
            assert isinstance(key, rsa.RSAPrivateKey)
            cas.append(_CA(slug, cert, key))
        return cls(directory, state["range"], *cas)

    def _load_state(self) -> None:
        path = self.directory / _STATE_FILE
        if path.exists():
            raw = json.loads(path.read_text()).get("revoked", {})
            self._revoked = {slug: {int(s): tuple(v) for s, v in m.items()} for slug, m in raw.items()}  # type: ignore[misc]

    def _save_state(self) -> None:
        state = {
            "range": self.range_name,
            "revoked": {slug: {str(s): list(v) for s, v in m.items()} for slug, m in self._revoked.items()},
        }
        (self.directory / _STATE_FILE).write_text(json.dumps(state, indent=1))

    def crl_uri(self, slug: str) -> str:
        return (self.directory / "crl" / f"{slug}.crl").resolve().as_uri()

    @classmethod
    def _ca_cert(
        cls,
        subject: x509.Name,
        public_key: rsa.RSAPublicKey,
        issuer: x509.Name,
        issuer_key: PrivateKey,
        *,
        path_length: int,
        crl_slug: str | None,
        directory: Path | None = None,
    ) -> x509.Certificate:
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        )
        if crl_slug and directory is not None:
            uri = (Path(directory) / "crl" / f"{crl_slug}.crl").resolve().as_uri()
            builder = builder.add_extension(_crl_dp(uri), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    # ---------------------------------------------------------------- anchors

    @property
    def ca_certificates(self) -> list[x509.Certificate]:
        return [self.root.cert, self.personnes.cert, self.organisations.cert]

    def trust_anchors_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.ca_certificates)

    def write_trust_anchors(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.trust_anchors_pem())
        return path

    # ---------------------------------------------------------------- end entities

    def _issue(
        self,
        ca: _CA,
        subject: x509.Name,
        *,
        eku: Sequence[x509.ObjectIdentifier],
        key_usage: dict[str, bool],
        san: Sequence[x509.GeneralName] = (),
        not_before: datetime | None,
        not_after: datetime | None,
    ) -> Issued:
        key = _new_key()
        now = _now()
        nb = not_before or now - timedelta(hours=1)
        na = not_after or nb + timedelta(days=3 * 365)
        ku = {
            name: key_usage.get(name, False)
            for name in (
                "digital_signature",
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
                "key_cert_sign",
                "crl_sign",
                "encipher_only",
                "decipher_only",
            )
        }
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(nb)
            .not_valid_after(na)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(**ku), critical=True)
            .add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
            .add_extension(_crl_dp(self.crl_uri(ca.slug)), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
        cert = builder.sign(ca.key, hashes.SHA256())
        return Issued(cert=cert, key=key, chain=[ca.cert])

    @staticmethod
    def ps_subject(idnat: str, surname: str, given_name: str, profession: str) -> x509.Name:
        """``SN=..+CN=<idnat>+GN=.., title=<profession>, C=FR`` (RFC 4514 order, as in MSSANTE.md)."""
        return x509.Name(
            [
                x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "FR")]),
                x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.TITLE, profession)]),
                x509.RelativeDistinguishedName(
                    [
                        x509.NameAttribute(NameOID.SURNAME, surname),
                        x509.NameAttribute(NameOID.COMMON_NAME, idnat),
                        x509.NameAttribute(NameOID.GIVEN_NAME, given_name),
                    ]
                ),
            ]
        )

    @staticmethod
    def org_subject(common_name: str, structure_id: str, organization: str, department: str | None) -> x509.Name:
        """``CN=.., OU=<structure id>, O=.., ST=<department>, C=FR`` (RFC 4514 order)."""
        attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "FR")]
        if department:
            attrs.append(x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, department))
        attrs += [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, structure_id),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
        return x509.Name(attrs)

    def issue_ps(
        self,
        idnat: str,
        surname: str,
        given_name: str,
        profession: str = "Médecin",
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> Issued:
        """Professional authentication certificate (card / e-CPS shape), client authentication."""
        return self._issue(
            self.personnes,
            self.ps_subject(idnat, surname, given_name, profession),
            eku=[ExtendedKeyUsageOID.CLIENT_AUTH],
            key_usage={"digital_signature": True},
            not_before=not_before,
            not_after=not_after,
        )

    def issue_org(
        self,
        structure_id: str,
        organization: str,
        common_name: str,
        *,
        department: str = "75",
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> Issued:
        """Structure (service, practice software) authentication certificate."""
        return self._issue(
            self.organisations,
            self.org_subject(common_name, structure_id, organization, department),
            eku=[ExtendedKeyUsageOID.CLIENT_AUTH],
            key_usage={"digital_signature": True},
            not_before=not_before,
            not_after=not_after,
        )

    def issue_serv(
        self,
        dns_names: Sequence[str],
        structure_id: str,
        organization: str,
        *,
        ip_addresses: Sequence[str] = (),
        department: str | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> Issued:
        """Server certificate: TLS server and client (operator-to-operator mutual TLS)."""
        if not dns_names:
            raise ValueError("a SERV certificate needs at least one DNS name")
        san: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        return self._issue(
            self.organisations,
            self.org_subject(dns_names[0], structure_id, organization, department),
            eku=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            key_usage={"digital_signature": True, "key_encipherment": True},
            san=san,
            not_before=not_before,
            not_after=not_after,
        )

    def issue_encryption(
        self,
        address: str,
        *,
        kind: Literal["PS", "ORG"] = "PS",
        idnat: str | None = None,
        surname: str | None = None,
        given_name: str | None = None,
        structure_id: str | None = None,
        organization: str | None = None,
        profession: str = "Médecin",
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> Issued:
        """S/MIME encryption certificate of a mailbox (RFC 8550 §3: address in SAN rfc822Name)."""
        san = [x509.RFC822Name(address)]
        usage = {"key_encipherment": True, "data_encipherment": True}
        if kind == "PS":
            subject = self.ps_subject(
                idnat or "8" + generate_luhn_id("1", 11),
                surname or address.split("@", 1)[0].upper(),
                given_name or "-",
                profession,
            )
            ca = self.personnes
        else:
            subject = self.org_subject(
                address, structure_id or "1" + generate_luhn_id("", 9), organization or "MSS TEST", None
            )
            ca = self.organisations
        return self._issue(
            ca,
            subject,
            eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION],
            key_usage=usage,
            san=san,
            not_before=not_before,
            not_after=not_after,
        )

    # ---------------------------------------------------------------- revocation

    def _issuer_of(self, cert: x509.Certificate) -> _CA:
        for ca in (self.personnes, self.organisations, self.root):
            if cert.issuer == ca.cert.subject:
                return ca
        raise ValueError("certificate was not issued by this PKI")

    def revoke(self, cert: x509.Certificate, reason: x509.ReasonFlags | None = None) -> None:
        """Mark ``cert`` revoked; it appears in the next CRLs written by ``write_crls``."""
        ca = self._issuer_of(cert)
        self._revoked.setdefault(ca.slug, {})[cert.serial_number] = (
            _now().isoformat(),
            reason.value if reason else None,
        )
        self._save_state()

    def build_crl(
        self,
        ca: _CA,
        *,
        this_update: datetime | None = None,
        next_update: timedelta | datetime = timedelta(days=7),
    ) -> x509.CertificateRevocationList:
        """CRL v2 of one CA (RFC 5280 §5) with CRL number and AKI."""
        last = this_update or _now() - timedelta(minutes=5)
        nxt = next_update if isinstance(next_update, datetime) else last + next_update
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.cert.subject)
            .last_update(last)
            .next_update(nxt)
            .add_extension(x509.CRLNumber(int(_now().timestamp())), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        )
        for serial, (when, reason) in sorted(self._revoked.get(ca.slug, {}).items()):
            rb = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(datetime.fromisoformat(when))
            if reason and reason != "unspecified":
                rb = rb.add_extension(x509.CRLReason(x509.ReasonFlags(reason)), critical=False)
            builder = builder.add_revoked_certificate(rb.build())
        return builder.sign(ca.key, hashes.SHA256())

    def write_crls(
        self,
        directory: Path | None = None,
        *,
        this_update: datetime | None = None,
        next_update: timedelta | datetime = timedelta(days=7),
        encoding: Literal["DER", "PEM"] = "DER",
    ) -> list[Path]:
        """One CRL per CA as ``<slug>.crl``; default directory is the one the CRL DPs point at."""
        out_dir = Path(directory) if directory is not None else self.directory / "crl"
        out_dir.mkdir(parents=True, exist_ok=True)
        enc = serialization.Encoding.DER if encoding == "DER" else serialization.Encoding.PEM
        paths = []
        for ca in (self.root, self.personnes, self.organisations):
            crl = self.build_crl(ca, this_update=this_update, next_update=next_update)
            path = out_dir / f"{ca.slug}.crl"
            tmp = path.with_suffix(".crl.tmp")
            tmp.write_bytes(crl.public_bytes(enc))
            os.replace(tmp, path)  # readers never see a half-written CRL
            paths.append(path)
        return paths


def _crl_dp(uri: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(uri)], relative_name=None, reasons=None, crl_issuer=None
            )
        ]
    )
