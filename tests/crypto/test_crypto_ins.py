"""The INS check (crypto/ins.py): the key formula, Corsica, the lenient rules and their refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto.ins import INS_OIDS, InsError, InsPolicy, check_ins, ins_key

# Published examples with their key: python-stdnum's stdnum/fr/nir.py doctests (the first three),
# and the NIR printed in French Wikipedia's "Numéro de sécurité sociale en France" article.
PUBLISHED = ["295109912611193", "253072B07300470", "253072A07300443", "184127645108946"]


def reference_key(body13: str) -> int:
    """The formula of MSSANTE.md, written independently of crypto.ins: substitute, then
    reduce digit by digit (Horner), so no big-integer conversion of the string is shared."""
    if body13[5:7] == "2A":
        body13 = body13[:5] + "19" + body13[7:]
    elif body13[5:7] == "2B":
        body13 = body13[:5] + "18" + body13[7:]
    remainder = 0
    for ch in body13:
        remainder = (remainder * 10 + "0123456789".index(ch)) % 97
    return 97 - remainder


@pytest.mark.parametrize("value", PUBLISHED)
def test_published_examples_are_valid(value: str) -> None:
    ins = check_ins(value)
    assert ins.value == value
    assert ins.key == value[13:]


def test_worked_example_by_hand() -> None:
    # 1841276451089 = 97 * 18982231454 + 51, so the key is 97 - 51 = 46.
    assert 1841276451089 % 97 == 51
    assert ins_key("1841276451089") == "46"
    ins = check_ins("1 84 12 76 451 089 46")
    assert (ins.sex, ins.year, ins.month, ins.department, ins.commune, ins.order, ins.key) == (
        "M",
        "84",
        "12",
        "76",
        "451",
        "089",
        "46",
    )
    assert ins.value == "184127645108946" and str(ins) == ins.value


def test_corsica_replaces_2a_by_19_and_2b_by_18() -> None:
    # Same digits elsewhere: 2A is read as 19, 2B as 18, so the keys differ by 10^6 mod 97.
    assert ins_key("253072A073004") == f"{97 - int('2530719073004') % 97:02d}" == "43"
    assert ins_key("253072B073004") == f"{97 - int('2530718073004') % 97:02d}" == "70"
    assert check_ins("253072a07300443").department == "2A"  # lower case is normalised
    # The 19/18 substitution, not the digits 19/18 themselves: 2A with 2B's key is refused.
    with pytest.raises(InsError) as err:
        check_ins("253072A07300470")
    assert err.value.reason == "key"


def test_key_00_98_99_never_valid_and_97_is() -> None:
    # A body divisible by 97 has key 97 (not 00).
    body = next(f"1840175{n:06d}" for n in range(1000) if int(f"1840175{n:06d}") % 97 == 0)
    assert ins_key(body) == "97"
    check_ins(body + "97")
    for bad in ("00", "98", "99"):
        with pytest.raises(InsError) as err:
            check_ins(body + bad)
        assert err.value.reason == "key"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("18412764510894", "length"),
        ("1841276451089460", "length"),
        ("", "length"),
        ("18412764510894X", "characters"),
        ("1841276451O8946", "characters"),  # letter O for zero
        ("18412764510894\u0664", "characters"),  # Arabic-Indic digit four
        ("2530720C7300443", "characters"),  # a letter outside the department field
        ("253072C07300443", "department"),  # stdnum's invalid-format example
        ("2530712A7300443", "characters"),  # 2A shifted out of the department field
        ("584127645108946", "sex"),
        ("084127645108946", "sex"),
        ("184127645108947", "key"),  # one digit of the key off
        ("184127645108046", "key"),  # one digit of the order off
    ],
)
def test_refusals_name_the_failed_check(value: str, reason: str) -> None:
    with pytest.raises(InsError) as err:
        check_ins(value)
    assert err.value.reason == reason, str(err.value)
    assert str(err.value)


def test_not_a_string() -> None:
    with pytest.raises(InsError) as err:
        check_ins(184127645108946)  # type: ignore[arg-type]
    assert err.value.reason == "type"


def _with_key(body: str) -> str:
    return body + ins_key(body)


@pytest.mark.parametrize("month", ["01", "12", "20", "30", "42", "50", "99"])
def test_registry_months_are_accepted(month: str) -> None:
    assert check_ins(_with_key(f"184{month}76451089")).month == month


@pytest.mark.parametrize("month", ["00", "13", "19", "43", "49"])
def test_months_never_issued_are_refused_unless_the_policy_opens_them(month: str) -> None:
    value = _with_key(f"184{month}76451089")
    with pytest.raises(InsError) as err:
        check_ins(value)
    assert err.value.reason == "month"
    assert check_ins(value, policy=InsPolicy(months=None)).month == month


@pytest.mark.parametrize(("digit", "sex"), [("1", "M"), ("2", "F"), ("3", "M"), ("4", "F"), ("7", "M"), ("8", "F")])
def test_known_sex_digits(digit: str, sex: str) -> None:
    assert check_ins(_with_key(digit + "841276451089")).sex == sex


def test_sex_digits_are_a_policy() -> None:
    value = _with_key("7841276451089")
    with pytest.raises(InsError) as err:
        check_ins(value, policy=InsPolicy(sex_digits=frozenset("12")))
    assert err.value.reason == "sex"
    odd = _with_key("5841276451089")
    assert check_ins(odd, policy=InsPolicy(sex_digits=frozenset("125"))).sex is None


@pytest.mark.parametrize("department", ["01", "20", "75", "96", "97", "99", "2A", "2B"])
def test_departments(department: str) -> None:
    assert check_ins(_with_key(f"18412{department}451089")).department == department


def test_kind_comes_from_the_oid_only() -> None:
    assert check_ins(PUBLISHED[0]).kind is None
    for oid, kind in INS_OIDS.items():
        assert check_ins(PUBLISHED[0], oid=oid).kind == kind
    with pytest.raises(InsError) as err:
        check_ins(PUBLISHED[0], oid="1.2.250.1.213.1.4.7")
    assert err.value.reason == "oid"


def test_separators_are_removed() -> None:
    for written in (
        "1 84 12 76 451 089 46",
        "1.84.12.76.451.089.46",
        "1-84-12-76-451-089-46",
        " 184127645108946\u00a0",
    ):
        assert check_ins(written).value == "184127645108946"


# ---------------------------------------------------------------- properties against the reference

_department = st.one_of(st.integers(0, 99).map(lambda n: f"{n:02d}"), st.sampled_from(["2A", "2B"]))
_body = st.builds(
    lambda sex, year, month, dep, rest: f"{sex}{year:02d}{month:02d}{dep}{rest:06d}",
    st.sampled_from("123478"),
    st.integers(0, 99),
    st.sampled_from(sorted(InsPolicy().months or ())),
    _department,
    st.integers(0, 999_999),
)


@given(_body)
def test_property_key_matches_reference(body: str) -> None:
    assert int(ins_key(body)) == reference_key(body)
    assert 1 <= int(ins_key(body)) <= 97
    assert check_ins(body + f"{reference_key(body):02d}").value == body + f"{reference_key(body):02d}"


@given(_body, st.integers(0, 99))
def test_property_only_the_reference_key_is_accepted(body: str, key: int) -> None:
    value = f"{body}{key:02d}"
    if key == reference_key(body):
        assert check_ins(value).key == f"{key:02d}"
    else:
        with pytest.raises(InsError) as err:
            check_ins(value)
        assert err.value.reason == "key"


@given(_body, st.integers(0, 12), st.sampled_from("0123456789"))
def test_property_a_single_digit_typo_is_caught(body: str, position: int, digit: str) -> None:
    # mod 97 catches every single-digit substitution (10^k is never 0 mod 97).
    value = body + f"{reference_key(body):02d}"
    if value[position] == digit or (position in (5, 6) and value[5:7] in ("2A", "2B")):
        return
    typo = value[:position] + digit + value[position + 1 :]
    with pytest.raises(InsError) as err:
        check_ins(typo)
    assert err.value.reason in ("key", "sex", "month")
