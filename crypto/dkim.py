"""DKIM keys per domain and signing/verification (RFC 6376), with dkimpy.

Two algorithms: ``rsa-sha256`` with RSA-2048 (RFC 8301 §3.2: 1024 is the floor, 2048 what
receivers expect today) and ``ed25519-sha256`` (RFC 8463). Operators usually publish both and
sign with both, as RFC 8463 §1 suggests, since not every receiver verifies Ed25519 yet.

Keys are stored as PKCS#8 PEM (what ``openssl pkey`` reads), created 0600; the DNS record is
``<selector>._domainkey.<domain> TXT "v=DKIM1; k=rsa|ed25519; p=<base64>"``: for RSA ``p`` is the
DER SubjectPublicKeyInfo, for Ed25519 the raw 32-byte public key (RFC 8463 §4.2).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from .files import write_private

__all__ = ["DEFAULT_SIGNED_HEADERS", "DkimKey", "generate", "load", "sign", "verify"]

Algorithm = Literal["rsa", "ed25519"]
RSA_BITS = 2048
# RFC 6376 §5.4.1 recommendations, plus the MIME headers; From is mandatory.
DEFAULT_SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"in-reply-to",
    b"references",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
)
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _check_label(name: str, what: str) -> str:
    name = name.strip().lower().rstrip(".")
    if not name or not all(_LABEL.match(lbl) for lbl in name.split(".")):
        raise ValueError(f"invalid {what}: {name!r}")
    return name


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: Algorithm
    private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    # ------------------------------------------------------------------ DNS

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def public_value(self) -> str:
        pub = self.private_key.public_key()
        if isinstance(pub, ed25519.Ed25519PublicKey):
            raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            raw = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(raw).decode("ascii")

    def txt_value(self) -> str:
        return f"v=DKIM1; k={self.algorithm}; p={self.public_value()}"

    def dns_record(self) -> str:
        """A zone-file line; long values are split in 255-byte strings (RFC 7208 §3.3 style)."""
        value = self.txt_value()
        chunks = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
        return f"{self.record_name}. IN TXT ( {chunks} )"

    # ------------------------------------------------------------------ storage

    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def write(self, directory: Path) -> Path:
        """``<directory>/<domain>/<selector>.key`` (0600, PKCS#8) and ``.txt`` (the record)."""
        folder = Path(directory) / self.domain
        path = write_private(folder / f"{self.selector}.key", self.private_pem(), exclusive=True)
        (folder / f"{self.selector}.txt").write_text(self.dns_record() + "\n")
        return path

    def _dkimpy_private(self) -> bytes:
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            seed = self.private_key.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            return base64.b64encode(seed)  # dkimpy (PyNaCl) takes the base64 seed
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )


def generate(domain: str, selector: str = "mss", algorithm: Algorithm = "rsa") -> DkimKey:
    domain = _check_label(domain, "domain")
    selector = _check_label(selector, "selector")
    if algorithm == "rsa":
        key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = rsa.generate_private_key(65537, RSA_BITS)
    elif algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"unknown DKIM algorithm {algorithm!r}")
    return DkimKey(domain, selector, algorithm, key)


def load(path: Path, domain: str, selector: str) -> DkimKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), None)
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 1024:
            raise ValueError("RSA DKIM keys below 1024 bits are not allowed (RFC 8301)")
        return DkimKey(domain, selector, "rsa", key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return DkimKey(domain, selector, "ed25519", key)
    raise ValueError(f"{path}: not an RSA or Ed25519 key")


def sign(message: bytes, key: DkimKey, *, headers: Sequence[bytes] = DEFAULT_SIGNED_HEADERS) -> bytes:
    """The ``DKIM-Signature:`` header field (CRLF-terminated) to prepend to ``message``."""
    head = re.split(rb"\r?\n\r?\n", message, maxsplit=1)[0]
    present = {
        line.split(b":", 1)[0].strip().lower()
        for line in head.splitlines()
        if line and line[:1] not in (b" ", b"\t") and b":" in line
    }
    include = [h for h in headers if h in present]
    if b"from" not in include:
        raise ValueError("a DKIM signature must cover From (RFC 6376 §5.4)")
    return dkim.sign(
        message,
        key.selector.encode(),
        key.domain.encode(),
        key._dkimpy_private(),
        include_headers=include,
        canonicalize=(b"relaxed", b"relaxed"),
        signature_algorithm=b"ed25519-sha256" if key.algorithm == "ed25519" else b"rsa-sha256",
        linesep=b"\r\n",
    )


def verify(message: bytes, dnsfunc: Callable[..., bytes] | None = None) -> bool:
    """True when the first DKIM-Signature verifies (``dnsfunc(name)`` returns the TXT value)."""
    kwargs = {"dnsfunc": dnsfunc} if dnsfunc is not None else {}
    try:
        return bool(dkim.verify(message, **kwargs))
    except dkim.DKIMException:
        return False
