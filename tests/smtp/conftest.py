"""Fixtures of the SMTP front-end tests (see smtp_support.py for why in process)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from smtp_support import MAX_MESSAGE_SIZE, MAX_RECIPIENTS, SmtpServer

#: Small enough that oversize tests stay fast; SIZE must advertise exactly this.


@pytest.fixture(scope="session")
def smtp_server(deployment) -> SmtpServer:
    srv = SmtpServer(deployment).start(max_message_size=MAX_MESSAGE_SIZE, max_recipients=MAX_RECIPIENTS)
    yield srv
    srv.close()


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class BadCerts:
    foreign_ca: CertPair  # a real national id (Claire's) from a CA that is not an anchor
    expired: CertPair  # Claire's id, the deployment's own CA, validity ended yesterday
    unknown_id: CertPair  # the deployment's CA, a valid id that no mailbox belongs to


@pytest.fixture(scope="session")
def bad_certs(deployment, tmp_path_factory) -> BadCerts:
    from crypto.pki import TestPKI, generate_luhn_id

    tmp = tmp_path_factory.mktemp("smtp-certs")
    claire = deployment.mailbox("PER", 0)
    own = TestPKI.load(deployment.directory / "pki" / "ca")
    other = TestPKI.create(tmp / "other-ca")  # same CA names, other keys
    now = datetime.now(UTC)

    def write(name: str, issued) -> CertPair:
        pair = CertPair(tmp / f"{name}.crt", tmp / f"{name}.key")
        issued.write_pem(pair.cert, pair.key, with_chain=True)
        return pair

    surname, given = "MARTIN", "CLAIRE"
    return BadCerts(
        foreign_ca=write("foreign", other.issue_ps(claire["idnat"], surname, given)),
        expired=write(
            "expired",
            own.issue_ps(
                claire["idnat"], surname, given, not_before=now - timedelta(days=400), not_after=now - timedelta(days=1)
            ),
        ),
        unknown_id=write("unknown", own.issue_ps("8" + generate_luhn_id("1", 11), "INCONNU", "JEAN")),
    )
