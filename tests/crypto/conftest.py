"""Session-wide test PKI: RSA key generation is the slow part, so every certificate the crypto
tests need is issued once here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crypto.identity import luhn_check_digit
from crypto.pki import Issued, TestPKI

NOW = datetime.now(UTC)
PS_ID = "810001045367"  # 8 + RPPS 10001045367 (Luhn-valid)
FINESS_ID = "1209270651"  # 1 + FINESS 209270651 (Luhn-valid)
REVOKED_ID = "8" + "1000200000" + luhn_check_digit("1000200000")


@dataclass
class World:
    pki: TestPKI
    other: TestPKI  # same CA names, other keys: the "wrong CA"
    anchors_path: Path
    root_only_path: Path
    crl_paths: list[Path]
    ps: Issued
    org: Issued
    serv: Issued
    enc: Issued
    enc2: Issued
    expired: Issued
    future: Issued
    revoked: Issued
    foreign_ps: Issued
    tmp: Path


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    tmp = tmp_path_factory.mktemp("crypto")
    pki = TestPKI.create(tmp / "pki")
    other = TestPKI.create(tmp / "other-pki")
    revoked = pki.issue_ps(REVOKED_ID, "REVOQUE", "PAUL")
    pki.revoke(revoked.cert)
    anchors = pki.write_trust_anchors(tmp / "anchors.pem")
    root_only = tmp / "root-only.pem"
    root_only.write_bytes(
        pki.trust_anchors_pem().split(b"-----END CERTIFICATE-----\n")[0] + b"-----END CERTIFICATE-----\n"
    )
    return World(
        pki=pki,
        other=other,
        anchors_path=anchors,
        root_only_path=root_only,
        crl_paths=pki.write_crls(tmp / "crl"),
        ps=pki.issue_ps(PS_ID, "DUPONT", "JEAN"),
        org=pki.issue_org(FINESS_ID, "HOPITAL TEST", "SERVICE CARDIOLOGIE"),
        serv=pki.issue_serv(
            ["mss.hopital.test", "mx.hopital.test"], "3" + "73282932000074", "HOPITAL TEST", ip_addresses=["127.0.0.1"]
        ),
        enc=pki.issue_encryption("jean.dupont@hopital.mssante.test", idnat=PS_ID, surname="DUPONT", given_name="JEAN"),
        enc2=pki.issue_encryption(
            "cardio@hopital.mssante.test", kind="ORG", structure_id=FINESS_ID, organization="HOPITAL TEST"
        ),
        expired=pki.issue_ps(
            PS_ID, "DUPONT", "JEAN", not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=1)
        ),
        future=pki.issue_ps(
            PS_ID, "DUPONT", "JEAN", not_before=NOW + timedelta(days=2), not_after=NOW + timedelta(days=400)
        ),
        revoked=revoked,
        foreign_ps=other.issue_ps(PS_ID, "DUPONT", "JEAN"),
        tmp=tmp,
    )
