"""The patient's side of the zero-access scheme, as the portal's browser code must do it.

This is the *reference client*: every method is a short sequence of the WebCrypto calls named in
``crypto.patient`` (PBKDF2 ``deriveBits``, HKDF ``deriveBits``, AES-GCM ``wrapKey`` /
``unwrapKey``, RSA-OAEP ``decrypt``, AES-GCM / AES-CBC ``decrypt``), with nothing in between that
JavaScript could not do. ``mss demo`` uses it to activate the demo patient, tests use it as the
patient, and the portal's JavaScript is checked against ``tests/crypto/patient_vectors.json``,
which this module's primitives produce.

What leaves the client: authentication keys (never the secret they come from) and new wrapped
keys. What never leaves it: the password, the activation code, the wrapping key, the private key.

The client, not the server, has to enforce password quality and KDF cost, because the server
never sees the password and must not be trusted to choose the cost: a server that handed out
``iterations: 1`` would receive an authentication key that is cheap to brute-force back to the
password. ``min_iterations`` is that floor.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from .patient import (
    PBKDF2_ITERATIONS,
    KdfParams,
    PatientCryptoError,
    WrappedKey,
    decrypt_patient_message,
    derive_keys,
    normalise_activation_code,
    public_key_matches,
    unwrap_private_key,
    wrap_private_key,
)

__all__ = ["PatientClient", "Rewrap"]

#: NIST SP 800-63B §3.1.1.2 asks for at least 8 characters from a user-chosen password; a
#: password that also guards an offline-attackable key gets more.
MIN_PASSWORD_LENGTH = 12

Record = WrappedKey | Mapping[str, Any] | str | bytes


class Rewrap(NamedTuple):
    """What the client sends when it changes the secret (activation or password change).

    The server checks ``old_auth_key`` against its stored hash, then, in one transaction,
    stores ``hash_auth_key(new_auth_key)`` and ``wrapped`` in place of the old ones.
    """

    old_auth_key: bytes
    new_auth_key: bytes
    wrapped: WrappedKey


def _params_of(record: KdfParams | Record) -> KdfParams:
    if isinstance(record, KdfParams):
        return record
    if isinstance(record, WrappedKey):
        return record.params
    return KdfParams.from_json(record)


def _wrapped_of(record: Record) -> WrappedKey:
    return record if isinstance(record, WrappedKey) else WrappedKey.from_json(record)


@dataclass(frozen=True)
class PatientClient:
    """The browser's key logic. ``iterations`` is the cost of the blobs this client writes;
    ``min_iterations`` the lowest it accepts from a server (tests lower both)."""

    iterations: int = PBKDF2_ITERATIONS
    min_iterations: int = PBKDF2_ITERATIONS
    min_password_length: int = MIN_PASSWORD_LENGTH

    def __post_init__(self) -> None:
        if self.iterations < self.min_iterations:
            raise ValueError("a client must not write blobs below its own floor")

    # ------------------------------------------------------------------ steps

    def _checked(self, record: KdfParams | Record) -> KdfParams:
        params = _params_of(record)
        if params.iterations < self.min_iterations:
            raise PatientCryptoError(
                "weak_record",
                f"the server offered {params.iterations} PBKDF2 iterations, below this client's {self.min_iterations}",
            )
        return params

    def _check_new_password(self, password: str, *, old: str | None = None) -> None:
        if len(unicodedata.normalize("NFC", password)) < self.min_password_length:
            raise PatientCryptoError("weak_password", f"a password has at least {self.min_password_length} characters")
        if old is not None and unicodedata.normalize("NFC", password) == unicodedata.normalize("NFC", old):
            raise PatientCryptoError("weak_password", "the new password is the old one")

    def _rewrap(
        self, old_secret: str, new_password: str, record: Record, certificate: x509.Certificate | None
    ) -> Rewrap:
        wrapped = _wrapped_of(record)
        params = self._checked(wrapped)
        old_auth, old_wrap = derive_keys(old_secret, params)
        # WebCrypto: this one unwrapKey is done with extractable=true, because wrapKey needs an
        # extractable key; the session's own unwrap (unlock) stays non-extractable.
        key = unwrap_private_key(wrapped, old_wrap)
        if certificate is not None and not public_key_matches(certificate, key):
            raise PatientCryptoError("key_mismatch", "the stored key is not the key of this patient's certificate")
        new_params = KdfParams.new(self.iterations)  # fresh salt, this client's cost
        new_auth, new_wrap = derive_keys(new_password, new_params)
        return Rewrap(old_auth, new_auth, wrap_private_key(key, new_wrap, params=new_params))

    def activate(
        self,
        activation_code: str,
        new_password: str,
        server_record: Record,
        *,
        certificate: x509.Certificate | None = None,
    ) -> Rewrap:
        """First visit: the code unlocks the key, which is re-wrapped under the new password.

        Returns (activation_auth_key, new_auth_key, new_blob). A mistyped code fails locally
        with ``bad_code`` (alphabet, length) or at unwrap with ``wrong_secret``, before anything
        is sent.
        """
        code = normalise_activation_code(activation_code)
        self._check_new_password(new_password)
        if _code_or_none(new_password) == code:
            raise PatientCryptoError("weak_password", "the new password is the activation code")
        return self._rewrap(code, new_password, server_record, certificate)

    def login(self, password: str, params: KdfParams | Record) -> bytes:
        """The authentication key to send for ``password`` (params from the pre-login request)."""
        auth_key, _ = derive_keys(password, self._checked(params))
        return auth_key

    def unlock(
        self, password: str, record: Record, *, certificate: x509.Certificate | None = None
    ) -> rsa.RSAPrivateKey:
        """The private key, for this session only (WebCrypto: non-extractable, usage decrypt).

        With ``certificate``, the key must be that certificate's: a server cannot swap in a key of
        its own choosing unnoticed (it still chooses what it encrypts new mail to; see the docs).
        """
        wrapped = _wrapped_of(record)
        _, wrap_key = derive_keys(password, self._checked(wrapped))
        key = unwrap_private_key(wrapped, wrap_key)
        if certificate is not None and not public_key_matches(certificate, key):
            raise PatientCryptoError("key_mismatch", "the stored key is not the key of this patient's certificate")
        return key

    def change_password(
        self, old_password: str, new_password: str, record: Record, *, certificate: x509.Certificate | None = None
    ) -> Rewrap:
        """(old_auth_key, new_auth_key, new_blob): the same key under the new password."""
        self._check_new_password(new_password, old=old_password)
        return self._rewrap(old_password, new_password, record, certificate)

    def open(
        self, message_bytes: bytes, private_key: rsa.RSAPrivateKey, *, certificate: x509.Certificate | None = None
    ) -> bytes:
        """The header-protected payload of one stored message (then MIME-parsed, sanitised and
        shown in a sandboxed frame: PORTAL.md section 5)."""
        return decrypt_patient_message(message_bytes, private_key, certificate)


def _code_or_none(text: str) -> str | None:
    try:
        return normalise_activation_code(text)
    except PatientCryptoError:
        return None
