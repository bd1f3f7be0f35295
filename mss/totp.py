"""Two-step verification for the patient portal: TOTP (RFC 6238) and recovery codes.

Pure functions, no database: `mss.portal` keeps the secret, the last accepted time step and
the recovery-code hashes on the patient's row.

* Codes are RFC 6238 defaults (HMAC-SHA1, 30-second steps, 6 digits): what every
  authenticator app reads from an `otpauth://` URI. One step either side is accepted for
  clock drift (RFC 6238 section 5.2 recommends at most one), and a step is never accepted
  twice: "the verifier MUST NOT accept the second attempt of the same OTP after the
  successful validation has been issued for the first OTP" (section 5.2). The caller stores
  the step `verify` returns and passes it back as `last_step`.
* Recovery codes: ten random codes of 12 Crockford base-32 symbols (60 bits), shown once,
  kept as SHA-256 digests (a database copy does not reveal them; 60 random bits need no
  slow hash), each usable once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import unicodedata

import pyotp

STEP_S = 30
DIGITS = 6
#: Steps accepted either side of now (RFC 6238 5.2).
WINDOW = 1
RECOVERY_COUNT = 10
RECOVERY_GROUPS = 3  # of 4 symbols: 60 bits
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base 32
_READS_AS = {"O": "0", "I": "1", "L": "1"}
_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212._/]")
_DIGITS = re.compile(rf"[0-9]{{{DIGITS}}}")
#: OWASP's minimum (as for the auth keys, `crypto.patient`): the codes are random, the hash
#: only keeps a database reader from using them.
RECOVERY_SCHEME = "sha256$"
RECOVERY_LABEL = b"mss portal recovery code v1:"


def new_secret() -> str:
    """A new base32 secret of 160 bits (RFC 4226 section 4 asks for at least 128)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, *, account: str, issuer: str) -> str:
    """The `otpauth://totp/...` key URI an authenticator app scans (as a QR code)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_S).provisioning_uri(name=account, issuer_name=issuer)


def current_step(now: float | None = None) -> int:
    return int((time.time() if now is None else now) // STEP_S)


def code_at(secret: str, step: int) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_S).at(step * STEP_S)


def looks_like_totp(code: str) -> bool:
    return _DIGITS.fullmatch(_compact(code)) is not None


def verify(secret: str, code: str, *, last_step: int | None, now: float | None = None) -> int | None:
    """The time step `code` belongs to (now, or one step either side), if that step is later
    than `last_step`; None otherwise. Every candidate step is compared in constant time."""
    typed = _compact(code)
    if _DIGITS.fullmatch(typed) is None:
        return None
    here = current_step(now)
    found = None
    for step in range(here - WINDOW, here + WINDOW + 1):
        if hmac.compare_digest(code_at(secret, step), typed) and (last_step is None or step > last_step):
            found = step
    return found


def _compact(code: str) -> str:
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", code or "")[:64])


def normalise_recovery_code(typed: str) -> str | None:
    """The code as generated (upper case, no separators, Crockford's reading of O/I/L), or
    None when it cannot be one."""
    text = _compact(typed).upper()
    text = "".join(_READS_AS.get(c, c) for c in text)
    if len(text) != 4 * RECOVERY_GROUPS or any(c not in _ALPHABET for c in text):
        return None
    return text


def new_recovery_codes() -> list[str]:
    """Codes to show once, as `XXXX-XXXX-XXXX`."""
    out = []
    for _ in range(RECOVERY_COUNT):
        raw = "".join(secrets.choice(_ALPHABET) for _ in range(4 * RECOVERY_GROUPS))
        out.append("-".join(raw[i : i + 4] for i in range(0, len(raw), 4)))
    return out


def _recovery_digest(norm: str) -> str:
    return RECOVERY_SCHEME + hashlib.sha256(RECOVERY_LABEL + norm.encode("ascii")).hexdigest()


def hash_recovery_codes(codes: list[str]) -> list[str]:
    """The stored form of the codes: a SHA-256, not a slow hash. A code carries 60 random
    bits, so a fast hash leaves nothing to guess offline (slow hashes are for passwords),
    and checking one costs microseconds: ten Argon2id checks per attempt let any patient
    with TOTP on burn a quarter of a CPU second a request."""
    hashes = []
    for code in codes:
        norm = normalise_recovery_code(code)
        assert norm is not None
        hashes.append(_recovery_digest(norm))
    return hashes


def match_recovery_code(hashes: list[str], typed: str) -> int | None:
    """The index of the hash `typed` matches, None for none. Every hash is compared in
    constant time, so the time says nothing about which one matched."""
    norm = normalise_recovery_code(typed)
    if norm is None:
        return None
    digest = _recovery_digest(norm).encode("ascii")
    found = None
    for i, stored in enumerate(hashes):
        if hmac.compare_digest(str(stored).encode("ascii", "replace"), digest) and found is None:
            found = i
    return found
