"""Pure parsing pieces, property-based: bad input never raises, folding is stable."""

from __future__ import annotations

import re

from annuaire_support import ACTIVITY_FILE, MAILBOX_FILE
from hypothesis import given, settings
from hypothesis import strategies as st

from annuaire.ids import fold, idna_domain, idnat_ps_problem
from annuaire.importer import ImportReport, _layout, _Parser
from crypto.identity import luhn_valid

MB_HEADER = MAILBOX_FILE.read_text(encoding="utf-8").splitlines()[0].rstrip("|")
ACT_HEADER = ACTIVITY_FILE.read_text(encoding="utf-8").splitlines()[0].rstrip("|")


def test_luhn_and_ids():
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
    assert luhn_valid("11838425137")
    assert idnat_ps_problem("811838425137") is None
    assert idnat_ps_problem("811838425138") == "bad_rpps_check_digit"
    assert idnat_ps_problem("81183842513") == "bad_rpps_format"
    assert idnat_ps_problem("8118384251３7") == "bad_rpps_format"  # a full-width digit is not a digit here
    assert idnat_ps_problem("0123456789") is None  # ADELI: no key check
    assert fold("  Côté-LEFÈVRE  Éric ") == "cote lefevre eric"
    assert fold("Œdipe Straße Ångström") == "oedipe strasse angstrom"
    assert fold("𝓐𝓑 Ｃ") == "ab c"  # letters with no lower case of their own fold to capitals first
    assert idna_domain("Clinique-Sainte-Hélène.mssante.fr.") == "xn--clinique-sainte-hlne-61bu.mssante.fr"


@given(st.text(max_size=80))
def test_fold_is_stable_and_searchable(s):
    f = fold(s)
    assert re.fullmatch(r"[a-z0-9]*( [a-z0-9]+)*", f)
    assert fold(f) == f


@settings(max_examples=300)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40), max_size=40))
def test_parser_never_raises(fields):
    for header in (MB_HEADER, ACT_HEADER):
        parser = _Parser(_layout(header, ImportReport(source="x")))
        parts = parser.fields("|".join(f.replace("\n", " ") for f in fields))
        if parts is None:
            continue
        raw = parser.raw(parts)
        parser.key(raw)
        row, reason, _ = parser.row(raw)
        assert (row is None) == bool(reason)
