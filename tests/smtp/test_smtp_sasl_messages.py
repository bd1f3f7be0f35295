"""The SASL client-message parsers of `smtp.auth` (shared with IMAP AUTHENTICATE)."""

from __future__ import annotations

import json

import pytest

from smtp import auth as sasl


def test_plain_fields_and_authzid_rule():
    assert sasl.plain(b"\0claire@x.test\0pw").username == "claire@x.test"
    assert sasl.plain(b"Claire@X.test\0claire@x.test\0pw").password == "pw"  # same identity: accepted
    with pytest.raises(sasl.SaslError) as exc:
        sasl.plain(b"org@x.test\0claire@x.test\0pw")
    assert sasl.smtp_reply(exc.value).startswith("535 5.7.8") and "pw" not in exc.value.log_reason
    for bad in (b"claire\0pw", b"\0\0pw", b"\0claire\0", b"\0\xff\0pw"):
        with pytest.raises(sasl.SaslError) as exc:
            sasl.plain(bad)
        assert sasl.smtp_reply(exc.value).startswith("501")
    assert "pw" not in repr(sasl.plain(b"\0claire@x.test\0pw"))


def test_oauthbearer_gs2_header_and_kv_list():
    c = sasl.oauthbearer(b"n,a=user=2Cname=3Dx@x.test,\x01host=h\x01port=587\x01auth=Bearer abc.def.ghi\x01\x01")
    assert c.authzid == "user,name=x@x.test" and c.token == "abc.def.ghi"
    assert "abc.def" not in repr(c)
    c = sasl.oauthbearer(b"y,,\x01auth=bearer tok\x01\x01")
    assert c.authzid is None and c.token == "tok"


@pytest.mark.parametrize(
    "message",
    [
        b"n,,\x01auth=Bearer t",
        b"n,a=x=41,\x01auth=Bearer t\x01\x01",
        b"p=tls-unique,,\x01auth=Bearer t\x01\x01",
        b"n,\x01auth=Bearer t\x01\x01",
        b"n,,\x01auth=Bearer \x01\x01",
        b"n,,\x01auth=Bearer a b\x01\x01",
        b"n,,\x01noequals\x01\x01",
        b"n,,\x01host=x\x01\x01",
        b"",
    ],
)
def test_oauthbearer_malformed(message):
    with pytest.raises(sasl.SaslError) as exc:
        sasl.oauthbearer(message)
    assert sasl.smtp_reply(exc.value).startswith("501 5.5.2")


def test_xoauth2():
    c = sasl.xoauth2(b"user=org@x.test\x01auth=Bearer tok\x01\x01")
    assert (c.authzid, c.token) == ("org@x.test", "tok")
    assert sasl.xoauth2(b"user=\x01auth=Bearer tok\x01\x01").authzid is None
    with pytest.raises(sasl.SaslError):
        sasl.xoauth2(b"user=org@x.test\x01\x01")


def test_error_challenges_are_json():
    assert json.loads(sasl.bearer_error("OAUTHBEARER"))["status"] == "invalid_token"
    assert json.loads(sasl.bearer_error("XOAUTH2"))["status"] == "401"
