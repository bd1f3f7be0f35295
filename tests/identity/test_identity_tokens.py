"""e-CPS tokens: the issuer, the verifier, and one row per refusal (issue 3 §3)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from identity_support import AUDIENCE, ISSUER, PS_ID

from crypto.keys import x5t_s256
from crypto.tokens import TokenIssuer, TokenRejected, TokenVerifier, jwk_thumbprint


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(w, **over) -> dict:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": PS_ID,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "acr": "eidas1",
        "cnf": {"x5t#S256": x5t_s256(w.org.cert)},
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def _verifier(w, issuer: TokenIssuer | None = None, **kw) -> TokenVerifier:
    return TokenVerifier(
        (issuer or w.rsa_issuer).jwks(),
        issuer=ISSUER,
        audience=AUDIENCE,
        acr_values=kw.pop("acr_values", ["eidas1"]),
        skew=30,
        **kw,
    )


def _unsigned(header: dict, claims: dict, signature: bytes = b"") -> str:
    h = _b64u(json.dumps(header).encode())
    p = _b64u(json.dumps(claims).encode())
    return f"{h}.{p}.{_b64u(signature)}"


def _hmac_with_public_key(w) -> str:
    """The classic confusion: HS256 keyed with the issuer's *public* key (PEM), as a naive
    verifier that passes "the key" to a library accepting any algorithm would check it."""
    pem = w.rsa_issuer.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": w.rsa_issuer.kid}
    signing_input = f"{_b64u(json.dumps(header).encode())}.{_b64u(json.dumps(_claims(w)).encode())}"
    sig = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64u(sig)}"


def _signed(w, claims: dict, *, issuer: TokenIssuer | None = None, kid: str | None = None) -> str:
    issuer = issuer or w.rsa_issuer
    return jwt.encode(claims, issuer.private_key, algorithm=issuer.algorithm, headers={"kid": kid or issuer.kid})


# --------------------------------------------------------------------------------- happy path


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_issued_token_verifies_on_the_bound_connection(tokens_world, alg) -> None:
    w = tokens_world
    issuer = w.rsa_issuer if alg == "RS256" else w.ec_issuer
    token = issuer.issue(PS_ID, w.org.cert, ttl=120, audience=AUDIENCE)
    assert jwt.get_unverified_header(token) == {"alg": alg, "kid": issuer.kid, "typ": "at+jwt"}
    claims = _verifier(w, issuer).verify(token, w.org.cert.public_bytes(serialization.Encoding.DER))
    assert claims["sub"] == PS_ID and claims["cnf"] == {"x5t#S256": x5t_s256(w.org.cert)}
    assert claims["exp"] - claims["iat"] == 120


def test_jwks_has_rfc7638_kid_and_only_public_members(tokens_world) -> None:
    for issuer in (tokens_world.rsa_issuer, tokens_world.ec_issuer):
        (key,) = issuer.jwks()["keys"]
        assert key["kid"] == jwk_thumbprint(key) and key["use"] == "sig"
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


def test_rfc7638_example_thumbprint() -> None:
    # RFC 7638 §3.1 worked example.
    jwk = {
        "kty": "RSA",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_jwks_file_is_reread_after_key_rollover(tokens_world, tmp_path) -> None:
    w = tokens_world
    path = w.rsa_issuer.write_jwks(tmp_path / "jwks.json")
    verifier = TokenVerifier(path, issuer=ISSUER, audience=AUDIENCE)
    verifier.verify(w.rsa_issuer.issue(PS_ID, w.org.cert, audience=AUDIENCE), w.org.cert)
    new = TokenIssuer.generate(ISSUER)
    new.write_jwks(path)
    verifier.verify(new.issue(PS_ID, w.org.cert, audience=AUDIENCE), w.org.cert)
    with pytest.raises(TokenRejected) as exc:
        verifier.verify(w.rsa_issuer.issue(PS_ID, w.org.cert, audience=AUDIENCE), w.org.cert)
    assert exc.value.reason == "unknown_key"


def test_jwks_with_symmetric_key_is_refused() -> None:
    with pytest.raises(ValueError, match="symmetric"):
        TokenVerifier({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, issuer=ISSUER, audience=AUDIENCE)


def test_missing_jwks_file_refuses_rather_than_accepts(tokens_world, tmp_path) -> None:
    verifier = TokenVerifier(tmp_path / "absent.json", issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(TokenRejected) as exc:
        verifier.verify(
            tokens_world.rsa_issuer.issue(PS_ID, tokens_world.org.cert, audience=AUDIENCE), tokens_world.org.cert
        )
    assert exc.value.reason == "jwks_unavailable"


# ------------------------------------------------------------------------------ refusals


def _other_key_same_kid(w) -> str:
    forger = TokenIssuer.generate(ISSUER, algorithm="RS256")
    return _signed(w, _claims(w), issuer=forger, kid=w.rsa_issuer.kid)


REFUSALS = [
    # (name, token factory, certificate presented on the connection, expected reason)
    (
        "expired",
        lambda w: _signed(
            w, _claims(w, iat=int(time.time()) - 3600, nbf=int(time.time()) - 3600, exp=int(time.time()) - 600)
        ),
        "org",
        "expired",
    ),
    ("not yet valid", lambda w: _signed(w, _claims(w, nbf=int(time.time()) + 600)), "org", "not_yet_valid"),
    ("wrong audience", lambda w: _signed(w, _claims(w, aud="another-service")), "org", "bad_audience"),
    ("wrong issuer", lambda w: _signed(w, _claims(w, iss="https://evil.test/")), "org", "bad_issuer"),
    ("bound to another certificate", lambda w: _signed(w, _claims(w)), "other_org", "cnf_mismatch"),
    ("no certificate on the connection", lambda w: _signed(w, _claims(w)), None, "no_certificate"),
    ("not bound at all", lambda w: _signed(w, _claims(w, cnf=None)), "org", "missing_cnf"),
    ("cnf without x5t#S256", lambda w: _signed(w, _claims(w, cnf={"jkt": "abc"})), "org", "missing_cnf"),
    ("alg none", lambda w: _unsigned({"alg": "none", "typ": "JWT"}, _claims(w)), "org", "alg_none"),
    ("alg None (case)", lambda w: _unsigned({"alg": "None"}, _claims(w)), "org", "alg_none"),
    ("HMAC-signed with the public key", _hmac_with_public_key, "org", "hmac_refused"),
    ("HS512", lambda w: jwt.encode(_claims(w), "x" * 64, algorithm="HS512"), "org", "hmac_refused"),
    ("signed by another key under the issuer's kid", _other_key_same_kid, "org", "bad_signature"),
    ("unknown kid", lambda w: _signed(w, _claims(w), kid="not-a-key"), "org", "unknown_key"),
    (
        "EC token against an RSA key",
        lambda w: _signed(w, _claims(w), issuer=w.ec_issuer, kid=w.rsa_issuer.kid),
        "org",
        "bad_algorithm",
    ),
    (
        "tampered payload",
        lambda w: (
            lambda t: (
                t.split(".")[0]
                + "."
                + _b64u(json.dumps(_claims(w, sub="810002222225")).encode())
                + "."
                + t.split(".")[2]
            )
        )(_signed(w, _claims(w))),
        "org",
        "bad_signature",
    ),
    ("acr too weak", lambda w: _signed(w, _claims(w, acr="eidas0")), "org", "bad_acr"),
    ("no acr", lambda w: _signed(w, _claims(w, acr=None)), "org", "bad_acr"),
    ("no exp", lambda w: _signed(w, _claims(w, exp=None)), "org", "missing_claim"),
    ("no subject", lambda w: _signed(w, _claims(w, sub=None)), "org", "missing_claim"),
    ("garbage", lambda w: "not.a.jwt", "org", "malformed"),
]


@pytest.mark.parametrize("name,make,cert,reason", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_token_refusals(tokens_world, name, make, cert, reason) -> None:
    w = tokens_world
    token = make(w)
    presented = None if cert is None else getattr(w, cert).cert
    with pytest.raises(TokenRejected) as exc:
        _verifier(w).verify(token, presented)
    assert exc.value.reason == reason, str(exc.value)


def test_small_clock_skew_is_tolerated(tokens_world) -> None:
    w = tokens_world
    now = int(time.time())
    token = _signed(w, _claims(w, iat=now - 400, nbf=now - 400, exp=now - 10))  # expired 10 s ago
    assert _verifier(w).verify(token, w.org.cert)["sub"] == PS_ID
