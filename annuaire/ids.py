"""Identifier checks and the text folding that every directory look-up relies on.

Pure functions, no I/O: the importer, the search and the HTTP face must agree on how a
name or an address is normalised, so they all use these.
"""

from __future__ import annotations

import re
import unicodedata

from crypto.identity import luhn_valid

#: OIDs of the national identifier namespaces (MSSANTE.md, "Identifiers").
OID_IDNAT_PS = "1.2.250.1.71.4.2.1"
OID_IDNAT_STRUCT = "1.2.250.1.71.4.2.2"

_ADDRESS_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@"  # local part: RFC 5322 atext and dots
    r"(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}$"
)
_FOLD_DROP = re.compile(r"[^a-z0-9 ]+")
# Letters that NFKD does not decompose into a base letter + accent.
_EXTRA = str.maketrans({"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ı": "i"})


def idnat_ps_problem(idnat: str) -> str | None:
    """Why a professional national id is invalid, or None.

    `8` + RPPS (11 digits, Luhn); `0` + ADELI (9 characters) is accepted without a key check
    (real ADELI numbers do not all carry a Luhn key). Other prefixes are passed through:
    the layout drifts and unknown kinds must not stop an import.
    """
    if not idnat:
        return None
    if idnat[0] == "8":
        rpps = idnat[1:]
        if len(rpps) != 11 or not (rpps.isascii() and rpps.isdigit()):
            return "bad_rpps_format"
        if not luhn_valid(rpps):
            return "bad_rpps_check_digit"
    return None


def address_ok(address: str) -> bool:
    return bool(_ADDRESS_RE.match(address))


def normalize_address(address: str) -> str:
    """Directory and mailbox keys: lower-case, surrounding blanks dropped.

    Local parts are case-insensitive by policy here, so an address is stored and looked up in
    this one form by the importer, the search, the local mailboxes and the core (which imports
    it from `annuaire.local` too).
    """
    return address.strip().lower()


def _slow_fold(t: str) -> str:
    t = unicodedata.normalize("NFKD", t.translate(_EXTRA))
    return "".join(c for c in t if not unicodedata.combining(c))


# Latin letters with diacritics -> base letters, precomputed (the import folds a million names).
_ACCENTS = {cp: _slow_fold(chr(cp)) for cp in range(0xC0, 0x250) if _slow_fold(chr(cp)).isascii()}


def fold(text: str) -> str:
    """Accent- and case-insensitive form of a name: `Côté-Lefèvre  Éric` -> `cote lefevre eric`.

    Only [a-z0-9 ] survives, so prefix searches can be range scans on a plain B-tree
    with byte ordering on both SQLite and PostgreSQL.
    """
    if not text:
        return ""
    t = text.lower()
    if not t.isascii():
        t = t.translate(_ACCENTS)
        if not t.isascii():
            t = _slow_fold(t.casefold()).lower()  # NFKD may give capitals: 𝓐 (no lower case) -> A
    if not (t.isascii() and t.replace(" ", "").isalnum()):  # else only [a-z0-9 ]: nothing to drop
        t = _FOLD_DROP.sub(" ", t)
    return " ".join(t.split())


def prefix_upper_bound(prefix: str) -> str:
    """Smallest string greater than every string starting with `prefix` (folded alphabet)."""
    return prefix + "\x7f"


def idna_domain(domain: str) -> str:
    """A domain in its ASCII (A-label) form, lower-case, without the trailing dot.

    IDNA 2008 with UTS #46 mapping when the `idna` package is there (it is, through
    email-validator); the codec of the standard library (IDNA 2003) otherwise.
    """
    d = domain.strip().rstrip(".")
    if not d:
        return ""
    try:
        d.encode("ascii")
        return d.lower()
    except UnicodeEncodeError:
        pass
    try:
        import idna  # type: ignore[import-untyped]

        return idna.encode(d, uts46=True).decode("ascii").lower()
    except ImportError:  # pragma: no cover - idna ships with email-validator
        return d.encode("idna").decode("ascii").lower()
