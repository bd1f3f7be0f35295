"""`Authenticator.from_token` and `from_app_password` on a demo deployment: what the SMTP and
IMAP front ends will call for OAUTHBEARER/XOAUTH2 and PLAIN/LOGIN (issue 3 §4)."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from annuaire.model import AppPassword
from crypto.tokens import TokenIssuer
from crypto.validate import load_certificates
from mss.core import Core
from mss.credentials import create_app_password
from mss.errors import AuthenticationFailed


def _der(path: Path) -> bytes:
    return load_certificates(path.read_bytes())[0].public_bytes(serialization.Encoding.DER)


@pytest.fixture
async def core(deployment):
    c = await Core.open(deployment.settings())
    yield c
    await c.close()


def _issuer(deployment) -> TokenIssuer:
    s = deployment.settings()
    return TokenIssuer.load(s.path(s.tokens.signing_key), s.tokens.issuer)


def _parties(deployment):
    per = deployment.mailbox("PER", 0)
    per2 = deployment.mailbox("PER", 1)
    app = deployment.mailbox("APP")
    org = deployment.mailbox("ORG")
    return per, per2, app, org


# --------------------------------------------------------------------------------- tokens


async def test_token_on_org_certificate_acts_for_the_professional(deployment, core) -> None:
    per, _, app, org = _parties(deployment)
    lps_der = _der(deployment.path(app, "tls_cert"))
    token = _issuer(deployment).issue(per["idnat"], lps_der, audience="mss")
    principal = await core.auth.from_token(token, lps_der, None, peer="test")
    assert principal.kind == "PS" and principal.identifier == per["idnat"]
    assert principal.mailboxes == {per["address"], org["address"]}  # PER + the ORG they belong to
    assert principal.primary == per["address"] and principal.mechanism == "OAUTHBEARER"
    narrowed = await core.auth.from_token(token, lps_der, org["address"], mechanism="XOAUTH2")
    assert narrowed.mailboxes == {org["address"]} and narrowed.mechanism == "XOAUTH2"


def _sign(deployment, claims: dict, *, key=None, alg="ES256", kid=None) -> str:
    issuer = _issuer(deployment)
    return jwt.encode(claims, key or issuer.private_key, algorithm=alg, headers={"kid": kid or issuer.kid})


def _claims(deployment, bound_der: bytes, **over) -> dict:
    from crypto.keys import x5t_s256

    s = deployment.settings()
    now = int(time.time())
    per = deployment.mailbox("PER", 0)
    c = {
        "iss": s.tokens.issuer,
        "sub": per["idnat"],
        "aud": s.tokens.audience,
        "iat": now,
        "exp": now + 300,
        "acr": "eidas1",
        "cnf": {"x5t#S256": x5t_s256(bound_der)},
    }
    c.update(over)
    return c


def _hs256_with_public_key(deployment, bound_der: bytes) -> str:
    import base64
    import hashlib
    import hmac
    import json

    issuer = _issuer(deployment)
    pem = issuer.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    b = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=").decode()
    head = b(json.dumps({"alg": "HS256", "kid": issuer.kid}).encode())
    body = b(json.dumps(_claims(deployment, bound_der)).encode())
    sig = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b(sig)}"


TOKEN_REFUSALS = [
    # name, token(deployment, lps_der, per_der) -> str, certificate of the connection, reason
    (
        "expired",
        lambda d, lps, per: _sign(d, _claims(d, lps, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
        "lps",
        "token:expired",
    ),
    ("wrong audience", lambda d, lps, per: _sign(d, _claims(d, lps, aud="other")), "lps", "token:bad_audience"),
    ("wrong issuer", lambda d, lps, per: _sign(d, _claims(d, lps, iss="https://evil.test")), "lps", "token:bad_issuer"),
    ("bound to another certificate", lambda d, lps, per: _sign(d, _claims(d, per)), "lps", "token:cnf_mismatch"),
    ("alg none", lambda d, lps, per: jwt.encode(_claims(d, lps), None, algorithm="none"), "lps", "token:alg_none"),
    (
        "HMAC-signed with the public key",
        lambda d, lps, per: _hs256_with_public_key(d, lps),
        "lps",
        "token:hmac_refused",
    ),
    ("wrong acr", lambda d, lps, per: _sign(d, _claims(d, lps, acr="eidas0")), "lps", "token:bad_acr"),
    (
        "subject with a bad Luhn digit",
        lambda d, lps, per: _sign(d, _claims(d, lps, sub="810001045368")),
        "lps",
        "token:bad_subject",
    ),
    (
        "professional not in the directory",
        lambda d, lps, per: _sign(d, _claims(d, lps, sub="810001045367")),
        "lps",
        "not_in_directory",
    ),
    ("no client certificate", lambda d, lps, per: _sign(d, _claims(d, lps)), None, "no_certificate"),
    ("certificate from another PKI", lambda d, lps, per: _sign(d, _claims(d, lps)), "foreign", "untrusted"),
]


@pytest.fixture(scope="module")
def foreign_der(tmp_path_factory) -> bytes:
    from crypto.pki import TestPKI

    other = TestPKI.create(tmp_path_factory.mktemp("foreign"))
    return other.issue_org("1750001232", "HOPITAL DEMO", "LPS CABINET DEMO").cert.public_bytes(
        serialization.Encoding.DER
    )


@pytest.mark.parametrize("name,make,conn,reason", TOKEN_REFUSALS, ids=[r[0] for r in TOKEN_REFUSALS])
async def test_token_refusals(deployment, core, foreign_der, name, make, conn, reason) -> None:
    per, _, app, _ = _parties(deployment)
    lps_der = _der(deployment.path(app, "tls_cert"))
    per_der = _der(deployment.path(per, "tls_cert"))
    token = make(deployment, lps_der, per_der)
    presented = {"lps": lps_der, "per": per_der, "foreign": foreign_der, None: None}[conn]
    if conn == "foreign":
        # Same subject, other PKI: the token is even bound to it; the certificate must still fail.
        from crypto.keys import x5t_s256

        token = _sign(deployment, {**_claims(deployment, lps_der), "cnf": {"x5t#S256": x5t_s256(foreign_der)}})
    with pytest.raises(AuthenticationFailed) as exc:
        await core.auth.from_token(token, presented, None)
    assert exc.value.reason == reason
    assert exc.value.public in (
        "invalid token",
        "client certificate not accepted",
        "no mailbox for this professional",
        "a health-PKI client certificate is required",
    )
    assert "cnf" not in exc.value.public and "expired" not in exc.value.public  # generic on the wire


async def test_token_authzid_outside_the_professionals_mailboxes(deployment, core) -> None:
    per, per2, app, _ = _parties(deployment)
    lps_der = _der(deployment.path(app, "tls_cert"))
    token = _issuer(deployment).issue(per["idnat"], lps_der, audience="mss")
    with pytest.raises(AuthenticationFailed) as exc:
        await core.auth.from_token(token, lps_der, per2["address"])
    assert exc.value.reason == "authzid_not_entitled"


async def test_tokens_not_configured(deployment, core) -> None:
    per, _, app, _ = _parties(deployment)
    lps_der = _der(deployment.path(app, "tls_cert"))
    saved, core.auth.tokens = core.auth.tokens, None
    try:
        with pytest.raises(AuthenticationFailed) as exc:
            await core.auth.from_token("a.b.c", lps_der, None)
        assert exc.value.reason == "tokens_not_configured"
    finally:
        core.auth.tokens = saved


# ----------------------------------------------------------------------------- app passwords


async def _new_password(core, address: str) -> str:
    async with core.sessions() as s, s.begin():
        _, password = await create_app_password(s, address, label="test")
    return password


async def test_app_password_with_the_owners_certificate(deployment, core) -> None:
    per, _, _, _ = _parties(deployment)
    password = await _new_password(core, per["address"])
    der = _der(deployment.path(per, "tls_cert"))
    principal = await core.auth.from_app_password(per["address"].upper(), password, der, mechanism="LOGIN")
    assert principal.mailboxes == {per["address"]} and principal.acting_as == per["address"]
    assert principal.mechanism == "LOGIN" and principal.identifier == per["idnat"]
    # Typed with spaces or capitals, it still matches.
    await core.auth.from_app_password(per["address"], password.upper().replace("-", " - "), der)
    async with core.sessions() as s:
        rows = (await s.execute(select(AppPassword).where(AppPassword.address == per["address"]))).scalars().all()
    assert rows and all(r.hash.startswith("$argon2id$") and password not in r.hash for r in rows)
    assert any(r.last_used_at is not None for r in rows)


async def test_app_password_of_an_org_mailbox_for_a_member(deployment, core) -> None:
    per, _, _, org = _parties(deployment)
    password = await _new_password(core, org["address"])
    principal = await core.auth.from_app_password(org["address"], password, _der(deployment.path(per, "tls_cert")))
    assert principal.mailboxes == {org["address"]}


@pytest.mark.parametrize(
    "case,reason",
    [
        ("wrong password", "app_password:wrong"),
        ("right password, another principal's mailbox", "app_password:not_entitled"),
        ("another mailbox's password for my mailbox", "app_password:wrong"),
        ("mailbox without app password", "app_password:wrong"),
        ("no certificate", "no_certificate"),
        ("certificate of another PKI", "untrusted"),
    ],
)
async def test_app_password_refusals(deployment, core, foreign_der, case, reason) -> None:
    per, per2, app, _ = _parties(deployment)
    mine = await _new_password(core, per["address"])
    theirs = await _new_password(core, per2["address"])
    per_der = _der(deployment.path(per, "tls_cert"))
    username, password, der = {
        "wrong password": (per["address"], "aaaaaa-bbbbbb-cccccc-dddddd", per_der),
        "right password, another principal's mailbox": (per2["address"], theirs, per_der),
        "another mailbox's password for my mailbox": (per["address"], theirs, per_der),
        "mailbox without app password": (app["address"], mine, _der(deployment.path(app, "tls_cert"))),
        "no certificate": (per["address"], mine, None),
        "certificate of another PKI": (per["address"], mine, foreign_der),
    }[case]
    with pytest.raises(AuthenticationFailed) as exc:
        await core.auth.from_app_password(username, password, der)
    assert exc.value.reason == reason
    if reason.startswith("app_password"):
        assert exc.value.public == "invalid credentials"  # wrong and not-entitled look alike
