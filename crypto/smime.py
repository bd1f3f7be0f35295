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

from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from crypto import rfc2045
from crypto.rfc5322 import Field, get, scan, to_crlf

__all__ = [
    "OUTER_HEADERS",
    "Protected",
    "SMimeError",
    "decrypt",
    "encrypt",
    "is_encrypted",
    "is_enveloped",
    "protect",
    "protect_and_encrypt",
    "replace_outer_subject",
    "replace_subject",
]

# Header fields kept on the outer message (DESIGN.md "Header protection"), in this order.
OUTER_HEADERS: tuple[str, ...] = ("From", "To", "Cc", "Date", "Message-ID", "In-Reply-To", "References")

_PKCS7_MIME_TYPES = {"application/pkcs7-mime", "application/x-pkcs7-mime"}


class SMimeError(ValueError):
    """The message cannot be protected or the stored object cannot be opened."""


# ---------------------------------------------------------------------------------------------
# Header fields come from the one scanner (crypto.rfc5322): byte-faithful, linear. email.parser
# would re-fold and re-encode what it touches.
# ---------------------------------------------------------------------------------------------


def _content_type(fields: Sequence[Field]) -> tuple[str, dict[str, str]]:
    """(type/subtype lowercased, parameters) of the root Content-Type, RFC 2045 defaults.

    The parameters are parsed only for an S/MIME type: nothing else here reads them, and a
    hostile value of millions of parameters then costs nothing on the common path.
    """
    ct = get(fields, "content-type")
    if ct is None:
        return "text/plain", {}
    value = rfc2045.header_text(ct.value)
    ctype = rfc2045.content_type(value)
    if ctype not in _PKCS7_MIME_TYPES:
        return ctype, {}
    return ctype, {k.lower(): str(v) for k, v in rfc2045.params(value)[1:]}


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
    return not (len(sample) >= _MIN_SAMPLE and len(zlib.compress(sample, 6)) < 0.9 * len(sample))


def is_encrypted(raw: bytes) -> bool:
    """True when ``raw`` is already an S/MIME encrypted message (RFC 8551 §3.3, RFC 5083).

    Besides the Content-Type, the body is decoded and its CMS content type checked: a message
    that merely *claims* to be enveloped-data while carrying clear text must not be stored as is.
    """
    section = scan(to_crlf(raw))
    return is_enveloped(section.fields, section.body)


def is_enveloped(fields: Sequence[Field], body: bytes) -> bool:
    """`is_encrypted` of a message already scanned (CRLF): the core decides it once, while
    parsing, instead of splitting the message again."""
    ctype, params = _content_type(fields)
    if ctype not in _PKCS7_MIME_TYPES:
        return False
    smime_type = params.get("smime-type", "").lower()
    if smime_type and smime_type not in ("enveloped-data", "authenveloped-data"):
        return False
    cte_field = get(fields, "content-transfer-encoding")
    cte = cte_field.value.decode("latin-1").strip().lower() if cte_field is not None else ""
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
# Protection: built once per message (`protect`), then encrypted once per target (`encrypt`).
# ---------------------------------------------------------------------------------------------

_HP_PARAMS = b'; hp="cipher"; protected-headers="v1"'

# `_strip_hp_params` removes what re.sub(rb'\s*;\s*(hp|protected-headers)\s*=\s*("[^"]*"|[^;\s]*)',
# b"", raw, flags=re.IGNORECASE) removed, without its cost: that pattern retried its leading
# \s* from every octet of a white-space run, and its "[^"]*" scan to the end for every
# unclosed quote, so a Content-Type folded over 160 KB of blank continuation lines took 40 s.
_HP_NAME = re.compile(rb";\s*(?:hp|protected-headers)\s*=\s*", re.IGNORECASE)
_UNQUOTED = re.compile(rb"[^;\s]*")
_WHITESPACE = b" \t\n\r\f\v"  # what \s matches in a bytes pattern


def _strip_hp_params(raw: bytes) -> bytes:
    """``raw`` without its ``hp`` and ``protected-headers`` parameters (and the white space and
    ``;`` before each), in one left-to-right pass: the same result as the regular expression
    above, in time linear in ``raw``."""
    out = bytearray()
    copied = 0  # raw[:copied] is decided (written to out or removed)
    next_quote = -2  # cache of raw.find(b'"', at) for increasing `at`: -2 unknown
    semi = raw.find(b";")
    while semi >= 0:
        m = _HP_NAME.match(raw, semi)
        if m is None:
            semi = raw.find(b";", semi + 1)
            continue
        at = m.end()
        end = -1
        if raw[at : at + 1] == b'"':
            if next_quote == -2 or (0 <= next_quote <= at):
                next_quote = raw.find(b'"', at + 1)
            if next_quote >= 0:
                end = next_quote + 1  # "[^"]*": up to the first closing quote
        if end < 0:
            end = _UNQUOTED.match(raw, at).end()  # type: ignore[union-attr]
        out += raw[copied:semi].rstrip(_WHITESPACE)  # \s* before the ";" goes with it
        copied = end
        semi = raw.find(b";", end)
    out += raw[copied:]
    return bytes(out)


def _mark_content_type(field: Field) -> bytes:
    """Append RFC 9788 ``hp`` and ``protected-headers`` to the root Content-Type field."""
    raw = field.terminated.removesuffix(b"\r\n")
    # Drop parameters of the same names a sender may have set, so the values are unambiguous.
    return _strip_hp_params(raw).rstrip(b" \t;") + _HP_PARAMS + b"\r\n"


def _build_payload(fields: Sequence[Field], body: bytes, outer: Sequence[tuple[str, bytes]]) -> bytes:
    out = bytearray()
    marked = False
    for f in fields:
        if not marked and f.key == "content-type":
            out += _mark_content_type(f)
            marked = True
        else:
            out += f.terminated
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


def _check_placeholder(placeholder_subject: str) -> bytes:
    if any(c in placeholder_subject for c in "\r\n\0"):
        raise SMimeError("placeholder subject must be a single line")
    return placeholder_subject.encode("utf-8")


@dataclass(frozen=True)
class Protected:
    """A message with its headers protected (RFC 9788), ready to be encrypted to anyone.

    ``payload`` is the MIME entity that goes inside the envelope: the original fields and
    body byte for byte, the root Content-Type marked ``hp="cipher"; protected-headers="v1"``
    and one ``HP-Outer`` field per outer value. ``outer_head`` is the header section of the
    stored outer message without its empty line: the routing and threading fields as written,
    the placeholder Subject and the S/MIME structure fields. Neither depends on who will read
    the message, so a delivery to many mailboxes builds them once.
    """

    payload: bytes
    outer_head: bytes


def protect(fields: Sequence[Field], body: bytes, placeholder_subject: str = "[...]") -> Protected:
    """The protected payload and outer header of a scanned (CRLF) message, built once."""
    subject = _check_placeholder(placeholder_subject)
    by_key: dict[str, list[Field]] = {}
    for f in fields:
        by_key.setdefault(f.key, []).append(f)
    outer_fields = [f for name in OUTER_HEADERS for f in by_key.get(name.lower(), ())]
    hp_outer = [(f.name, f.value) for f in outer_fields] + [("Subject", subject)]
    payload = _build_payload(fields, body, hp_outer)

    head = b"".join(f.terminated for f in outer_fields)
    head += b"Subject: " + subject + b"\r\n"
    head += b"MIME-Version: 1.0\r\n"
    head += b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\r\n'
    head += b'Content-Disposition: attachment; filename="smime.p7m"\r\n'
    head += b"Content-Transfer-Encoding: base64\r\n"
    return Protected(payload=payload, outer_head=head)


def encrypt(protected: Protected, certificates: Sequence[x509.Certificate]) -> bytes:
    """The outer S/MIME message (CRLF) to store, readable by each of ``certificates``.

    EnvelopedData, AES-256-CBC, one RSA key-transport RecipientInfo per certificate
    (RFC 5652 §6): the only per-target work of a delivery.
    """
    if not certificates:
        raise SMimeError("no recipient certificate: refusing to store a message nobody can read")
    builder = (
        pkcs7.PKCS7EnvelopeBuilder().set_data(protected.payload).set_content_encryption_algorithm(algorithms.AES256)
    )
    for cert in certificates:
        builder = builder.add_recipient(cert)
    # Binary: the payload is already canonical; without it the builder rewrites line ends.
    der = builder.encrypt(Encoding.DER, [pkcs7.PKCS7Options.Binary])
    return protected.outer_head + b"\r\n" + _wrap_base64(der)


def protect_and_encrypt(
    raw: bytes,
    recipients: Sequence[x509.Certificate],
    *,
    placeholder_subject: str = "[...]",
) -> bytes:
    """The outer S/MIME message (CRLF) to store for ``raw``, readable by each of ``recipients``:
    `protect` then `encrypt`, for callers with one message and one set of certificates."""
    if not recipients:
        raise SMimeError("no recipient certificate: refusing to store a message nobody can read")
    section = scan(to_crlf(raw))
    return encrypt(protect(section.fields, section.body, placeholder_subject), recipients)


def replace_outer_subject(raw: bytes, *, placeholder_subject: str = "[...]") -> bytes:
    """An already-encrypted message with its clear outer Subject replaced by the placeholder;
    every other header field and the CMS body are kept byte for byte.

    Clients that do not protect headers leave the Subject outside the envelope; an operator
    may choose not to keep it (at the cost of the subject for those clients). Other fields
    stay: Disposition-Notification-To (MDN), X-MSS-* and Reply-To are needed downstream.
    """
    _check_placeholder(placeholder_subject)
    section = scan(to_crlf(raw))
    return replace_subject(section.fields, section.body, placeholder_subject=placeholder_subject)


def replace_subject(fields: Sequence[Field], body: bytes, *, placeholder_subject: str = "[...]") -> bytes:
    """`replace_outer_subject` of a message already scanned (CRLF)."""
    subject = _check_placeholder(placeholder_subject)
    head = b"".join(f.terminated for f in fields if f.key != "subject")
    head += b"Subject: " + subject + b"\r\n"
    return head + b"\r\n" + body


def decrypt(outer: bytes, cert: x509.Certificate, key: object) -> bytes:
    """The inner payload of a stored message (what ``openssl cms -decrypt`` prints)."""
    section = scan(to_crlf(outer))
    ctype, _ = _content_type(section.fields)
    if ctype not in _PKCS7_MIME_TYPES:
        raise SMimeError(f"not an S/MIME message ({ctype})")
    try:
        der = base64.b64decode(re.sub(rb"\s+", b"", section.body), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SMimeError(f"bad base64 body: {exc}") from exc
    try:
        return pkcs7.pkcs7_decrypt_der(der, cert, key, [])  # type: ignore[arg-type]
    except ValueError as exc:
        raise SMimeError(f"cannot decrypt: {exc}") from exc
