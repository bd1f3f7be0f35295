"""MAIL and RCPT paths (`SubmissionSMTP._getaddr`): the plain form `<local@domain>` is read by
one regular expression instead of the stdlib's RFC 5322 parser, and must give exactly what
the parser gives; every other form still goes through the parser."""

from __future__ import annotations

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp.server import _PLAIN_PATH, SubmissionSMTP

ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
#: Blanks other than space and tab that `str.lstrip` takes (the parser strips them after one).
BLANKS = "\x0b\x0c\x1c\x1f\x85\xa0\u3000"


def _session(local_part_limit: int = 0) -> SubmissionSMTP:
    smtp = object.__new__(SubmissionSMTP)  # only `_getaddr` is used: no handler, no loop
    smtp.local_part_limit = local_part_limit
    return smtp


def _by_the_parser(smtp: SubmissionSMTP, arg: str) -> tuple[str | None, str | None]:
    try:
        return SMTP._getaddr(smtp, arg)
    except Exception:  # noqa: BLE001 - what SubmissionSMTP makes of the parser's own bugs
        return None, None


@pytest.mark.parametrize(
    "arg",
    [
        "<alice@hopital-demo.mssante.test>",
        "<alice@hopital-demo.mssante.test> SIZE=10240 BODY=8BITMIME",
        "<a.b+tag@x.test>SIZE=1",
        "  <dr.martin@cabinet.test>",
        "<o'brien@x.test>",
        "<a@b>",
    ],
)
def test_plain_paths_take_the_fast_way_and_agree_with_the_parser(arg) -> None:
    smtp = _session()
    assert _PLAIN_PATH.match(arg) is not None
    assert smtp._getaddr(arg) == _by_the_parser(smtp, arg)


@pytest.mark.parametrize(
    "arg",
    [
        "<>",
        '<"quoted local"@x.test>',
        "<a@[192.0.2.1]>",
        "<a..b@x.test>",
        "<.a@x.test>",
        "<a@-x.test>",
        "<a@x-.test>",
        "<a(comment)@x.test>",
        "<a@x.test",
        "a@x.test",
        "<a@x.test >",
        "<\ta@x.test>",
        "<a@[>",
        "<@relay.test:a@x.test>",
    ],
)
def test_other_paths_go_to_the_parser(arg) -> None:
    smtp = _session()
    assert _PLAIN_PATH.match(arg) is None
    assert smtp._getaddr(arg) == _by_the_parser(smtp, arg)


def test_the_local_part_limit_holds_on_the_fast_way() -> None:
    smtp = _session(local_part_limit=64)
    assert smtp._getaddr(f"<{'a' * 64}@x.test>")[0] == f"{'a' * 64}@x.test"
    assert smtp._getaddr(f"<{'a' * 65}@x.test>") == (None, None) == _by_the_parser(smtp, f"<{'a' * 65}@x.test>")


@settings(max_examples=400, deadline=None)
@given(
    st.text(alphabet=ATEXT + '.@<>[]"() \t' + BLANKS, max_size=40),
    st.sampled_from(["", " SIZE=1", "BODY=7BIT", " "]),
)
def test_whatever_the_path_the_answer_is_the_parsers(path, params) -> None:
    smtp = _session(local_part_limit=64)
    arg = path + params
    assert smtp._getaddr(arg) == _by_the_parser(smtp, arg)


@settings(max_examples=400, deadline=None)
@given(
    st.from_regex(_PLAIN_PATH, fullmatch=True),
    st.text(alphabet=" \t()cSIZE=1" + BLANKS, max_size=12),
)
def test_every_plain_path_gives_the_parsers_answer(path, params) -> None:
    smtp = _session(local_part_limit=64)
    arg = path + params
    assert smtp._getaddr(arg) == _by_the_parser(smtp, arg)
