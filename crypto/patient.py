"""Zero-access encryption for patient inboxes: every client step doable with WebCrypto alone.

The scheme, its byte formats and its threat model are in ``docs/patient-keys.md``; this module is
its server-side half plus the primitives the reference client (``crypto.patient_client``) uses.
Every client operation maps to one WebCrypto call, named in the docstrings below, so that the
portal's JavaScript can be checked byte for byte against ``tests/crypto/patient_vectors.json``.

Mail to a patient (RFC 8551 §3.3, RFC 5652, RFC 5083, RFC 5084, RFC 8017, RFC 4055):

* ``AuthEnvelopedData`` (default): AES-256-GCM content encryption, 12-byte nonce, 16-byte ICV,
  no authenticated attributes; ``smime-type=authEnveloped-data``.
* ``EnvelopedData`` (option): AES-256-CBC, 16-byte IV, PKCS#7 padding;
  ``smime-type=enveloped-data``. CBC carries no integrity check; it exists for readers that do
  not know AuthEnvelopedData.
* One ``KeyTransRecipientInfo`` with RSAES-OAEP, SHA-256, MGF1-SHA-256, empty label (RFC 4055 §4.1
  ``rSAES-OAEP-SHA256-Params``), naming the patient's certificate by subjectKeyIdentifier
  (default; version 2) or issuerAndSerialNumber (version 0).

Keys (RFC 8018, RFC 5869, RFC 9106): from a secret (the activation code, later the password),
PBKDF2-HMAC-SHA256 gives a 256-bit master secret; HKDF-SHA256 with an empty salt and two ``info``
strings gives an authentication key (sent to the server, which keeps only its Argon2id hash) and
a wrapping key (AES-256-GCM, never leaves the client) under which the PKCS#8 private key is
wrapped exactly as ``crypto.subtle.wrapKey("pkcs8", key, wrapKey, {name: "AES-GCM", iv})`` does.

This module holds no state and does no I/O: storing records, throttling logins and choosing who
may read what belong to the core.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2 import Type as Argon2Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_der_private_key,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .ins import check_ins

__all__ = [
    "ACTIVATION_ALPHABET",
    "AUTH_INFO",
    "PBKDF2_ITERATIONS",
    "RSA_BITS",
    "WRAP_INFO",
    "GCMParameters",
    "KdfParams",
    "PatientCryptoError",
    "ProvisionedPatient",
    "WrappedKey",
    "auth_key_needs_rehash",
    "decoy_kdf_params",
    "decrypt_cms",
    "decrypt_patient_message",
    "derive_keys",
    "derive_master",
    "encrypt_cms",
    "encrypt_for_patient",
    "hash_auth_key",
    "new_activation_code",
    "new_patient_keys",
    "normalise_activation_code",
    "parse_auth_key",
    "provision_patient",
    "public_key_matches",
    "secret_bytes",
    "unwrap_private_key",
    "verify_auth_key",
    "wrap_private_key",
]

# ---------------------------------------------------------------------------------------------
# Parameters (docs/patient-keys.md "Parameters" says why each is what it is)
# ---------------------------------------------------------------------------------------------

RECORD_VERSION = 1
KDF_NAME = "PBKDF2-SHA256"
#: OWASP Password Storage Cheat Sheet (2023): PBKDF2-HMAC-SHA256, 600,000 iterations.
PBKDF2_ITERATIONS = 600_000
#: Above this a record is refused: a hostile record must not freeze the client for minutes.
MAX_ITERATIONS = 10_000_000
SALT_BYTES = 16
GCM_IV_BYTES = 12
GCM_TAG_BYTES = 16
KEY_BYTES = 32
#: HKDF-SHA256 ``info`` strings (RFC 5869 §3.2): one per derived key, versioned with the record.
AUTH_INFO = b"mss patient auth v1"
WRAP_INFO = b"mss patient wrap v1"
#: RSA modulus of patient keys: 128-bit security (NIST SP 800-57 Part 1, table 2) for keys that
#: protect mail kept for years; 2048 would be 112-bit, acceptable only until 2030.
RSA_BITS = 3072
#: Argon2id of the authentication key: OWASP's minimum (m=19 MiB, t=2, p=1). The input is a
#: 256-bit random key, not a password, so the cost does not protect it; see hash_auth_key.
ARGON2_TIME_COST = 2
ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_PARALLELISM = 1
#: Crockford's base 32 (no I, L, O, U): 5 bits a symbol, nothing that reads as another symbol.
ACTIVATION_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ACTIVATION_GROUPS = 4  # 4 groups of 4 symbols = 80 bits
_ACTIVATION_GROUP_LEN = 4
_ACTIVATION_READS_AS = {"O": "0", "I": "1", "L": "1"}  # Crockford decoding: what a reader meant
_ACTIVATION_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212._/]")
#: RFC 5280 §4.1.2.5: "no well-defined expiration date". A patient key ends by crypto-shredding.
NO_EXPIRY = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)

_OAEP = asym_padding.OAEP(mgf=asym_padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)

ContentCipher = Literal["aes-256-gcm", "aes-256-cbc"]
RecipientId = Literal["ski", "issuer_serial"]


class PatientCryptoError(ValueError):
    """A patient key or message operation was refused.

    ``reason`` is a short machine code: ``wrong_secret`` (wrong password or activation code, or an
    altered wrapped key: AES-GCM cannot tell them apart), ``bad_record``, ``weak_record`` (KDF
    cost below the client's floor), ``bad_code``, ``bad_auth_key``, ``bad_hash``, ``not_smime``,
    ``bad_cms``, ``unsupported``, ``no_recipient`` (no RecipientInfo opens with this key),
    ``altered`` (the message was modified), ``bad_header``, ``key_mismatch`` (the unwrapped key
    is not the certificate's), ``weak_password`` (reference client's password rule).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# Records: the KDF parameters and the wrapped key, as stored beside the patient space
# ---------------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    """RFC 4648 §4 base64, padded (what ``btoa`` gives)."""
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise PatientCryptoError("bad_record", f"{what} must be a base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise PatientCryptoError("bad_record", f"{what} is not base64: {exc}") from None


def _load_json(data: Mapping[str, Any] | str | bytes) -> Mapping[str, Any]:
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise PatientCryptoError("bad_record", f"record is not JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise PatientCryptoError("bad_record", "record must be a JSON object")
    return data


@dataclass(frozen=True)
class KdfParams:
    """What the client needs to derive its keys: ``{"v", "kdf", "iterations", "salt"}``.

    The server hands these out *before* authentication (the client needs them to compute the
    authentication key), so they must not reveal whether an account exists: see
    :func:`decoy_kdf_params`. The wrapped key itself is handed out only after authentication.
    """

    salt: bytes
    iterations: int = PBKDF2_ITERATIONS
    kdf: str = KDF_NAME
    v: int = RECORD_VERSION

    @classmethod
    def new(cls, iterations: int = PBKDF2_ITERATIONS) -> KdfParams:
        """Fresh random salt: every wrap gets its own (a password change too)."""
        return cls(salt=secrets.token_bytes(SALT_BYTES), iterations=iterations)

    def __post_init__(self) -> None:
        if self.v != RECORD_VERSION or self.kdf != KDF_NAME:
            raise PatientCryptoError("unsupported", f"record version {self.v!r} / kdf {self.kdf!r} unknown")
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int):
            raise PatientCryptoError("bad_record", "iterations must be an integer")
        if not 1 <= self.iterations <= MAX_ITERATIONS:
            raise PatientCryptoError("bad_record", f"iterations {self.iterations} outside 1..{MAX_ITERATIONS}")
        if not isinstance(self.salt, bytes) or not SALT_BYTES <= len(self.salt) <= 64:
            raise PatientCryptoError("bad_record", f"salt must be {SALT_BYTES} to 64 bytes")

    def to_json(self) -> dict[str, Any]:
        return {"v": self.v, "kdf": self.kdf, "iterations": self.iterations, "salt": _b64(self.salt)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | bytes) -> KdfParams:
        d = _load_json(data)
        try:
            return cls(salt=_unb64(d["salt"], "salt"), iterations=d["iterations"], kdf=d["kdf"], v=d["v"])
        except KeyError as exc:
            raise PatientCryptoError("bad_record", f"record lacks {exc}") from None


@dataclass(frozen=True)
class WrappedKey:
    """The stored blob: ``{"v":1, "kdf":"PBKDF2-SHA256", "iterations", "salt", "iv", "wrapped"}``.

    ``wrapped`` is AES-256-GCM(wrap key, iv, PKCS#8 DER) as ciphertext || 16-byte tag, with no
    additional data: the output of WebCrypto ``wrapKey("pkcs8", ...)``. The KDF parameters need no
    separate integrity: they determine the wrapping key, so altering any of them fails the tag.
    """

    params: KdfParams
    iv: bytes
    wrapped: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.iv, bytes) or len(self.iv) != GCM_IV_BYTES:
            raise PatientCryptoError("bad_record", f"iv must be {GCM_IV_BYTES} bytes")
        if not isinstance(self.wrapped, bytes) or not GCM_TAG_BYTES < len(self.wrapped) <= 64 * 1024:
            raise PatientCryptoError("bad_record", "wrapped key has an impossible length")

    def to_json(self) -> dict[str, Any]:
        return {**self.params.to_json(), "iv": _b64(self.iv), "wrapped": _b64(self.wrapped)}

    def dumps(self) -> str:
        """Canonical JSON text (sorted keys, no blanks): what the server stores and serves."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | bytes) -> WrappedKey:
        d = _load_json(data)
        try:
            return cls(KdfParams.from_json(d), _unb64(d["iv"], "iv"), _unb64(d["wrapped"], "wrapped"))
        except KeyError as exc:
            raise PatientCryptoError("bad_record", f"record lacks {exc}") from None


def decoy_kdf_params(server_secret: bytes, login: str, iterations: int = PBKDF2_ITERATIONS) -> KdfParams:
    """Stable, plausible KDF parameters for a login that has no patient space.

    Returning "no such account" before authentication would let anyone test which INS have a
    patient space. The salt is HMAC-SHA256(server_secret, label || login), so it is the same at
    every request for the same login and unpredictable without the server's secret.
    """
    if len(server_secret) < 16:
        raise ValueError("decoy secret must be at least 16 bytes")
    mac = hmac.new(server_secret, b"mss patient decoy salt v1\x00" + login.encode("utf-8"), hashlib.sha256)
    return KdfParams(salt=mac.digest()[:SALT_BYTES], iterations=iterations)


# ---------------------------------------------------------------------------------------------
# Secrets: activation codes and passwords
# ---------------------------------------------------------------------------------------------


def new_activation_code(groups: int = ACTIVATION_GROUPS) -> str:
    """A one-time activation code such as ``7KQ2-M9XD-4T1B-ZR6H`` (5 bits a symbol, 80 bits).

    Printed once by the operator's CLI and given to the patient out of band; it unlocks the
    key until the patient chooses a password.
    """
    if groups < ACTIVATION_GROUPS:
        raise ValueError(f"an activation code has at least {ACTIVATION_GROUPS} groups (80 bits)")
    symbols = "".join(secrets.choice(ACTIVATION_ALPHABET) for _ in range(groups * _ACTIVATION_GROUP_LEN))
    return "-".join(symbols[i : i + _ACTIVATION_GROUP_LEN] for i in range(0, len(symbols), _ACTIVATION_GROUP_LEN))


def normalise_activation_code(typed: str) -> str:
    """The code as it enters the KDF: upper case, no separators, O read as 0 and I, L as 1.

    Spaces, hyphens (and Unicode dashes), dots, slashes and underscores are dropped wherever they
    are; NFKC first, so full-width characters typed on a phone count as the ASCII ones.
    In JavaScript: ``s.normalize("NFKC").toUpperCase()``, remove ``/[\\s\\-\\u2010-\\u2015\\u2212._\\/]/g``,
    map O->0, I->1, L->1.
    """
    code = _ACTIVATION_SEPARATORS.sub("", unicodedata.normalize("NFKC", typed)).upper()
    code = "".join(_ACTIVATION_READS_AS.get(c, c) for c in code)
    if not code:
        raise PatientCryptoError("bad_code", "empty activation code")
    bad = sorted({c for c in code if c not in ACTIVATION_ALPHABET})
    if bad:
        raise PatientCryptoError("bad_code", f"activation code has characters outside its alphabet: {''.join(bad)!r}")
    if len(code) < ACTIVATION_GROUPS * _ACTIVATION_GROUP_LEN or len(code) % _ACTIVATION_GROUP_LEN:
        raise PatientCryptoError(
            "bad_code", f"activation code has {len(code)} symbols; expected groups of 4, at least 16"
        )
    return code


def secret_bytes(secret: str | bytes) -> bytes:
    """The octets a secret enters PBKDF2 as: UTF-8 of the NFC form for text (RFC 8265 §4 uses NFC
    too), as given for bytes. JavaScript: ``new TextEncoder().encode(s.normalize("NFC"))``.

    Passwords are not trimmed or case-folded: what the patient typed is what they chose.
    """
    data = secret if isinstance(secret, bytes) else unicodedata.normalize("NFC", secret).encode("utf-8")
    if not data:
        raise PatientCryptoError("wrong_secret", "empty secret")
    return data


# ---------------------------------------------------------------------------------------------
# Derivation, wrapping, authentication-key hashing
# ---------------------------------------------------------------------------------------------


def derive_master(secret: str | bytes, params: KdfParams) -> bytes:
    """PBKDF2-HMAC-SHA256(secret, salt, iterations) -> 32 bytes (RFC 8018 §5.2).

    WebCrypto: ``importKey("raw", secret, "PBKDF2", false, ["deriveBits"])`` then
    ``deriveBits({name: "PBKDF2", hash: "SHA-256", salt, iterations}, key, 256)``.
    """
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=params.salt, iterations=params.iterations)
    return kdf.derive(secret_bytes(secret))


def _hkdf(master: bytes, info: bytes) -> bytes:
    # salt=None is RFC 5869 §2.2's "HashLen zeros", which is what an empty WebCrypto salt gives
    # (an HMAC key is zero-padded to the block size).
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(master)


def derive_keys(secret: str | bytes, params: KdfParams) -> tuple[bytes, bytes]:
    """(authentication key, wrapping key), each 32 bytes, from one PBKDF2 run and two HKDFs.

    WebCrypto: ``importKey("raw", master, "HKDF", false, ["deriveBits"])``, then
    ``deriveBits({name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info}, key, 256)`` with
    ``info`` = ``"mss patient auth v1"`` and ``"mss patient wrap v1"`` (ASCII). The wrapping key
    is imported as ``{name: "AES-GCM"}``, non-extractable, usages ``["wrapKey", "unwrapKey"]``.
    Distinct ``info`` strings make the two outputs independent PRF values: knowing the
    authentication key (the server sees it at every login) tells nothing of the wrapping key.
    """
    master = derive_master(secret, params)
    return _hkdf(master, AUTH_INFO), _hkdf(master, WRAP_INFO)


def _pkcs8(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())


def _check_key32(key: bytes, what: str, reason: str) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise PatientCryptoError(reason, f"{what} must be {KEY_BYTES} bytes")


def wrap_private_key(
    key: rsa.RSAPrivateKey, wrap_key: bytes, *, params: KdfParams, iv: bytes | None = None
) -> WrappedKey:
    """AES-256-GCM(wrap_key, iv, PKCS#8 DER of ``key``) -> the stored record.

    WebCrypto: ``wrapKey("pkcs8", privateKey, wrapKey, {name: "AES-GCM", iv})`` (tagLength 128,
    no additionalData). ``params`` are the ones ``wrap_key`` was derived with; ``iv`` is random
    unless a test vector fixes it. A (key, iv) pair is never reused: every wrap has a fresh salt,
    hence a fresh wrapping key, and a fresh IV.
    """
    _check_key32(wrap_key, "wrapping key", "bad_record")
    iv = secrets.token_bytes(GCM_IV_BYTES) if iv is None else iv
    if len(iv) != GCM_IV_BYTES:
        raise PatientCryptoError("bad_record", f"iv must be {GCM_IV_BYTES} bytes")
    return WrappedKey(params, iv, AESGCM(wrap_key).encrypt(iv, _pkcs8(key), None))


def unwrap_private_key(blob: WrappedKey | Mapping[str, Any] | str | bytes, wrap_key: bytes) -> rsa.RSAPrivateKey:
    """Inverse of :func:`wrap_private_key`. WebCrypto: ``unwrapKey("pkcs8", wrapped, wrapKey,
    {name: "AES-GCM", iv}, {name: "RSA-OAEP", hash: "SHA-256"}, false, ["decrypt"])``.

    A wrong secret and an altered blob both fail the GCM tag: ``wrong_secret``.
    """
    record = blob if isinstance(blob, WrappedKey) else WrappedKey.from_json(blob)
    _check_key32(wrap_key, "wrapping key", "bad_record")
    try:
        plain = AESGCM(wrap_key).decrypt(record.iv, record.wrapped, None)
    except InvalidTag:
        raise PatientCryptoError(
            "wrong_secret", "wrong password or activation code, or the stored key was altered"
        ) from None
    try:
        key = load_der_private_key(plain, None)
    except ValueError as exc:  # authentic but not a key: a writer's bug, not a wrong password
        raise PatientCryptoError("bad_record", f"wrapped data is not a PKCS#8 key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PatientCryptoError("unsupported", "wrapped key is not an RSA key")
    return key


def _hasher() -> PasswordHasher:
    return PasswordHasher(
        time_cost=ARGON2_TIME_COST,
        memory_cost=ARGON2_MEMORY_KIB,
        parallelism=ARGON2_PARALLELISM,
        hash_len=32,
        salt_len=16,
        type=Argon2Type.ID,
    )


def parse_auth_key(text: str) -> bytes:
    """The authentication key as it travels (unpadded base64url, RFC 4648 §5: 43 characters)."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]{43}", text):
        raise PatientCryptoError("bad_auth_key", "an authentication key is 43 base64url characters")
    return base64.urlsafe_b64decode(text + "=")


def hash_auth_key(auth_key: bytes) -> str:
    """Argon2id PHC string of the authentication key, the only thing the server stores of it.

    The key is 256 uniformly random bits, so no cost setting makes guessing it feasible or
    infeasible; the hash exists so that a database reader cannot replay the stored value to log
    in (and send mail as the patient). Guessing the *password* behind it is gated by PBKDF2, not
    by this hash: the stored wrapped key is a cheaper oracle than Argon2 once PBKDF2 has run.
    Hence OWASP's minimum (19 MiB, t=2, p=1), about 20 ms per login on the reference machine.
    """
    _check_key32(auth_key, "authentication key", "bad_auth_key")
    return _hasher().hash(auth_key)


def verify_auth_key(stored: str, auth_key: bytes) -> bool:
    """Constant-time check of a presented authentication key against the stored hash.

    False for a wrong key (or one of the wrong length); raises ``bad_hash`` when ``stored`` is
    not an Argon2 hash at all, which is an operator's problem and not a failed login.
    """
    if not isinstance(auth_key, bytes) or len(auth_key) != KEY_BYTES:
        return False
    try:
        return _hasher().verify(stored, auth_key)
    except VerifyMismatchError:
        return False
    except InvalidHashError:
        raise PatientCryptoError("bad_hash", "stored value is not an Argon2 hash") from None
    except VerificationError:
        return False


def auth_key_needs_rehash(stored: str) -> bool:
    """True when ``stored`` was made with other Argon2 parameters than today's."""
    return _hasher().check_needs_rehash(stored)


# ---------------------------------------------------------------------------------------------
# Keys and certificates
# ---------------------------------------------------------------------------------------------


def new_patient_keys(
    name: str,
    ins: str,
    *,
    address: str | None = None,
    issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None = None,
    bits: int = RSA_BITS,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A patient's RSA key and the X.509 certificate that carries its public half.

    Self-signed by default: the certificate is a container for the public key and a recipient
    identifier, not a trust statement. The server encrypts to the certificate stored with the
    patient space, and nobody validates a chain to it, so an operator CA would add a key to guard
    and nothing a reader checks. ``issuer=(ca_cert, ca_key)`` issues it from an operator's patient
    CA instead (RFC 5280 profile, AKI set) for deployments that want one.

    Subject ``CN=<name>, serialNumber=<INS>``; SAN ``rfc822Name=<address>`` if given (RFC 8550
    §3); keyUsage keyEncipherment (RFC 8550 §4.4.2), EKU emailProtection; SKI by RFC 5280
    §4.2.1.2 method 1, which the messages use as the recipient identifier so that the subject
    never travels in them. No expiry (99991231235959Z): the key ends when the space is closed and
    its wrapped copy deleted.
    """
    checked = check_ins(ins)
    if not name or any(c in name for c in "\r\n\0"):
        raise ValueError("patient name must be a non-empty single line")
    if bits < 2048:
        raise ValueError("RSA keys below 2048 bits are refused")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, checked.value),
        ]
    )
    now = datetime.now(UTC).replace(microsecond=0)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(NO_EXPIRY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(ski, critical=False)
    )
    if address is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
    if issuer is None:
        cert = builder.issuer_name(subject).sign(key, hashes.SHA256())
    else:
        ca_cert, ca_key = issuer
        builder = builder.issuer_name(ca_cert.subject).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        cert = builder.sign(ca_key, hashes.SHA256())
    return cert, key


@dataclass(frozen=True)
class ProvisionedPatient:
    """What the operator's CLI keeps after creating a patient space. The private key is gone:
    only ``wrapped`` (under the activation code) and the public ``certificate`` remain.
    ``activation_code`` is printed once and never stored."""

    certificate: x509.Certificate
    wrapped: WrappedKey
    auth_hash: str
    activation_code: str


def provision_patient(
    name: str,
    ins: str,
    *,
    address: str | None = None,
    issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None = None,
    iterations: int = PBKDF2_ITERATIONS,
    bits: int = RSA_BITS,
) -> ProvisionedPatient:
    """Creation of a patient space, key side: new key, new activation code, key wrapped under the
    code, Argon2id hash of the code's authentication key. The private key does not outlive this
    call (the operator's process holds it for these few steps; docs/patient-keys.md says so)."""
    cert, key = new_patient_keys(name, ins, address=address, issuer=issuer, bits=bits)
    code = new_activation_code()
    params = KdfParams.new(iterations)
    auth_key, wrap_key = derive_keys(normalise_activation_code(code), params)
    wrapped = wrap_private_key(key, wrap_key, params=params)
    return ProvisionedPatient(cert, wrapped, hash_auth_key(auth_key), code)


# ---------------------------------------------------------------------------------------------
# CMS: build (the server, at ingest) and open (the client)
# ---------------------------------------------------------------------------------------------


class GCMParameters(core.Sequence):
    """RFC 5084 §3.2: ``GCMParameters ::= SEQUENCE { aes-nonce OCTET STRING, aes-ICVlen
    AES-GCM-ICVlen DEFAULT 12 }`` (asn1crypto 1.5 has no spec for it)."""

    _fields = [("aes_nonce", core.OctetString), ("aes_icvlen", core.Integer, {"default": 12})]  # noqa: RUF012


def _sha256_identifier() -> dict[str, Any]:
    # RFC 4055 §2.1 sha256Identifier: parameters NULL (implementations accept NULL or absent).
    return {"algorithm": "sha256", "parameters": core.Null()}


def _oaep_algorithm() -> cms.KeyEncryptionAlgorithm:
    """RFC 4055 §4.1 ``{id-RSAES-OAEP, rSAES-OAEP-SHA256-Params}``; pSourceFunc is the DEFAULT
    (empty label), so DER omits it."""
    return cms.KeyEncryptionAlgorithm(
        {
            "algorithm": "rsaes_oaep",
            "parameters": algos.RSAESOAEPParams(
                {
                    "hash_algorithm": _sha256_identifier(),
                    "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": _sha256_identifier()},
                }
            ),
        }
    )


def _ski(cert: x509.Certificate) -> bytes:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        raise PatientCryptoError(
            "unsupported", "certificate has no subjectKeyIdentifier; use recipient_id='issuer_serial'"
        ) from None


def _recipient_info(cert: x509.Certificate, cek: bytes, recipient_id: RecipientId) -> cms.RecipientInfo:
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise PatientCryptoError("unsupported", "a patient certificate carries an RSA key")
    if recipient_id == "ski":
        rid = cms.RecipientIdentifier({"subject_key_identifier": _ski(cert)})
        version = "v2"  # RFC 5652 §6.2.1
    elif recipient_id == "issuer_serial":
        issuer = cms.IssuerAndSerialNumber({"issuer": _issuer_name(cert), "serial_number": cert.serial_number})
        rid = cms.RecipientIdentifier({"issuer_and_serial_number": issuer})
        version = "v0"
    else:
        raise ValueError(f"unknown recipient_id {recipient_id!r}")
    return cms.RecipientInfo(
        {
            "ktri": {
                "version": version,
                "rid": rid,
                "key_encryption_algorithm": _oaep_algorithm(),
                "encrypted_key": public.encrypt(cek, _OAEP),
            }
        }
    )


def _issuer_name(cert: x509.Certificate) -> asn1_x509.Name:
    """The issuer Name exactly as DER-encoded in the certificate (never re-encoded)."""
    return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))["tbs_certificate"]["issuer"]


def encrypt_cms(
    payload: bytes,
    certificate: x509.Certificate,
    *,
    content_cipher: ContentCipher = "aes-256-gcm",
    recipient_id: RecipientId = "ski",
) -> bytes:
    """DER ``ContentInfo`` holding ``payload`` for the patient of ``certificate``.

    One fresh 256-bit content-encryption key per message, RSA-OAEP-wrapped to the certificate.
    """
    if not isinstance(payload, bytes):
        raise TypeError("payload must be bytes")
    cek = secrets.token_bytes(KEY_BYTES)
    ri = _recipient_info(certificate, cek, recipient_id)
    if content_cipher == "aes-256-gcm":
        nonce = secrets.token_bytes(GCM_IV_BYTES)
        sealed = AESGCM(cek).encrypt(nonce, payload, None)
        ciphertext, tag = sealed[:-GCM_TAG_BYTES], sealed[-GCM_TAG_BYTES:]
        content = cms.AuthEnvelopedData(
            {
                "version": "v0",  # RFC 5083 §2.1: always 0
                "recipient_infos": [ri],
                "auth_encrypted_content_info": {
                    "content_type": "data",
                    "content_encryption_algorithm": {
                        "algorithm": "aes256_gcm",
                        "parameters": GCMParameters({"aes_nonce": nonce, "aes_icvlen": GCM_TAG_BYTES}),
                    },
                    "encrypted_content": ciphertext,
                },
                "mac": tag,
            }
        )
        info = cms.ContentInfo({"content_type": "authenticated_enveloped_data", "content": content})
    elif content_cipher == "aes-256-cbc":
        iv = secrets.token_bytes(16)
        padder = padding.PKCS7(128).padder()
        padded = padder.update(payload) + padder.finalize()
        encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
        ciphertext = encryptor.update(padded) + encryptor.finalize()
        content = cms.EnvelopedData(
            {
                # RFC 5652 §6.1: 0 when every RecipientInfo is v0 and there are no attributes.
                "version": "v0" if recipient_id == "issuer_serial" else "v2",
                "recipient_infos": [ri],
                "encrypted_content_info": {
                    "content_type": "data",
                    "content_encryption_algorithm": {"algorithm": "aes256_cbc", "parameters": iv},
                    "encrypted_content": ciphertext,
                },
            }
        )
        info = cms.ContentInfo({"content_type": "enveloped_data", "content": content})
    else:
        raise ValueError(f"unknown content cipher {content_cipher!r}")
    return info.dump()


_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 §3.6.8 ftext
_FOLDED_VALUE = re.compile(rb"[^\r\n\0]*(?:\r\n[ \t][^\r\n\0]*)*")
_STRUCTURAL = {"mime-version", "content-type", "content-transfer-encoding", "content-disposition"}


def _outer_head(outer_headers: Sequence[tuple[str, str | bytes]], smime_type: str) -> bytes:
    head = bytearray()
    for name, value in outer_headers:
        if not _FIELD_NAME.fullmatch(name):
            raise PatientCryptoError("bad_header", f"invalid header field name {name!r}")
        if name.lower() in _STRUCTURAL:
            raise PatientCryptoError("bad_header", f"{name} is set by the encryption, not by the caller")
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if not _FOLDED_VALUE.fullmatch(raw):
            raise PatientCryptoError("bad_header", f"{name}: value has a bare CR, LF or NUL")
        head += name.encode("ascii") + b": " + raw + b"\r\n"
    head += b"MIME-Version: 1.0\r\n"
    head += (
        b"Content-Type: application/pkcs7-mime; smime-type=" + smime_type.encode("ascii") + b'; name="smime.p7m"\r\n'
    )
    head += b'Content-Disposition: attachment; filename="smime.p7m"\r\n'
    head += b"Content-Transfer-Encoding: base64\r\n"
    return bytes(head)


def encrypt_for_patient(
    payload: bytes,
    certificate: x509.Certificate,
    *,
    outer_headers: Sequence[tuple[str, str | bytes]],
    content_cipher: ContentCipher = "aes-256-gcm",
    recipient_id: RecipientId = "ski",
) -> bytes:
    """The stored outer message (CRLF) for an already header-protected ``payload``.

    ``payload`` is encrypted byte for byte (it is already in canonical CRLF form: RFC 8551 §3.1.1
    is the payload builder's job). ``outer_headers`` are (name, value) pairs written first, in
    order; values may be folded (CRLF + WSP) and are UTF-8 when given as text. The MIME fields
    are this function's: ``application/pkcs7-mime; smime-type=authEnveloped-data`` for GCM,
    ``enveloped-data`` for CBC (RFC 8551 §3.3), base64 in 76-character lines.
    """
    smime_type = "authEnveloped-data" if content_cipher == "aes-256-gcm" else "enveloped-data"
    head = _outer_head(outer_headers, smime_type)
    der = encrypt_cms(payload, certificate, content_cipher=content_cipher, recipient_id=recipient_id)
    b64 = base64.b64encode(der)
    body = b"".join(b64[i : i + 76] + b"\r\n" for i in range(0, len(b64), 76))
    return head + b"\r\n" + body


# ---- opening ---------------------------------------------------------------------------------


def _is_sha256(alg: Any) -> bool:
    # RFC 4055 §2.1: NULL and absent parameters are both legal.
    return alg["algorithm"].native == "sha256" and alg["parameters"].native is None


def _check_oaep(kea: cms.KeyEncryptionAlgorithm) -> None:
    if kea["algorithm"].native != "rsaes_oaep":
        raise PatientCryptoError("unsupported", f"key transport {kea['algorithm'].native} is not RSA-OAEP")
    params = kea["parameters"]
    if not isinstance(params, algos.RSAESOAEPParams):
        raise PatientCryptoError("bad_cms", "RSA-OAEP parameters missing")
    mgf = params["mask_gen_algorithm"]
    source = params["p_source_algorithm"]
    if not _is_sha256(params["hash_algorithm"]):
        raise PatientCryptoError("unsupported", "RSA-OAEP hash is not SHA-256")
    if mgf["algorithm"].native != "mgf1" or not _is_sha256(mgf["parameters"]):
        raise PatientCryptoError("unsupported", "RSA-OAEP mask generation is not MGF1 with SHA-256")
    if source["algorithm"].native != "p_specified" or source["parameters"].native not in (b"", None):
        raise PatientCryptoError("unsupported", "RSA-OAEP label is not empty")


def _rid_matches(rid: cms.RecipientIdentifier, cert: x509.Certificate) -> bool:
    if rid.name == "subject_key_identifier":
        try:
            return hmac.compare_digest(rid.chosen.native, _ski(cert))
        except PatientCryptoError:
            return False
    ias = rid.chosen
    return ias["serial_number"].native == cert.serial_number and ias["issuer"].dump() == _issuer_name(cert).dump()


def _content_key(infos: cms.RecipientInfos, key: rsa.RSAPrivateKey, cert: x509.Certificate | None) -> bytes:
    """The CEK from the first KeyTransRecipientInfo this key opens (RFC 5652 §6.2.1).

    With ``cert`` only the RecipientInfo that names it is tried; without it, every RSA-OAEP one
    (an OAEP decryption under the wrong key fails its integrity check, RFC 8017 §7.1.2 step 3g).
    """
    unsupported: list[str] = []
    for ri in infos:
        if ri.name != "ktri":
            unsupported.append(ri.name)
            continue
        ktri = ri.chosen
        if cert is not None and not _rid_matches(ktri["rid"], cert):
            continue
        try:
            _check_oaep(ktri["key_encryption_algorithm"])
        except PatientCryptoError as exc:
            unsupported.append(str(exc))
            continue
        try:
            cek = key.decrypt(ktri["encrypted_key"].native, _OAEP)
        except ValueError:
            continue
        if len(cek) != KEY_BYTES:
            raise PatientCryptoError("unsupported", f"content key is {len(cek)} bytes, not {KEY_BYTES}")
        return cek
    detail = f" (skipped: {'; '.join(unsupported)})" if unsupported else ""
    raise PatientCryptoError("no_recipient", "no recipient info of this message opens with this key" + detail)


def _aad_of(auth_attrs: Any) -> bytes | None:
    """RFC 5083 §2.2: the MAC covers the DER of authAttrs with its SET OF tag (0x31), not the
    IMPLICIT [1] it is written with."""
    if not auth_attrs:
        return None
    der = auth_attrs.dump()
    return b"\x31" + der[1:]


def decrypt_cms(der: bytes, private_key: rsa.RSAPrivateKey, certificate: x509.Certificate | None = None) -> bytes:
    """The payload of an AuthEnvelopedData (AES-256-GCM) or EnvelopedData (AES-256-CBC) message
    with an RSA-OAEP-SHA256 recipient. What the browser does: find the RecipientInfo, RSA-OAEP
    ``decrypt`` the CEK, ``importKey("raw", cek, "AES-GCM"|"AES-CBC")``, ``decrypt``."""
    try:
        info = cms.ContentInfo.load(der, strict=True)
        kind = info["content_type"].native
        content = info["content"]
        if kind == "authenticated_enveloped_data":
            eci = content["auth_encrypted_content_info"]
        elif kind == "enveloped_data":
            eci = content["encrypted_content_info"]
        else:
            raise PatientCryptoError("unsupported", f"CMS content type {kind} is not an encrypted message")
        alg = eci["content_encryption_algorithm"]
        alg_name = alg["algorithm"].native
        ciphertext = eci["encrypted_content"].native
        infos = content["recipient_infos"]
        if kind == "authenticated_enveloped_data":
            if alg_name != "aes256_gcm":
                raise PatientCryptoError("unsupported", f"content cipher {alg_name} is not AES-256-GCM")
            if not isinstance(alg["parameters"], core.Any):
                raise PatientCryptoError("bad_cms", "AES-GCM parameters missing")
            gcm = alg["parameters"].parse(GCMParameters)
            nonce, icvlen = gcm["aes_nonce"].native, gcm["aes_icvlen"].native
            mac = content["mac"].native
            aad = _aad_of(content["auth_attrs"])
        else:
            if alg_name != "aes256_cbc":
                raise PatientCryptoError("unsupported", f"content cipher {alg_name} is not AES-256-CBC")
            iv = alg["parameters"].native
        _ = infos.native  # parse the recipient infos here, so that malformed DER is bad_cms
    except PatientCryptoError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise PatientCryptoError("bad_cms", f"not a well-formed CMS message: {exc}") from None
    if ciphertext is None:
        raise PatientCryptoError("bad_cms", "detached content is not supported")
    if kind == "authenticated_enveloped_data":
        if len(nonce) != GCM_IV_BYTES or icvlen != GCM_TAG_BYTES or len(mac) != GCM_TAG_BYTES:
            raise PatientCryptoError("unsupported", "AES-GCM parameters must be a 12-byte nonce and a 16-byte ICV")
        cek = _content_key(infos, private_key, certificate)
        try:
            return AESGCM(cek).decrypt(nonce, ciphertext + mac, aad)
        except InvalidTag:
            raise PatientCryptoError("altered", "the message was altered (AES-GCM tag mismatch)") from None
    if not isinstance(iv, bytes) or len(iv) != 16 or len(ciphertext) % 16 or not ciphertext:
        raise PatientCryptoError("bad_cms", "AES-CBC IV or ciphertext has the wrong length")
    cek = _content_key(infos, private_key, certificate)
    decryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise PatientCryptoError("altered", "the message was altered (bad CBC padding)") from None


def _split_head(raw: bytes) -> tuple[bytes, bytes]:
    for sep in (b"\r\n\r\n", b"\n\n"):
        at = raw.find(sep)
        if at >= 0:
            return raw[: at + len(sep)], raw[at + len(sep) :]
    raise PatientCryptoError("not_smime", "message has no body")


def decrypt_patient_message(
    outer_bytes: bytes, private_key: rsa.RSAPrivateKey, certificate: x509.Certificate | None = None
) -> bytes:
    """The header-protected payload of a stored patient message (inverse of
    :func:`encrypt_for_patient`; also opens ``openssl cms -encrypt`` output of the same profile)."""
    head, body = _split_head(outer_bytes)
    fields = BytesHeaderParser(policy=compat32).parsebytes(head)
    ctype = fields.get_content_type()
    if ctype not in ("application/pkcs7-mime", "application/x-pkcs7-mime"):
        raise PatientCryptoError("not_smime", f"not an S/MIME encrypted message ({ctype})")
    cte = str(fields.get("Content-Transfer-Encoding", "")).strip().lower()
    if cte == "base64":
        try:
            der = base64.b64decode(re.sub(rb"\s+", b"", body), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PatientCryptoError("not_smime", f"bad base64 body: {exc}") from None
    elif cte in ("", "binary"):
        der = body
    else:
        raise PatientCryptoError("not_smime", f"unexpected Content-Transfer-Encoding {cte!r}")
    return decrypt_cms(der, private_key, certificate)


def public_key_matches(certificate: x509.Certificate, private_key: rsa.RSAPrivateKey) -> bool:
    """True when ``private_key`` is the key of ``certificate``."""
    public = certificate.public_key()
    return isinstance(public, rsa.RSAPublicKey) and public.public_numbers() == private_key.public_key().public_numbers()
