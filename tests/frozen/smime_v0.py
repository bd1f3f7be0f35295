# Frozen copy of crypto/smime.py as of commit 9e5f333, before the one-scanner rewrite.
# Kept verbatim so tests and bench/parse_bench.py can compare the new code with the old
# algorithm byte for byte. Never import this from production code; never edit it.
"""Header protection + CMS encryption of a whole message before it is stored (RFC 8551, RFC 9788).

The stored object is an S/MIME ``application/pkcs7-mime; smime-type=enveloped-data`` message
(RFC 8551 §3.3) whose encrypted payload is the *entire* original message, headers included.
What stays outside is only what routing and threading need (From, To, Cc, Date, Message-ID,
In-Reply-To, References) and a placeholder Subject, following RFC 9788 §2:

* the payload's root Content-Type gets ``hp="cipher"`` (RFC 9788 §2.1.1, "this payload was
  encrypted with header protection") and ``protected-headers="v1"`` (the older draft that
  Thunderbird and K-9 actually read to show the real Subject);
* every outer field that is not MIME structure is echoed inside as ``HP-Outer: <name>: <value>``
  (RFC 9788 §2.2), so a reader can tell which outer values were exposed or altered.

Everything else of the original is kept byte for byte (line ends normalised to CRLF, the MIME
canonical form of RFC 8551 §3.1.1): the header protection must never change what the sender
wrote, only where it is stored.

Ciphers: EnvelopedData with AES-256-CBC and RSA PKCS#1 v1.5 key transport, one RecipientInfo per
certificate (RFC 5652 §6), which every S/MIME client and ``openssl cms`` read.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32

from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

__all__ = ["SMimeError", "decrypt", "is_encrypted", "replace_outer_subject", "protect_and_encrypt", "OUTER_HEADERS"]

# Header fields kept on the outer message (DESIGN.md "Header protection"), in this order.
OUTER_HEADERS: tuple[str, ...] = ("From", "To", "Cc", "Date", "Message-ID", "In-Reply-To", "References")

_PKCS7_MIME_TYPES = {"application/pkcs7-mime", "application/x-pkcs7-mime"}
_HEADER_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")


class SMimeError(ValueError):
    """The message cannot be protected or the stored object cannot be opened."""


# ---------------------------------------------------------------------------------------------
# Byte-faithful header splitting (email.parser would re-fold and re-encode what it touches).
# ---------------------------------------------------------------------------------------------


@dataclass
class _Field:
    name: str  # as written
    raw: bytes  # the complete field, continuation lines included, ending with CRLF

    @property
    def key(self) -> str:
        return self.name.lower()

    @property
    def value(self) -> bytes:
        """Value after the colon, folding kept, final CRLF removed, leading blank stripped."""
        return self.raw.split(b":", 1)[1].removesuffix(b"\r\n").lstrip(b" \t")


def _to_crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _split_message(raw: bytes) -> tuple[list[_Field], bytes]:
    """(header fields, body) of a CRLF message (RFC 5322 §2.1).

    The header section ends at the first empty line, or at the first line that is neither a
    field nor a continuation; such a line starts the body and is kept verbatim.
    """
    fields: list[_Field] = []
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\r\n", pos)
        end = len(raw) if end < 0 else end + 2
        line = raw[pos:end]
        if line in (b"\r\n", b""):
            return fields, raw[end:]
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].raw += line  # RFC 5322 §2.2.3 folding
        else:
            m = _HEADER_NAME.match(line)
            if m is None:
                return fields, raw[pos:]
            fields.append(_Field(m.group(1).decode("ascii"), line))
        pos = end
    if fields and not fields[-1].raw.endswith(b"\r\n"):
        fields[-1].raw += b"\r\n"
    return fields, b""


def _content_type(fields: Sequence[_Field]) -> tuple[str, dict[str, str]]:
    """(type/subtype lowercased, parameters) of the root Content-Type, RFC 2045 defaults."""
    ct = next((f for f in fields if f.key == "content-type"), None)
    if ct is None:
        return "text/plain", {}
    msg = BytesHeaderParser(policy=compat32).parsebytes(ct.raw + b"\r\n")
    params = {k.lower(): str(v) for k, v in (msg.get_params() or [])[1:]}
    return msg.get_content_type(), params


# ---------------------------------------------------------------------------------------------
# Detection of an already-encrypted message
# ---------------------------------------------------------------------------------------------


#: Below this many ciphertext octets the randomness test below is meaningless.
_MIN_SAMPLE = 256


def _content_info_is_enveloped(der: bytes) -> bool:
    """Parse the whole ContentInfo (RFC 5652 3) and accept only a well-formed
    EnvelopedData (6.1) or AuthEnvelopedData (RFC 5083) whose encrypted content looks like
    ciphertext.

    Checking only the first octets lets anyone prefix clear text with the enveloped-data
    OID and have it stored as is. Here the DER must parse to the end, carry at least one
    RecipientInfo and an encrypted content, and that content must not compress (clear
    text does; AES output does not). A determined sender can still wrap clear text in a
    structurally perfect envelope of random-looking bytes; what it cannot do any more is
    smuggle readable health data past the check by accident or with a forged header.
    """
    try:
        info = cms.ContentInfo.load(der, strict=True)
        kind = info["content_type"].native
        if kind not in ("enveloped_data", "authenticated_enveloped_data"):
            return False
        content = info["content"]
        if len(content["recipient_infos"]) == 0:
            return False
        field = "encrypted_content_info" if kind == "enveloped_data" else "auth_encrypted_content_info"
        encrypted = content[field]["encrypted_content"].native
    except (ValueError, TypeError, KeyError):
        return False
    if not encrypted or len(encrypted) < 16:
        return False
    sample = encrypted[:65536]
    if len(sample) >= _MIN_SAMPLE and len(zlib.compress(sample, 6)) < 0.9 * len(sample):
        return False
    return True


def is_encrypted(raw: bytes) -> bool:
    """True when ``raw`` is already an S/MIME encrypted message (RFC 8551 §3.3, RFC 5083).

    Besides the Content-Type, the body is decoded and its CMS content type checked: a message
    that merely *claims* to be enveloped-data while carrying clear text must not be stored as is.
    """
    fields, body = _split_message(_to_crlf(raw))
    ctype, params = _content_type(fields)
    if ctype not in _PKCS7_MIME_TYPES:
        return False
    smime_type = params.get("smime-type", "").lower()
    if smime_type and smime_type not in ("enveloped-data", "authenveloped-data"):
        return False
    cte = next((f.value.decode("latin-1").strip().lower() for f in fields if f.key == "content-transfer-encoding"), "")
    if cte == "base64":
        try:
            der = base64.b64decode(re.sub(rb"\s+", b"", body), validate=True)
        except (binascii.Error, ValueError):
            return False
    elif cte in ("", "binary", "8bit", "7bit"):
        der = body
    else:
        return False
    return _content_info_is_enveloped(der)


# ---------------------------------------------------------------------------------------------
# Protection
# ---------------------------------------------------------------------------------------------

_HP_PARAMS = b'; hp="cipher"; protected-headers="v1"'


def _mark_content_type(field: _Field) -> bytes:
    """Append RFC 9788 ``hp`` and ``protected-headers`` to the root Content-Type field."""
    raw = field.raw.removesuffix(b"\r\n")
    # Drop parameters of the same names a sender may have set, so the values are unambiguous.
    raw = re.sub(rb'\s*;\s*(hp|protected-headers)\s*=\s*("[^"]*"|[^;\s]*)', b"", raw, flags=re.IGNORECASE)
    return raw.rstrip(b" \t;") + _HP_PARAMS + b"\r\n"


def _build_payload(fields: Sequence[_Field], body: bytes, outer: Sequence[tuple[str, bytes]]) -> bytes:
    out = bytearray()
    marked = False
    for f in fields:
        if f.key == "content-type" and not marked:
            out += _mark_content_type(f)
            marked = True
        else:
            out += f.raw
    if not marked:
        out += b'Content-Type: text/plain; charset="us-ascii"' + _HP_PARAMS + b"\r\n"
    # RFC 9788 §2.2: one HP-Outer per non-structural outer field, value as sent outside.
    for name, value in outer:
        out += b"HP-Outer: " + name.encode("ascii") + b": " + value + b"\r\n"
    out += b"\r\n" + body
    return bytes(out)


def _wrap_base64(der: bytes) -> bytes:
    b64 = base64.b64encode(der)
    return b"".join(b64[i : i + 76] + b"\r\n" for i in range(0, len(b64), 76))


def protect_and_encrypt(
    raw: bytes,
    recipients: Sequence[x509.Certificate],
    *,
    placeholder_subject: str = "[...]",
) -> bytes:
    """The outer S/MIME message (CRLF) to store for ``raw``, readable by each of ``recipients``."""
    if not recipients:
        raise SMimeError("no recipient certificate: refusing to store a message nobody can read")
    if any(c in placeholder_subject for c in "\r\n\0"):
        raise SMimeError("placeholder subject must be a single line")
    fields, body = _split_message(_to_crlf(raw))

    outer_fields: list[_Field] = [f for name in OUTER_HEADERS for f in fields if f.key == name.lower()]
    subject = placeholder_subject.encode("utf-8")
    hp_outer = [(f.name, f.value) for f in outer_fields] + [("Subject", subject)]
    payload = _build_payload(fields, body, hp_outer)

    builder = pkcs7.PKCS7EnvelopeBuilder().set_data(payload).set_content_encryption_algorithm(algorithms.AES256)
    for cert in recipients:
        builder = builder.add_recipient(cert)
    # Binary: the payload is already canonical; without it the builder rewrites line ends.
    der = builder.encrypt(Encoding.DER, [pkcs7.PKCS7Options.Binary])

    head = b"".join(f.raw for f in outer_fields)
    head += b"Subject: " + subject + b"\r\n"
    head += b"MIME-Version: 1.0\r\n"
    head += b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\r\n'
    head += b'Content-Disposition: attachment; filename="smime.p7m"\r\n'
    head += b"Content-Transfer-Encoding: base64\r\n"
    return head + b"\r\n" + _wrap_base64(der)


def replace_outer_subject(raw: bytes, *, placeholder_subject: str = "[...]") -> bytes:
    """An already-encrypted message with its clear outer Subject replaced by the placeholder;
    every other header field and the CMS body are kept byte for byte.

    Clients that do not protect headers leave the Subject outside the envelope; an operator
    may choose not to keep it (at the cost of the subject for those clients). Other fields
    stay: Disposition-Notification-To (MDN), X-MSS-* and Reply-To are needed downstream.
    """
    if any(c in placeholder_subject for c in "\r\n\0"):
        raise SMimeError("placeholder subject must be a single line")
    fields, body = _split_message(_to_crlf(raw))
    head = b"".join(f.raw for f in fields if f.key != "subject")
    head += b"Subject: " + placeholder_subject.encode("utf-8") + b"\r\n"
    return head + b"\r\n" + body


def decrypt(outer: bytes, cert: x509.Certificate, key: object) -> bytes:
    """The inner payload of a stored message (what ``openssl cms -decrypt`` prints)."""
    fields, body = _split_message(_to_crlf(outer))
    ctype, _ = _content_type(fields)
    if ctype not in _PKCS7_MIME_TYPES:
        raise SMimeError(f"not an S/MIME message ({ctype})")
    try:
        der = base64.b64decode(re.sub(rb"\s+", b"", body), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SMimeError(f"bad base64 body: {exc}") from exc
    try:
        return pkcs7.pkcs7_decrypt_der(der, cert, key, [])  # type: ignore[arg-type]
    except ValueError as exc:
        raise SMimeError(f"cannot decrypt: {exc}") from exc
