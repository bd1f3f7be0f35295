"""Certificate subject -> health identity (who the holder of an IGC-Santé certificate is).

The health PKI names people and structures in the subject DN, not in the SAN:

* PS (professional card / e-CPS): a multi-valued RDN ``SN=<surname>+CN=<idNat_PS>+GN=<given>``
  plus ``title=<profession>`` and ``C=FR``. The national id is the CN *inside* the multi-valued
  RDN, which is why every attribute of every RDN is read rather than "the" CN (RFC 5280 §4.1.2.4
  lets an RDN hold several attributes; taking only the first one silently drops SN or GN).
* ORG / SERV: ``CN, OU=<idNat_Struct>, O, ST, C``. SERV certificates are the ones usable as TLS
  servers (EKU id-kp-serverAuth, RFC 5280 §4.2.1.12).

Identifiers end with a Luhn check digit (RPPS, ADELI, FINESS, SIREN, SIRET); a certificate whose
identifier fails it is refused rather than looked up, so a typo can never resolve to someone else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "Identity",
    "IdentityError",
    "check_ps_id",
    "check_structure_id",
    "identity_from_certificate",
    "luhn_check_digit",
    "luhn_valid",
]

Kind = Literal["PS", "ORG", "SERV"]


class IdentityError(ValueError):
    """The certificate does not name a health identity we can trust.

    ``reason`` is a short machine code for logs and tests ("no_national_id", "bad_check_digit",
    "unknown_subject_shape", "unknown_id_type", "bad_length"); the message is for operators.
    """

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or reason)
        self.reason = reason


@dataclass(frozen=True)
class Identity:
    """Who a certificate designates. ``identifier`` includes its one-character type prefix."""

    kind: Kind
    identifier: str
    id_type: str
    common_name: str
    surname: str | None = None
    given_name: str | None = None
    profession: str | None = None
    organization: str | None = None


# --------------------------------------------------------------------------------------------
# Luhn (ISO/IEC 7812-1 annex B): the check digit scheme of RPPS, ADELI, FINESS, SIREN, SIRET.
# --------------------------------------------------------------------------------------------


# Digit octets -> their value, and -> the digit sum of their double (Luhn's doubled positions).
_PLAIN = bytes.maketrans(b"0123456789", bytes(range(10)))
_DOUBLED = bytes.maketrans(b"0123456789", bytes([0, 2, 4, 6, 8, 1, 3, 5, 7, 9]))


def _luhn_sum(digits: str, double_first: bool) -> int:
    """Sum of the digits from the right, every other one doubled (digit sum), starting
    with the rightmost when `double_first`. Sums over translated octets, not a Python loop:
    the directory import checks a million RPPS numbers."""
    b = digits.encode("ascii")[::-1]
    plain, doubled = (b[1::2], b[0::2]) if double_first else (b[0::2], b[1::2])
    return sum(plain.translate(_PLAIN)) + sum(doubled.translate(_DOUBLED))


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (check digit last) passes Luhn. Non-digits or empty -> False."""
    if not digits or not digits.isascii() or not digits.isdigit():
        return False
    return _luhn_sum(digits, double_first=False) % 10 == 0


def luhn_check_digit(payload: str) -> str:
    """The digit that makes ``payload + digit`` Luhn-valid."""
    if not payload or not payload.isascii() or not payload.isdigit():
        raise ValueError("Luhn payload must be ASCII digits")
    return str((10 - _luhn_sum(payload, double_first=True) % 10) % 10)


# --------------------------------------------------------------------------------------------
# Identifier checks
# --------------------------------------------------------------------------------------------

# idNat_PS types (MSSANTE.md): 8 + RPPS (11 digits), 0 + ADELI (9 characters).
_PS_TYPES: dict[str, tuple[str, int]] = {"8": ("RPPS", 11), "0": ("ADELI", 9)}
# idNat_Struct types: 1 FINESS (9), 2 SIREN (9), 3 SIRET (14), 0 ADELI practice (9), 4 RPPS-rang.
_STRUCT_TYPES: dict[str, tuple[str, int | None]] = {
    "1": ("FINESS", 9),
    "2": ("SIREN", 9),
    "3": ("SIRET", 14),
    "0": ("ADELI", 9),
    "4": ("RPPS-rang", None),
}


def _check_number(kind: str, number: str, length: int | None) -> None:
    if length is None:
        # RPPS-rang: layout not pinned down by our sources; require a non-empty printable token.
        if not number or not number.isprintable() or " " in number:
            raise IdentityError("bad_length", f"{kind} identifier is empty or malformed")
        return
    if len(number) != length:
        raise IdentityError("bad_length", f"{kind} must have {length} characters, got {len(number)}")
    if kind in ("FINESS", "ADELI") and number[:2] in ("2A", "2B"):
        # Corsican department codes: letters in the number, no Luhn digit to check.
        if not number[2:].isdigit():
            raise IdentityError("bad_check_digit", f"{kind} {number!r} is not numeric")
        return
    if not luhn_valid(number):
        raise IdentityError("bad_check_digit", f"{kind} {number!r} fails its Luhn check digit")


def _check_typed_id(idnat: str, types: dict[str, tuple[str, int | None]], label: str, what: str) -> str:
    if not idnat:
        raise IdentityError("no_national_id", f"empty {what} national id")
    id_type, number = idnat[0], idnat[1:]
    if id_type not in types:
        raise IdentityError("unknown_id_type", f"unknown {label} type {id_type!r}")
    kind, length = types[id_type]
    _check_number(kind, number, length)
    return id_type


def check_ps_id(idnat: str) -> str:
    """Validate an idNat_PS and return its type character."""
    return _check_typed_id(idnat, _PS_TYPES, "idNat_PS", "professional")


def check_structure_id(idnat: str) -> str:
    """Validate an idNat_Struct and return its type character."""
    return _check_typed_id(idnat, _STRUCT_TYPES, "idNat_Struct", "structure")


# --------------------------------------------------------------------------------------------
# Subject parsing
# --------------------------------------------------------------------------------------------


def _attributes(name: x509.Name) -> dict[x509.ObjectIdentifier, list[str]]:
    """Every attribute of every RDN (multi-valued RDNs included), in DER order."""
    out: dict[x509.ObjectIdentifier, list[str]] = {}
    for rdn in name.rdns:
        for attr in rdn:
            value = attr.value if isinstance(attr.value, str) else attr.value.decode("latin-1")
            out.setdefault(attr.oid, []).append(value)
    return out


def _single(attrs: dict[x509.ObjectIdentifier, list[str]], oid: x509.ObjectIdentifier) -> str | None:
    values = attrs.get(oid)
    if not values:
        return None
    if len(values) > 1:
        # Two CNs (or two OUs) make "the" identifier ambiguous: refuse instead of guessing.
        raise IdentityError("unknown_subject_shape", f"attribute {oid.dotted_string} appears twice")
    return values[0].strip()


def _has_server_auth(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.SERVER_AUTH in eku


def _is_ps_subject(name: x509.Name) -> bool:
    """A PS subject has CN together with SN and/or GN in one multi-valued RDN."""
    for rdn in name.rdns:
        oids = {attr.oid for attr in rdn}
        if NameOID.COMMON_NAME in oids and oids & {NameOID.SURNAME, NameOID.GIVEN_NAME}:
            return True
    return False


def identity_from_certificate(cert: x509.Certificate) -> Identity:
    """Read the health identity a certificate designates; raise IdentityError when it names none.

    This does *not* check the chain: call it only on a certificate that validate.py accepted.
    """
    try:
        subject = cert.subject
        attrs = _attributes(subject)
    except ValueError as exc:  # undecodable subject
        raise IdentityError("unknown_subject_shape", f"unreadable subject: {exc}") from exc

    cn = _single(attrs, NameOID.COMMON_NAME)
    if _is_ps_subject(subject):
        if not cn:
            raise IdentityError("no_national_id", "professional certificate without CN")
        id_type = check_ps_id(cn)
        return Identity(
            kind="PS",
            identifier=cn,
            id_type=id_type,
            common_name=cn,
            surname=_single(attrs, NameOID.SURNAME),
            given_name=_single(attrs, NameOID.GIVEN_NAME),
            profession=_single(attrs, NameOID.TITLE),
            organization=_single(attrs, NameOID.ORGANIZATION_NAME),
        )

    ou = _single(attrs, NameOID.ORGANIZATIONAL_UNIT_NAME)
    if cn is None:
        raise IdentityError("unknown_subject_shape", "subject has no CN")
    if ou is None:
        raise IdentityError("no_national_id", "structure certificate without OU structure id")
    id_type = check_structure_id(ou)
    return Identity(
        kind="SERV" if _has_server_auth(cert) else "ORG",
        identifier=ou,
        id_type=id_type,
        common_name=cn,
        organization=_single(attrs, NameOID.ORGANIZATION_NAME),
    )
