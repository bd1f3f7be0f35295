"""e-CPS style access tokens bound to the TLS client certificate (RFC 8705 certificate binding).

Practice software (LPS) authenticates with the structure's ORG certificate (mutual TLS) and acts
for a professional with an access token issued by the national identity provider. The token is a
JWT (RFC 7519) whose ``cnf`` claim carries ``x5t#S256``, the SHA-256 thumbprint of the client
certificate it was issued to (RFC 8705 §3.1); a token replayed on a connection with another
certificate is refused.

* ``TokenIssuer``: a small issuer for tests and the demo (EC P-256 / ES256 by default, RSA /
  RS256 on request), with its public keys as a JWKS (RFC 7517) whose ``kid`` is the RFC 7638
  thumbprint.
* ``TokenVerifier``: signature against a configured JWKS (dict, file or URL), issuer, audience,
  expiry/not-before with a small skew, ``acr`` and the ``cnf`` binding. Only asymmetric
  algorithms are accepted: ``alg: none`` and every HMAC algorithm are refused *before* any key is
  looked at, so the classic confusion attack (an HS256 token "signed" with the issuer's public
  key as the HMAC secret, RFC 8725 §2.1/§3.1) can never reach a verifier; header members that
  point elsewhere for keys (``jku``, ``x5u``, ``jwk``) are ignored — keys come from the
  configuration only. JWKS entries of type ``oct`` (symmetric) are refused when loading.

Every refusal raises ``TokenRejected(reason)`` with a short code for the operator's log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from .files import write_private
from .keys import x5t_s256

__all__ = ["REASONS", "TokenIssuer", "TokenRejected", "TokenVerifier", "jwk_thumbprint"]

log = logging.getLogger(__name__)

REASONS = frozenset(
    {
        "malformed",
        "alg_none",
        "hmac_refused",
        "bad_algorithm",
        "unknown_key",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "bad_audience",
        "bad_issuer",
        "missing_claim",
        "bad_acr",
        "missing_cnf",
        "no_certificate",
        "cnf_mismatch",
        "jwks_unavailable",
    }
)

# Asymmetric algorithms only (RFC 7518 §3.3-3.5, RFC 8037). Never HS*, never "none".
_ALGS_FOR_KTY: dict[str, frozenset[str]] = {
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    "EC": frozenset({"ES256", "ES384", "ES512"}),
    "OKP": frozenset({"EdDSA"}),
}
_EC_ALG_FOR_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
ALLOWED_ALGORITHMS = frozenset().union(*_ALGS_FOR_KTY.values())
DEFAULT_ACR = "eidas1"  # Pro Santé Connect's level for e-CPS (configurable, see settings)


class TokenRejected(Exception):
    """A token was refused. ``reason`` is one of ``REASONS``; str() carries the detail."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) over the required members only."""
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}
    members = required.get(jwk.get("kty", ""))
    if members is None:
        raise ValueError(f"unsupported key type {jwk.get('kty')!r}")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return _b64u(hashlib.sha256(canonical.encode()).digest())


def _public_jwk(public_key: Any) -> dict[str, Any]:
    if isinstance(public_key, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public_key, as_dict=True)
        alg = "RS256"
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public_key, as_dict=True)
        alg = _EC_ALG_FOR_CURVE[jwk["crv"]]
    elif isinstance(public_key, ed25519.Ed25519PublicKey):
        jwk = OKPAlgorithm.to_jwk(public_key, as_dict=True)
        alg = "EdDSA"
    else:
        raise TypeError(f"unsupported key {type(public_key).__name__}")
    jwk = {k: v for k, v in jwk.items() if k in ("kty", "n", "e", "crv", "x", "y")}
    jwk.update(kid=jwk_thumbprint(jwk), use="sig", alg=alg)
    return jwk


# ---------------------------------------------------------------------------------------------
# Issuer (tests and demo)
# ---------------------------------------------------------------------------------------------


class TokenIssuer:
    """Signs e-CPS-like access tokens. Keep its key file private (0600)."""

    def __init__(self, private_key: Any, issuer: str) -> None:
        if not isinstance(private_key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
            raise TypeError("the token issuer needs an RSA, EC or Ed25519 private key")
        if isinstance(private_key, rsa.RSAPrivateKey) and private_key.key_size < 2048:
            raise ValueError("RSA keys below 2048 bits are refused")
        self.private_key = private_key
        self.issuer = issuer
        self.public_jwk = _public_jwk(private_key.public_key())
        self.algorithm: str = self.public_jwk["alg"]
        self.kid: str = self.public_jwk["kid"]

    @classmethod
    def generate(cls, issuer: str, *, algorithm: Literal["ES256", "RS256"] = "ES256") -> TokenIssuer:
        if algorithm == "ES256":
            key: Any = ec.generate_private_key(ec.SECP256R1())
        elif algorithm == "RS256":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            raise ValueError(f"unsupported issuer algorithm {algorithm!r}")
        return cls(key, issuer)

    @classmethod
    def load(cls, key_path: Path, issuer: str) -> TokenIssuer:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), None)
        return cls(key, issuer)

    def save_key(self, key_path: Path) -> Path:
        """PKCS#8 PEM, created 0600."""
        data = self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return write_private(key_path, data)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(self.public_jwk)]}

    def write_jwks(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.jwks(), indent=2) + "\n")
        os.replace(tmp, path)
        return path

    def issue(
        self,
        idnat: str,
        cnf_cert: x509.Certificate | bytes | None,
        *,
        ttl: int = 300,
        acr: str | None = DEFAULT_ACR,
        audience: str | Sequence[str] = "mss",
        now: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed JWT for professional ``idnat`` bound to ``cnf_cert`` (None: unbound, tests)."""
        now = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": idnat,
            "SubjectNameID": idnat,  # the claim name Pro Santé Connect uses for idNat_PS
            "aud": audience if isinstance(audience, str) else list(audience),
            "iat": now,
            "nbf": now,
            "exp": now + int(ttl),
            "jti": secrets.token_urlsafe(16),
        }
        if acr is not None:
            claims["acr"] = acr
        if cnf_cert is not None:
            claims["cnf"] = {"x5t#S256": x5t_s256(cnf_cert)}
        if extra:
            claims.update(extra)
        return jwt.encode(
            claims, self.private_key, algorithm=self.algorithm, headers={"kid": self.kid, "typ": "at+jwt"}
        )


# ---------------------------------------------------------------------------------------------
# Verifier
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    kid: str | None
    kty: str
    alg: str | None
    key: Any


def _parse_jwks(doc: Any) -> list[_Key]:
    if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
        raise ValueError("a JWKS is an object with a 'keys' array")
    keys: list[_Key] = []
    for jwk in doc["keys"]:
        if not isinstance(jwk, Mapping):
            raise ValueError("JWKS entry is not an object")
        kty = jwk.get("kty")
        if kty == "oct":
            raise ValueError("symmetric (oct) keys are refused in a JWKS")
        if kty not in _ALGS_FOR_KTY:
            log.warning("JWKS: key type %r ignored", kty)
            continue
        if jwk.get("use", "sig") != "sig":
            continue
        if "d" in jwk:
            raise ValueError("a JWKS for verification must not contain private keys")
        loader = {"RSA": RSAAlgorithm, "EC": ECAlgorithm, "OKP": OKPAlgorithm}[kty]
        key = loader.from_jwk(dict(jwk))
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
            raise ValueError("RSA keys below 2048 bits are refused")
        alg = jwk.get("alg")
        if alg is not None and alg not in _ALGS_FOR_KTY[kty]:
            raise ValueError(f"JWKS key {jwk.get('kid')!r}: algorithm {alg!r} not allowed")
        keys.append(_Key(jwk.get("kid"), kty, alg, key))
    return keys


class _JWKSSource:
    """Keys from a dict, a file (re-read when it changes) or an http(s) URL (cached)."""

    URL_TTL_S = 3600.0
    URL_MIN_REFETCH_S = 30.0

    def __init__(self, source: Mapping[str, Any] | str | Path, *, timeout: float = 5.0) -> None:
        self._lock = threading.Lock()
        self._keys: list[_Key] = []
        self._stamp: Any = None
        self._fetched_at = 0.0
        self.timeout = timeout
        self.url: str | None = None
        self.path: Path | None = None
        if isinstance(source, Mapping):
            self._keys = _parse_jwks(source)
        elif isinstance(source, str) and source.startswith(("https://", "http://")):
            self.url = source
        else:
            self.path = Path(source)

    def keys(self, *, force: bool = False) -> list[_Key]:
        if self.path is not None:
            try:
                st = self.path.stat()
            except OSError as exc:
                raise TokenRejected("jwks_unavailable", f"{self.path}: {exc}") from exc
            stamp = (st.st_mtime_ns, st.st_size)
            with self._lock:
                if stamp != self._stamp:
                    try:
                        self._keys = _parse_jwks(json.loads(self.path.read_text()))
                    except (OSError, ValueError) as exc:
                        raise TokenRejected("jwks_unavailable", f"{self.path}: {exc}") from exc
                    self._stamp = stamp
                return list(self._keys)
        if self.url is not None:
            now = time.monotonic()
            with self._lock:
                age = now - self._fetched_at
                due = not self._keys or age > self.URL_TTL_S or (force and age > self.URL_MIN_REFETCH_S)
                if due:
                    try:
                        with urllib.request.urlopen(self.url, timeout=self.timeout) as resp:  # noqa: S310 - configured URL
                            self._keys = _parse_jwks(json.loads(resp.read(1 << 20)))
                        self._fetched_at = now
                    except (OSError, ValueError) as exc:
                        if not self._keys:
                            raise TokenRejected("jwks_unavailable", f"{self.url}: {exc}") from exc
                        log.warning("JWKS refresh from %s failed (%s); keeping the previous keys", self.url, exc)
                return list(self._keys)
        return list(self._keys)


class TokenVerifier:
    """Checks access tokens against one issuer's JWKS. Thread-safe; ``verify`` is synchronous."""

    def __init__(
        self,
        jwks: Mapping[str, Any] | str | Path,
        *,
        issuer: str,
        audience: str,
        acr_values: Sequence[str] = (),
        skew: float = 30,
        idnat_claims: Sequence[str] = ("sub", "SubjectNameID"),
    ) -> None:
        if not issuer or not audience:
            raise ValueError("issuer and audience are required")
        self._source = _JWKSSource(jwks)
        self.issuer = issuer
        self.audience = audience
        self.acr_values = frozenset(acr_values)
        self.skew = skew
        self.idnat_claims = tuple(idnat_claims)

    def _select_key(self, header: Mapping[str, Any], alg: str) -> _Key:
        kid = header.get("kid")
        for force in (False, True):
            keys = self._source.keys(force=force)
            if kid is not None:
                found = [k for k in keys if k.kid == kid]
            else:
                # No kid: only unambiguous when the JWKS holds exactly one key usable for alg.
                found = [k for k in keys if alg in _ALGS_FOR_KTY[k.kty]]
                if len(found) > 1:
                    raise TokenRejected("unknown_key", "token without kid and several candidate keys")
            if found:
                return found[0]
        raise TokenRejected("unknown_key", f"kid {kid!r} not in the JWKS")

    def verify(self, token: str, tls_client_cert: x509.Certificate | bytes | None) -> dict[str, Any]:
        """Claims of an acceptable token presented on a connection with ``tls_client_cert``."""
        if not isinstance(token, str) or token.count(".") != 2 or len(token) > 16384:
            raise TokenRejected("malformed", "not a compact JWS")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenRejected("malformed", str(exc)) from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none" or not alg:
            raise TokenRejected("alg_none", "unsigned token")
        if alg.upper().startswith("HS"):
            raise TokenRejected("hmac_refused", f"symmetric algorithm {alg}")
        if alg not in ALLOWED_ALGORITHMS:
            raise TokenRejected("bad_algorithm", f"algorithm {alg!r} not allowed")
        key = self._select_key(header, alg)
        if alg not in _ALGS_FOR_KTY[key.kty] or (key.alg is not None and key.alg != alg):
            raise TokenRejected("bad_algorithm", f"algorithm {alg} does not match key {key.kid!r}")
        options: dict[str, Any] = {"require": ["exp", "iat", "iss", "aud"]}
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.skew,
                options=options,
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenRejected("expired", str(exc)) from exc
        except (jwt.ImmatureSignatureError, jwt.InvalidIssuedAtError) as exc:
            raise TokenRejected("not_yet_valid", str(exc)) from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenRejected("bad_audience", str(exc)) from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenRejected("bad_issuer", str(exc)) from exc
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected("missing_claim", str(exc)) from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenRejected("bad_signature", str(exc)) from exc
        except jwt.PyJWTError as exc:
            raise TokenRejected("malformed", str(exc)) from exc
        if self.acr_values and claims.get("acr") not in self.acr_values:
            raise TokenRejected("bad_acr", f"acr {claims.get('acr')!r} not in {sorted(self.acr_values)}")
        if not self.idnat(claims):
            raise TokenRejected("missing_claim", "no subject (professional id) in the token")
        cnf = claims.get("cnf")
        bound = cnf.get("x5t#S256") if isinstance(cnf, Mapping) else None
        if not isinstance(bound, str) or not bound:
            raise TokenRejected("missing_cnf", "token is not bound to a certificate (cnf x5t#S256)")
        if tls_client_cert is None or (isinstance(tls_client_cert, (bytes, bytearray)) and not tls_client_cert):
            raise TokenRejected("no_certificate", "no client certificate on this connection")
        if not hmac.compare_digest(bound.encode(), x5t_s256(tls_client_cert).encode()):
            raise TokenRejected("cnf_mismatch", "token bound to another certificate")
        return claims

    def idnat(self, claims: Mapping[str, Any]) -> str | None:
        for name in self.idnat_claims:
            value = claims.get(name)
            if isinstance(value, str) and value:
                return value
        return None
