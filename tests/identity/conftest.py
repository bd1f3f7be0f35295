"""Fixtures for identity tests: a small PKI of their own (no deployment needed) for tokens."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from identity_support import ISSUER

from crypto.pki import Issued, TestPKI
from crypto.tokens import TokenIssuer


@dataclass
class TokenWorld:
    pki: TestPKI
    org: Issued  # practice software's certificate (the connection's client cert)
    other_org: Issued  # another structure's certificate
    rsa_issuer: TokenIssuer
    ec_issuer: TokenIssuer
    tmp: Path


@pytest.fixture(scope="session")
def tokens_world(tmp_path_factory: pytest.TempPathFactory) -> TokenWorld:
    tmp = tmp_path_factory.mktemp("tokens")
    pki = TestPKI.create(tmp / "pki")
    return TokenWorld(
        pki=pki,
        org=pki.issue_org("1209270651", "HOPITAL TEST", "LPS CABINET"),
        other_org=pki.issue_org("1209270651", "HOPITAL TEST", "AUTRE LOGICIEL"),
        rsa_issuer=TokenIssuer.generate(ISSUER, algorithm="RS256"),
        ec_issuer=TokenIssuer.generate(ISSUER, algorithm="ES256"),
        tmp=tmp,
    )
