"""Key hand-over and certificate fingerprints.

* PKCS#12 (RFC 7292) is how a mailbox's private key reaches its owner once. It is protected with
  PBES2 / PBKDF2-HMAC-SHA256 / AES-256-CBC (RFC 8018) and an HMAC-SHA256 MAC: the profile OpenSSL
  3 writes by default and Thunderbird (NSS) imports. The legacy RC2/3DES profile is not offered.
* A patient's private key is stored wrapped: AES-256-GCM under a key derived from the patient's
  password with Argon2id (RFC 9106), and unwrapped only in memory for a portal session.
* ``x5t#S256`` (RFC 8705 §3.1) binds an e-CPS access token to the TLS client certificate: the
  base64url SHA-256 of the certificate's DER.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from argon2.low_level import Type as Argon2Type
from argon2.low_level import hash_secret_raw
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_der_private_key,
    pkcs12,
)

from .files import write_private

__all__ = [
    "Argon2Params",
    "KeyUnwrapError",
    "cert_sha256",
    "new_password",
    "pkcs12_bytes",
    "unwrap_private_key",
    "wrap_private_key",
    "write_pkcs12",
    "x5t_s256",
]

# PBKDF2 iterations: OpenSSL 3's default is 2048; NIST SP 800-132 and OWASP ask for far more.
# 200k keeps an import under a second on a laptop while making offline guessing costly.
PKCS12_KDF_ROUNDS = 200_000


def pkcs12_bytes(
    key: object,
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    password: str,
    *,
    friendly_name: str,
) -> bytes:
    """DER PKCS#12 with key, certificate and CA chain, AES-256 + PBKDF2 protected."""
    if not password:
        raise ValueError("a PKCS#12 for hand-over must have a password")
    encryption = (
        PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(PKCS12_KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password.encode("utf-8"))
    )
    return pkcs12.serialize_key_and_certificates(
        friendly_name.encode("utf-8"),
        key,  # type: ignore[arg-type]
        cert,
        list(chain) or None,
        encryption,
    )


def write_pkcs12(
    path: Path,
    key: object,
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    password: str,
    *,
    friendly_name: str,
) -> None:
    """Write the PKCS#12 file with mode 0600 from creation (it holds a private key)."""
    data = pkcs12_bytes(key, cert, chain, password, friendly_name=friendly_name)
    write_private(path, data)


def new_password(nbytes: int = 18) -> str:
    """Random URL-safe password (18 bytes -> 24 characters, 144 bits)."""
    return secrets.token_urlsafe(nbytes)


def _der(cert_or_der: x509.Certificate | bytes) -> bytes:
    if isinstance(cert_or_der, x509.Certificate):
        return cert_or_der.public_bytes(Encoding.DER)
    return bytes(cert_or_der)


def cert_sha256(cert_or_der: x509.Certificate | bytes) -> str:
    """Lower-case hex SHA-256 of the DER certificate (the fingerprint operators compare)."""
    return hashlib.sha256(_der(cert_or_der)).hexdigest()


def x5t_s256(cert: x509.Certificate | bytes) -> str:
    """RFC 8705 §3.1 ``x5t#S256``: base64url (no padding) SHA-256 of the DER certificate."""
    return base64.urlsafe_b64encode(hashlib.sha256(_der(cert)).digest()).rstrip(b"=").decode("ascii")


# ---------------------------------------------------------------------------------------------
# Password-wrapped private keys (patient inboxes)
# ---------------------------------------------------------------------------------------------

_WRAP_MAGIC = b"MSS-WRAPPED-KEY-1\n"


class KeyUnwrapError(ValueError):
    """Wrong password, or a wrapped key blob that was altered or is not ours."""


@dataclass(frozen=True)
class Argon2Params:
    """Argon2id cost. Default: RFC 9106 §4 second recommended option (t=3, 64 MiB, p=4)."""

    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 4


def _derive(password: str, salt: bytes, params: Argon2Params) -> bytes:
    return hash_secret_raw(
        password.encode("utf-8"),
        salt,
        time_cost=params.time_cost,
        memory_cost=params.memory_kib,
        parallelism=params.parallelism,
        hash_len=32,
        type=Argon2Type.ID,
    )


def wrap_private_key(key: object, password: str, *, params: Argon2Params = Argon2Params()) -> bytes:
    """Encrypt a private key (PKCS#8 DER inside) under ``password``.

    The blob is a magic line, a JSON header (KDF parameters, salt, nonce) and the GCM ciphertext;
    the header is the AEAD's associated data, so lowering the stored cost parameters breaks the tag
    instead of silently weakening the next unwrap.
    """
    if not password:
        raise ValueError("empty password")
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    header = json.dumps(
        {
            "kdf": "argon2id",
            "t": params.time_cost,
            "m": params.memory_kib,
            "p": params.parallelism,
            "salt": base64.b64encode(salt).decode(),
            "nonce": base64.b64encode(nonce).decode(),
            "aead": "A256GCM",
        },
        sort_keys=True,
    ).encode()
    plain = key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())  # type: ignore[attr-defined]
    ct = AESGCM(_derive(password, salt, params)).encrypt(nonce, plain, _WRAP_MAGIC + header)
    return _WRAP_MAGIC + header + b"\n" + base64.b64encode(ct) + b"\n"


def rewrap_private_key(
    blob: bytes, old_password: str, new_password: str, *, params: Argon2Params = Argon2Params()
) -> bytes:
    """A patient's password change: the same key under the new password, with a fresh salt
    and nonce. A wrong old password raises KeyUnwrapError and the caller keeps the old blob."""
    return wrap_private_key(unwrap_private_key(blob, old_password), new_password, params=params)


def unwrap_private_key(blob: bytes, password: str) -> object:
    """Inverse of ``wrap_private_key``; raises KeyUnwrapError on a wrong password or tampering."""
    if not blob.startswith(_WRAP_MAGIC):
        raise KeyUnwrapError("not a wrapped key")
    try:
        header, ct_b64 = blob[len(_WRAP_MAGIC) :].rstrip(b"\n").split(b"\n", 1)
        meta = json.loads(header)
        if meta.get("kdf") != "argon2id" or meta.get("aead") != "A256GCM":
            raise KeyUnwrapError("unsupported wrapping")
        params = Argon2Params(int(meta["t"]), int(meta["m"]), int(meta["p"]))
        salt, nonce = base64.b64decode(meta["salt"]), base64.b64decode(meta["nonce"])
        ct = base64.b64decode(ct_b64, validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyUnwrapError(f"malformed wrapped key: {exc}") from exc
    if params.memory_kib > 4 * 1024 * 1024 or params.time_cost > 100:
        raise KeyUnwrapError("unreasonable KDF parameters")  # a blob must not be a memory bomb
    try:
        plain = AESGCM(_derive(password, salt, params)).decrypt(nonce, ct, _WRAP_MAGIC + header)
    except InvalidTag:
        raise KeyUnwrapError("wrong password or altered key") from None
    return load_der_private_key(plain, None)
