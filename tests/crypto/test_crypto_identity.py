"""Subject -> Identity, and the Luhn rules of the national identifiers (MSSANTE.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from crypto.identity import (
    Identity,
    IdentityError,
    check_structure_id,
    identity_from_certificate,
    luhn_check_digit,
    luhn_valid,
)
from crypto.pki import generate_luhn_id

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # subject tests only: speed


def _cert(name: x509.Name, *, server: bool = False) -> x509.Certificate:
    now = datetime.now(UTC)
    eku = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AC TEST")]))
        .public_key(_KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .sign(_KEY, hashes.SHA256())
    )


def _ps_name(sn: str, cn: str, gn: str, title: str = "Pharmacien") -> x509.Name:
    """``SN=..+CN=..+GN=.., title=.., C=FR`` built RDN by RDN, as on a professional card."""
    return x509.Name(
        [
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "FR")]),
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.TITLE, title)]),
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(NameOID.SURNAME, sn),
                    x509.NameAttribute(NameOID.COMMON_NAME, cn),
                    x509.NameAttribute(NameOID.GIVEN_NAME, gn),
                ]
            ),
        ]
    )


def _org_name(cn: str, ou: str, o: str = "CLINIQUE TEST", st: str = "75") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, st),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, o),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


# ----------------------------------------------------------------------------- Luhn


@pytest.mark.parametrize(
    ("digits", "ok"),
    [
        ("10001045367", True),  # RPPS of 810001045367
        ("99700075122", True),  # RPPS of the MSSANTE.md example
        ("209270651", True),  # FINESS
        ("73282932000074", True),  # SIRET
        ("732829320", True),  # SIREN
        ("10001045368", False),
        ("", False),
        ("12a4", False),
        ("１２３", False),  # non-ASCII digits
    ],
)
def test_luhn_valid(digits: str, ok: bool) -> None:
    assert luhn_valid(digits) is ok


def test_luhn_check_digit_completes_payload() -> None:
    assert luhn_check_digit("1000104536") == "7"
    for payload in ("0", "7992739871", "20927065", "7328293200007"):
        assert luhn_valid(payload + luhn_check_digit(payload))


def test_generate_luhn_id() -> None:
    for _ in range(50):
        rpps = generate_luhn_id("1", 11)
        assert len(rpps) == 11 and rpps.startswith("1") and luhn_valid(rpps)


# ----------------------------------------------------------------------------- PS


def test_mssante_example_subject() -> None:
    cert = _cert(_ps_name("PHARMACH0007512", "899700075122", "CAROLE"))
    assert identity_from_certificate(cert) == Identity(
        kind="PS",
        identifier="899700075122",
        id_type="8",
        common_name="899700075122",
        surname="PHARMACH0007512",
        given_name="CAROLE",
        profession="Pharmacien",
    )


def test_ps_identity_from_issued_certificate(world) -> None:
    ident = identity_from_certificate(world.ps.cert)
    assert (ident.kind, ident.identifier, ident.id_type) == ("PS", "810001045367", "8")
    assert (ident.surname, ident.given_name, ident.profession) == ("DUPONT", "JEAN", "Médecin")


def test_ps_adeli() -> None:
    adeli = generate_luhn_id("75", 9)
    ident = identity_from_certificate(_cert(_ps_name("MARTIN", "0" + adeli, "ANNE", "Infirmier")))
    assert (ident.identifier, ident.id_type) == ("0" + adeli, "0")


@pytest.mark.parametrize(
    ("cn", "reason"),
    [
        ("899700075123", "bad_check_digit"),  # last RPPS digit changed
        ("89970007512", "bad_length"),
        ("999700075122", "unknown_id_type"),
        ("", "no_national_id"),
    ],
)
def test_ps_refusals(cn: str, reason: str) -> None:
    with pytest.raises(IdentityError) as exc:
        identity_from_certificate(_cert(_ps_name("PHARMACH0007512", cn or " ", "CAROLE")))
    assert exc.value.reason == reason


# ----------------------------------------------------------------------------- ORG / SERV


def test_org_identity(world) -> None:
    ident = identity_from_certificate(world.org.cert)
    assert ident == Identity(
        kind="ORG",
        identifier="1209270651",
        id_type="1",
        common_name="SERVICE CARDIOLOGIE",
        organization="HOPITAL TEST",
    )


def test_serv_identity(world) -> None:
    ident = identity_from_certificate(world.serv.cert)
    assert (ident.kind, ident.identifier, ident.id_type, ident.common_name) == (
        "SERV",
        "373282932000074",
        "3",
        "mss.hopital.test",
    )


@pytest.mark.parametrize(
    ("ou", "id_type"),
    [("1209270651", "1"), ("2732829320", "2"), ("373282932000074", "3"), ("12A0000015", "1"), ("12B1234567", "1")],
)
def test_structure_ids(ou: str, id_type: str) -> None:
    assert identity_from_certificate(_cert(_org_name("APP", ou))).id_type == id_type
    assert check_structure_id(ou) == id_type


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (_org_name("APP", "1209270652"), "bad_check_digit"),  # FINESS
        (_org_name("APP", "2732829321"), "bad_check_digit"),  # SIREN
        (_org_name("APP", "373282932000075"), "bad_check_digit"),  # SIRET
        (_org_name("APP", "120927065"), "bad_length"),
        (_org_name("APP", "9209270651"), "unknown_id_type"),
        (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "APP")]), "no_national_id"),
        (x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "1209270651")]), "unknown_subject_shape"),
        (
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "1209270651"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "2732829320"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "APP"),
                ]
            ),
            "unknown_subject_shape",
        ),
    ],
)
def test_structure_refusals(name: x509.Name, reason: str) -> None:
    with pytest.raises(IdentityError) as exc:
        identity_from_certificate(_cert(name))
    assert exc.value.reason == reason
    assert isinstance(exc.value, ValueError)
