"""The INS, the patient's national health identifier (MSSANTE.md "Identifiers", "Patients").

The INS *matricule* is a NIR (the social security number) or a NIA (a waiting number given to a
person born abroad until the NIR is certified): 13 characters and a 2-digit key::

    sex(1) year(2) month(2) department(2) commune(3) order(3) key(2)
    1      84      12       76            451        089      46

``key = 97 - (N mod 97)`` where N is the first 13 characters read as a decimal integer after the
department ``2A`` (Corse-du-Sud) is replaced by ``19`` and ``2B`` (Haute-Corse) by ``18``. The
key is therefore in 01..97; ``00``, ``98`` and ``99`` never occur.

The key is the one hard rule of the format and it is always checked: a patient address whose
local part fails it must never resolve to someone else's inbox. Every other rule below is read in
secondary sources, which disagree with one another, so the defaults are *lenient* and every one
of them is a field of :class:`InsPolicy` (refusing a real INS means a patient who cannot receive
their mail; accepting an odd but well-keyed one costs nothing, the directory still has to know it):

* **sex** (first digit): 1 and 2 (men, women); 3 and 4 are reported for foreign-born persons being
  registered, 7 and 8 for provisional numbers. All six are accepted; 0, 5, 6, 9 are not known to
  be issued and are refused (``sex``). What a 7 or 8 *means* is not relied upon.
* **month**: 01-12, plus 20-42 and 50-99, which the registry uses when the birth certificate
  gives no month (sources quote "20 to 30", "20 to 42", "50 to 99"; we take their union). 00,
  13-19 and 43-49 are refused (``month``); ``InsPolicy(months=None)`` accepts any two digits.
* **department**: two digits, or ``2A``/``2B``. Any two digits are accepted (91-96 are used for
  births in former Algeria, Morocco, Tunisia; 97/98 are followed by a third digit that sits in the
  commune field; 99 is "born abroad"); a letter anywhere else in the field is refused
  (``department``).
* **commune, order, year**: any digits.
* **NIR or NIA** cannot be told from the digits: a NIA has the NIR's layout. The kind is
  therefore taken only from the OID the INS travels with (INSi, CDA headers): NIR
  ``1.2.250.1.213.1.4.8``, NIA ``.9``, test ``.10``, demo ``.11``. Without an OID, ``kind`` is None.

Normalisation: spaces, dots and hyphens between groups are removed (people write
``1 84 12 76 451 089 46``) and ``2a``/``2b`` are upper-cased; the normalised value is the
15-character form used in the patient address ``<INS>@patient.<domain>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "INS_OIDS",
    "Ins",
    "InsError",
    "InsPolicy",
    "check_ins",
    "ins_key",
]

Kind = Literal["NIR", "NIA", "test", "demo"]

#: OIDs of the INS namespaces (MSSANTE.md "Identifiers").
INS_OIDS: dict[str, Kind] = {
    "1.2.250.1.213.1.4.8": "NIR",
    "1.2.250.1.213.1.4.9": "NIA",
    "1.2.250.1.213.1.4.10": "test",
    "1.2.250.1.213.1.4.11": "demo",
}

_CORSICA = {"2A": "19", "2B": "18"}
_SEPARATORS = re.compile(r"[ .\-\u00a0]")
#: Male / female by first digit (3/4 and 7/8 follow 1/2's parity; reported, not relied upon).
_SEX = {"1": "M", "2": "F", "3": "M", "4": "F", "7": "M", "8": "F"}


def _default_months() -> frozenset[int]:
    return frozenset([*range(1, 13), *range(20, 43), *range(50, 100)])


@dataclass(frozen=True)
class InsPolicy:
    """The lenient rules (module docstring). ``months=None`` accepts any two digits."""

    sex_digits: frozenset[str] = frozenset(_SEX)
    months: frozenset[int] | None = field(default_factory=_default_months)


class InsError(ValueError):
    """Not a valid INS. ``reason`` names the failed check, for logs, DSNs (MDN 904/905) and tests:
    ``type``, ``length``, ``characters``, ``department``, ``sex``, ``month``, ``key``, ``oid``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Ins:
    """A checked INS. ``value`` is the normalised 15-character form; ``sex`` is None only for a
    first digit a custom policy admits beyond the six known ones."""

    value: str
    sex: Literal["M", "F"] | None
    kind: Kind | None = None
    year: str = ""
    month: str = ""
    department: str = ""
    commune: str = ""
    order: str = ""
    key: str = ""

    def __str__(self) -> str:
        return self.value


def ins_key(first13: str) -> str:
    """The two key digits of a 13-character INS body (department may be ``2A``/``2B``)."""
    if len(first13) != 13:
        raise InsError("length", f"an INS body has 13 characters, not {len(first13)}")
    digits = first13[:5] + _CORSICA.get(first13[5:7].upper(), first13[5:7]) + first13[7:]
    if not (digits.isascii() and digits.isdigit()):
        raise InsError("characters", "an INS body is digits, with 2A or 2B as the only letters")
    return f"{97 - int(digits) % 97:02d}"


def check_ins(value: str, *, oid: str | None = None, policy: InsPolicy = InsPolicy()) -> Ins:
    """Check ``value`` and return it parsed, or raise :class:`InsError` naming the failed check.

    ``oid`` is the namespace the INS came with, if any; it sets ``kind`` and must be one of
    :data:`INS_OIDS`.
    """
    if not isinstance(value, str):
        raise InsError("type", "an INS is a string")
    compact = _SEPARATORS.sub("", value.strip()).upper()
    if len(compact) != 15:
        raise InsError("length", f"an INS has 15 characters, not {len(compact)}")
    if not compact.isascii():
        raise InsError("characters", "an INS is ASCII digits")
    department = compact[5:7]
    rest = compact[:5] + compact[7:]
    if not rest.isdigit():
        raise InsError("characters", "an INS is digits, with 2A or 2B only as the department")
    if not (department.isdigit() or department in _CORSICA):
        raise InsError("department", f"department {department!r} is neither two digits nor 2A/2B")
    sex = compact[0]
    if sex not in policy.sex_digits:
        raise InsError("sex", f"first digit {sex} is not an issued sex code")
    month = int(compact[3:5])
    if policy.months is not None and month not in policy.months:
        raise InsError("month", f"month {compact[3:5]} is not issued")
    expected = ins_key(compact[:13])
    if compact[13:] != expected:
        raise InsError("key", "the INS key does not match its first 13 characters")
    kind: Kind | None = None
    if oid is not None:
        if oid not in INS_OIDS:
            raise InsError("oid", f"{oid!r} is not an INS namespace OID")
        kind = INS_OIDS[oid]
    return Ins(
        value=compact,
        sex=_SEX.get(sex),  # type: ignore[arg-type]
        kind=kind,
        year=compact[1:3],
        month=compact[3:5],
        department=department,
        commune=compact[7:10],
        order=compact[10:13],
        key=compact[13:],
    )
