"""`smtp.dsn_params`: the DSN parameters of MAIL and RCPT (RFC 3461 4), case kept, xtext
decoded, every syntax error a `501 5.5.4` (sans-IO: no server needed)."""

from __future__ import annotations

import pytest

from mss.records import MailDsn, RcptDsn
from smtp.dsn_params import DsnSyntaxError, decode_xtext, encode_xtext, parse_mail_params, parse_rcpt_params


def test_ret_and_envid_are_taken_out_and_the_rest_is_kept_as_sent():
    dsn, rest = parse_mail_params("SIZE=100 ret=hdrs ENVID=QQ+2Bx+3Dy-Abc BODY=8BITMIME")
    assert dsn == MailDsn(ret="HDRS", envid="QQ+x=y-Abc")
    assert rest == "SIZE=100 BODY=8BITMIME"


def test_no_dsn_parameter_gives_none_and_the_parameters_unchanged():
    assert parse_mail_params("SIZE=10 SMTPUTF8") == (None, "SIZE=10 SMTPUTF8")
    assert parse_rcpt_params("") == (None, "")


def test_notify_lists_and_never():
    dsn, rest = parse_rcpt_params("NOTIFY=success,Delay ORCPT=rfc822;Claire.Martin+40example.org")
    assert dsn == RcptDsn(notify=frozenset({"SUCCESS", "DELAY"}), orcpt="rfc822;Claire.Martin@example.org")
    assert rest == ""
    assert parse_rcpt_params("NOTIFY=NEVER")[0] == RcptDsn(notify=frozenset(), orcpt=None)
    assert parse_rcpt_params("ORCPT=RFC822;a+40b.test")[0] == RcptDsn(notify=None, orcpt="RFC822;a@b.test")


def test_xtext_round_trip_with_utf8():
    text = "Zoé+=\u00e9 x@y"
    assert decode_xtext(encode_xtext(text), what="x") == text
    assert encode_xtext("a+b=c d") == "a+2Bb+3Dc+20d"
    assert decode_xtext("+41+62", what="x") == "Ab"  # upper or lower case hex digits
    assert decode_xtext("+4a", what="x") == "J"


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ("NOTIFY=NEVER,SUCCESS", "NEVER"),
        ("NOTIFY=SUCCESS,SUCCESS", "twice"),
        ("NOTIFY=SOMETIMES", "NOTIFY"),
        ("NOTIFY", "NOTIFY"),
        ("NOTIFY=", "NOTIFY"),
        ("NOTIFY=SUCCESS NOTIFY=FAILURE", "more than once"),
        ("ORCPT=rfc822", "addr-type"),
        ("ORCPT=;a+40b.test", "addr-type"),
        ("ORCPT=rfc822;", "addr-type"),
        ("ORCPT=rfc822;a+4", "xtext"),
        ("ORCPT=rfc822;a+ZZb", "xtext"),
        ("ORCPT=rfc822;a=b", "xtext"),
        ("ORCPT=rfc822;a+0D+0Ab", "control"),
        ("ORCPT=rfc822;+FF+FE", "UTF-8"),
        ("ORCPT=rfc822;" + "a" * 500, "500"),
        ("ORCPT=rfc822;a@b ORCPT=rfc822;c@d", "more than once"),
    ],
)
def test_rcpt_syntax_errors_are_501_5_5_4(params, needle):
    with pytest.raises(DsnSyntaxError) as err:
        parse_rcpt_params(params)
    assert err.value.reply.startswith("501 5.5.4 ")
    assert needle in err.value.reply


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ("RET=BODY", "FULL or HDRS"),
        ("RET", "FULL or HDRS"),
        ("RET=FULL RET=HDRS", "more than once"),
        ("ENVID=", "value"),
        ("ENVID=" + "x" * 101, "100"),
        ("ENVID=a+2", "xtext"),
        ("ENVID=a+00b", "control"),
        ("ENVID=x ENVID=y", "more than once"),
    ],
)
def test_mail_syntax_errors_are_501_5_5_4(params, needle):
    with pytest.raises(DsnSyntaxError) as err:
        parse_mail_params(params)
    assert err.value.reply.startswith("501 5.5.4 ")
    assert needle in err.value.reply


def test_envid_of_exactly_100_characters_and_rcpt_keywords_in_mail_are_left_alone():
    assert parse_mail_params("ENVID=" + "x" * 100)[0] == MailDsn(envid="x" * 100)
    # NOTIFY belongs to RCPT: left for aiosmtpd, which refuses it as unknown (555).
    assert parse_mail_params("NOTIFY=SUCCESS") == (None, "NOTIFY=SUCCESS")
    assert parse_rcpt_params("RET=FULL") == (None, "RET=FULL")
