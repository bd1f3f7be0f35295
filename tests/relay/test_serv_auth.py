"""`Authenticator.from_server_certificate` and `CoreCredentials.operator`: who another
operator's MTA is, from its SERV certificate (validated with revocation, naming a
whitelisted domain that is not ours), and every refusal with its logged reason.

Real certificates of the deployment's test PKI, a real CRL, a real database whitelist."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from support import Deployment, drop_pg_database, make_deployment

from annuaire.whitelist import import_whitelist
from crypto.pki import TestPKI
from mss.auth import Authenticator, CoreCredentials
from mss.config import resolve_database_url
from mss.core import build_validator
from mss.db.engine import create_engine, sessionmaker
from mss.demo import PEER_OPERATOR, whitelist_xml
from mss.services import ClientConnection, Failure, Success

PEER = "peer.test"
THIRD = "third.test"


@dataclass
class Certs:
    good: bytes  # SERV for mx.peer.test + peer.test (whitelisted) + localhost (not)
    cn_only_names: bytes  # SERV whose only name is peer.test
    stranger: bytes  # SERV of a domain not on the whitelist
    revoked: bytes
    expired: bytes
    own: bytes  # SERV naming this operator's own domain
    org: bytes  # an ORG (structure) certificate
    ps: bytes  # a professional's card
    foreign: bytes  # SERV of peer.test from a CA that is not an anchor


@dataclass
class Env:
    dep: Deployment
    certs: Certs


def _der(issued) -> bytes:
    return issued.cert.public_bytes(Encoding.DER)


@pytest.fixture(scope="module")
def env(backend, tmp_path_factory) -> Env:
    import asyncio

    tmp = tmp_path_factory.mktemp(f"serv-auth-{backend}")
    dep, pg_name = make_deployment(tmp / "demo", backend)
    wl = tmp / "whitelist.xml"
    wl.write_bytes(whitelist_xml([dep.domain, PEER, THIRD]))

    async def load() -> None:
        engine = create_engine(resolve_database_url(dep.database_url, dep.directory))
        try:
            await import_whitelist(engine, wl)
        finally:
            await engine.dispose()

    asyncio.run(load())
    pki = TestPKI.load(dep.directory / "pki" / "ca")
    sid, org = PEER_OPERATOR.structure_id, PEER_OPERATOR.structure_name
    now = datetime.now(UTC)
    revoked = pki.issue_serv([PEER], sid, org)
    pki.revoke(revoked.cert)
    pki.write_crls()
    foreign = TestPKI.create(tmp / "foreign-ca").issue_serv([PEER], sid, org)
    ps = Path(dep.path(dep.mailbox("PER", 0), "tls_cert")).read_bytes()
    from cryptography import x509

    certs = Certs(
        good=_der(pki.issue_serv(["mx.peer.test", PEER, "localhost"], sid, org)),
        cn_only_names=_der(pki.issue_serv([PEER], sid, org)),
        stranger=_der(pki.issue_serv(["mx.stranger.test", "stranger.test"], sid, org)),
        revoked=_der(revoked),
        expired=_der(
            pki.issue_serv([PEER], sid, org, not_before=now - timedelta(days=400), not_after=now - timedelta(days=1))
        ),
        own=_der(pki.issue_serv(["localhost", dep.domain], sid, org)),
        org=_der(pki.issue_org(sid, org, "LPS PAIR")),
        ps=x509.load_pem_x509_certificates(ps)[0].public_bytes(Encoding.DER),
        foreign=_der(foreign),
    )
    yield Env(dep, certs)
    if pg_name:
        drop_pg_database(pg_name)


@pytest.fixture
async def auth(env):
    settings = env.dep.settings()
    engine = create_engine(settings.resolved_database_url)
    try:
        yield Authenticator(build_validator(settings), sessionmaker(engine), local_domains=[settings.domain])
    finally:
        await engine.dispose()


async def test_a_whitelisted_peer_is_a_serv_principal_of_its_whitelisted_domains(env, auth):
    principal = await auth.from_server_certificate(env.certs.good)
    assert principal.kind == "SERV"
    assert principal.identifier == PEER_OPERATOR.structure_id
    assert principal.display_name == PEER_OPERATOR.structure_name
    assert principal.domains == frozenset({PEER})  # mx.peer.test and localhost are not on the list
    assert principal.mailboxes == frozenset() and principal.default_mailbox is None
    assert principal.cert_sha256 and len(principal.cert_sha256) == 64


@pytest.mark.parametrize(
    ("which", "reason", "public"),
    [
        ("stranger", "domain_not_whitelisted", "whitelist"),
        ("revoked", "revoked", "not accepted"),
        ("expired", "expired", "not accepted"),
        ("foreign", "untrusted", "not accepted"),
        ("own", "own_domain", "this operator"),
        ("org", "not_serv", "SERV certificate is required"),
        ("ps", "not_serv", "SERV certificate is required"),
    ],
)
async def test_refusals_carry_their_reason(env, auth, which, reason, public):
    from mss.errors import AuthenticationFailed

    with pytest.raises(AuthenticationFailed) as err:
        await auth.from_server_certificate(getattr(env.certs, which))
    assert err.value.reason == reason
    assert public in err.value.public


async def test_no_certificate(auth):
    from mss.errors import AuthenticationFailed

    for der in (None, b""):
        with pytest.raises(AuthenticationFailed) as err:
            await auth.from_server_certificate(der)
        assert err.value.reason == "no_certificate"


async def test_operator_logs_one_line_per_result(env, auth, caplog):
    credentials = CoreCredentials(auth)
    caplog.set_level(logging.INFO, logger="mss.auth")
    ok = await credentials.operator(ClientConnection("smtp", "127.0.0.1:4000", env.certs.good))
    assert isinstance(ok, Success) and ok.principal.domains == frozenset({PEER})
    refused = await credentials.operator(ClientConnection("smtp", "127.0.0.1:4001", env.certs.revoked))
    assert isinstance(refused, Failure) and refused.kind == "refused" and not refused.close
    none = await credentials.operator(ClientConnection("smtp", "127.0.0.1:4002", None))
    assert isinstance(none, Failure) and none.kind == "refused"
    lines = [r.getMessage() for r in caplog.records if r.name == "mss.auth"]
    assert any(
        line.startswith("operator ok peer=127.0.0.1:4000 protocol=smtp kind=SERV")
        and f"id={PEER_OPERATOR.structure_id}" in line
        and f"domains={PEER}" in line
        for line in lines
    ), lines
    assert any(line.startswith("operator refused peer=127.0.0.1:4001") and "reason=revoked" in line for line in lines)
    assert any(
        line.startswith("operator refused peer=127.0.0.1:4002") and "reason=no_certificate" in line for line in lines
    )


async def test_an_unreachable_whitelist_is_unavailable_not_refused(env):
    settings = env.dep.settings()
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/unreachable")  # nothing listens
    try:
        credentials = CoreCredentials(Authenticator(build_validator(settings), sessionmaker(engine)))
        result = await credentials.operator(ClientConnection("smtp", "127.0.0.1:4003", env.certs.good))
    finally:
        await engine.dispose()
    assert isinstance(result, Failure) and result.kind == "unavailable"
