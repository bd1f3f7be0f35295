"""AUTHENTICATE PLAIN / OAUTHBEARER / XOAUTH2 and LOGIN through the sans-IO session, with the
fake core of `imap_fakes` (the real core is exercised end to end in tests/sasl)."""

from __future__ import annotations

import base64
import json
import logging

import pytest
from imap_fakes import ALICE, BOB, BOB_CERT, ORG

from imap.protocol.commands import Authenticate, Login
from imap.protocol.parser import Limits, Parser
from imap.session import Close, State

TOKEN = "tok-alice-on-bob-cert"  # names Alice, bound to Bob's certificate (FakeAuth.tokens)


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def oauthbearer(token: str, authzid: str = "") -> str:
    gs2 = f"n,a={authzid}," if authzid else "n,,"
    return b64(f"{gs2}\x01host=mss.test\x01port=993\x01auth=Bearer {token}\x01\x01")


def xoauth2(user: str, token: str) -> str:
    return b64(f"user={user}\x01auth=Bearer {token}\x01\x01")


# -- PLAIN and LOGIN -------------------------------------------------------------------------


async def test_plain_with_initial_response(make_session):
    d = make_session()
    out = await d.line(f"a AUTHENTICATE PLAIN {b64(f'{chr(0)}{ALICE}{chr(0)}alice-app-pass')}")
    assert out.startswith("a OK [CAPABILITY") and d.session.mailbox == ALICE
    assert d.session.principal.mechanism == "PLAIN" and d.session.principal.mailboxes == {ALICE}
    assert "AUTH=" not in out  # no AUTH= capabilities once authenticated


async def test_plain_with_continuation_and_equal_authzid(make_session):
    d = make_session()
    assert await d.line("a AUTHENTICATE PLAIN") == "+ \r\n"
    out = await d.line(b64(f"{ORG}\0{ORG}\0org-app-pass"))
    assert out.startswith("a OK") and d.session.mailbox == ORG


@pytest.mark.parametrize(
    "message,expect",
    [
        (f"{ALICE}\0{ALICE}\0wrong", "a NO [AUTHENTICATIONFAILED]"),
        (f"\0{BOB}\0bob-app-pass", "a NO [AUTHENTICATIONFAILED]"),  # right password, not Alice's mailbox
        (f"{ORG}\0{ALICE}\0alice-app-pass", "a NO [AUTHENTICATIONFAILED]"),  # authzid != authcid
        (f"{ALICE}\0alice-app-pass", "a BAD"),  # two fields
        ("\0\0", "a BAD"),
    ],
    ids=["wrong password", "another principal's mailbox", "authzid differs", "malformed", "empty"],
)
async def test_plain_refusals(make_session, message, expect):
    d = make_session()
    out = await d.line(f"a AUTHENTICATE PLAIN {b64(message)}")
    assert out.startswith(expect), out
    assert d.session.state is State.NOT_AUTHENTICATED


async def test_plain_needs_a_client_certificate(make_session):
    d = make_session(cert=None)
    out = await d.line(f"a AUTHENTICATE PLAIN {b64(f'{chr(0)}{ALICE}{chr(0)}alice-app-pass')}")
    assert out.startswith("a NO [AUTHENTICATIONFAILED]") and "certificate" in out


async def test_login_with_app_password(make_session):
    d = make_session()
    out = await d.line(f'a LOGIN {ALICE} "alice-app-pass"')
    assert out.startswith("a OK") and d.session.mailbox == ALICE
    assert d.session.principal.mechanism == "LOGIN"


async def test_login_with_literal_password(make_session):
    d = make_session()
    out = await d.send(f"a LOGIN {ALICE} {{14+}}\r\nalice-app-pass\r\n".encode())
    assert out.startswith(b"a OK")


async def test_login_and_plain_before_tls_are_refused_and_not_offered(make_session):
    d = make_session(tls=False)
    out = await d.line("c CAPABILITY")
    assert "LOGINDISABLED" in out and "AUTH=" not in out
    assert (await d.line(f"a LOGIN {ALICE} alice-app-pass")).startswith("a NO [PRIVACYREQUIRED]")
    out = await d.line(f"b AUTHENTICATE PLAIN {b64(f'{chr(0)}{ALICE}{chr(0)}alice-app-pass')}")
    assert out.startswith("b NO [PRIVACYREQUIRED]")
    assert d.session.core.auth.calls == []  # the credentials never reached the core


def test_password_and_initial_response_are_hidden_in_command_reprs():
    p = Parser(Limits())
    p.feed(b"a LOGIN claire s3cret-pass\r\nb AUTHENTICATE PLAIN AGNsYWlyZQBzM2NyZXQ=\r\n")
    login, auth = p.next_event(), p.next_event()
    assert isinstance(login, Login) and isinstance(auth, Authenticate)
    assert login.password == b"s3cret-pass" and "s3cret" not in repr(login) and "s3cret" not in str(login)
    assert "AGNsYWlyZQBzM2NyZXQ" not in repr(auth)


# -- OAUTHBEARER and XOAUTH2 -----------------------------------------------------------------


async def test_oauthbearer_acts_for_the_professional_in_the_token(make_session):
    d = make_session(cert=BOB_CERT)  # e.g. practice software's certificate, the token names Alice
    out = await d.line(f"a AUTHENTICATE OAUTHBEARER {oauthbearer(TOKEN)}")
    assert out.startswith("a OK"), out
    assert d.session.mailbox == ALICE and d.session.principal.mailboxes == {ALICE, ORG}
    assert d.session.principal.mechanism == "OAUTHBEARER"


async def test_oauthbearer_with_authzid_and_continuation(make_session):
    d = make_session(cert=BOB_CERT)
    assert await d.line("a AUTHENTICATE OAUTHBEARER") == "+ \r\n"
    out = await d.line(oauthbearer(TOKEN, ORG))
    assert out.startswith("a OK") and d.session.mailbox == ORG


async def test_oauthbearer_failure_sends_the_error_challenge_first(make_session):
    d = make_session()  # Alice's certificate: the token is bound to Bob's
    out = await d.line(f"a AUTHENTICATE OAUTHBEARER {oauthbearer(TOKEN)}")
    assert out.startswith("+ ") and "a NO" not in out
    error = json.loads(base64.b64decode(out[2:].strip()))
    assert error["status"] == "invalid_token"
    out = await d.line(b64("\x01"))  # RFC 7628 3.2.3: the client's dummy response
    assert out.startswith("a NO [AUTHENTICATIONFAILED]") and TOKEN not in out
    assert d.session.state is State.NOT_AUTHENTICATED
    # the session takes commands again
    assert (await d.line("b NOOP")).startswith("b OK")


async def test_xoauth2_user_is_the_authzid(make_session):
    d = make_session(cert=BOB_CERT)
    out = await d.line(f"a AUTHENTICATE XOAUTH2 {xoauth2(ORG, TOKEN)}")
    assert out.startswith("a OK") and d.session.mailbox == ORG
    assert d.session.core.auth.calls[-1] == ("token", ORG, "XOAUTH2")


async def test_xoauth2_failure_and_authzid_not_entitled(make_session):
    d = make_session(cert=BOB_CERT)
    out = await d.line(f"a AUTHENTICATE XOAUTH2 {xoauth2(BOB, TOKEN)}")  # the token names Alice
    assert out.startswith("+ ")
    assert (await d.line("")).startswith("a NO [AUTHENTICATIONFAILED]")


@pytest.mark.parametrize(
    "message",
    [
        "n,,\x01auth=Basic abc\x01\x01",
        "x,,\x01auth=Bearer t\x01\x01",
        "n,,auth=Bearer t",
        "p=tls-unique,,\x01auth=Bearer t\x01\x01",
        "n,,\x01host=x\x01\x01",
    ],
    ids=["not bearer", "bad gs2 flag", "no kvsep", "channel binding", "no auth"],
)
async def test_malformed_oauthbearer_is_bad(make_session, message):
    d = make_session(cert=BOB_CERT)
    out = await d.line(f"a AUTHENTICATE OAUTHBEARER {b64(message)}")
    assert out.startswith("a BAD"), out
    assert d.session.auth_failures == 0


async def test_unknown_mechanism(make_session):
    out = await make_session().line("a AUTHENTICATE CRAM-MD5")
    assert out.startswith("a NO [CANNOT]")


async def test_failures_of_any_mechanism_count_towards_the_limit(make_session):
    d = make_session()
    await d.line(f"a LOGIN {ALICE} wrong")
    await d.line(f"b AUTHENTICATE PLAIN {b64(f'{chr(0)}{ALICE}{chr(0)}wrong')}")
    await d.line(f"c AUTHENTICATE OAUTHBEARER {oauthbearer('nope')}")
    out = await d.line(b64("\x01"))
    assert "c NO [AUTHENTICATIONFAILED]" in out and "* BYE" in out and isinstance(d.actions[-1], Close)


# -- AUTHENTICATE LOGIN (draft-murchison-sasl-login), offered like the others -----------------------


async def test_login_mechanism_is_offered_after_tls_only(make_session):
    assert "AUTH=LOGIN" in await make_session().line("c CAPABILITY")
    assert "AUTH=LOGIN" not in await make_session(tls=False).line("c CAPABILITY")


async def test_authenticate_login_with_both_challenges(make_session):
    d = make_session()
    assert await d.line("a AUTHENTICATE LOGIN") == f"+ {b64('Username:')}\r\n"
    assert await d.line(b64(ALICE)) == f"+ {b64('Password:')}\r\n"
    out = await d.line(b64("alice-app-pass"))
    assert out.startswith("a OK [CAPABILITY") and d.session.mailbox == ALICE
    assert d.session.principal.mechanism == "LOGIN" and d.session.principal.mailboxes == {ALICE}
    assert d.session.core.auth.calls[-1] == ("app_password", ALICE, "LOGIN")


async def test_authenticate_login_with_the_user_name_as_initial_response(make_session):
    d = make_session()
    assert await d.line(f"a AUTHENTICATE LOGIN {b64(ORG)}") == f"+ {b64('Password:')}\r\n"
    out = await d.line(b64("org-app-pass"))
    assert out.startswith("a OK") and d.session.mailbox == ORG


async def test_authenticate_login_refused_cancelled_and_malformed(make_session):
    d = make_session()
    await d.line(f"a AUTHENTICATE LOGIN {b64(ALICE)}")
    assert (await d.line(b64("wrong"))).startswith("a NO [AUTHENTICATIONFAILED] Authentication failed:")
    assert d.session.auth_failures == 1
    await d.line("b AUTHENTICATE LOGIN")
    assert (await d.line("*")).startswith("b BAD")
    await d.line(f"c AUTHENTICATE LOGIN {b64(ALICE)}")
    assert (await d.line("!!not base64")).startswith("c BAD")
    assert d.session.auth_failures == 1 and d.session.state is State.NOT_AUTHENTICATED
    assert (await d.line("d NOOP")).startswith("d OK")  # the session takes commands again


async def test_three_login_failures_close_the_connection(make_session):
    d = make_session()
    for tag in "ab":
        await d.line(f"{tag} AUTHENTICATE LOGIN {b64(ALICE)}")
        assert "BYE" not in await d.line(b64("wrong"))
    await d.line(f"c AUTHENTICATE LOGIN {b64(ALICE)}")
    out = await d.line(b64("wrong"))
    assert out.startswith("c NO [AUTHENTICATIONFAILED]") and "* BYE Too many failed authentication attempts" in out
    assert isinstance(d.actions[-1], Close)


# -- what the core could not decide --------------------------------------------------------------


async def test_unavailable_checks_are_no_unavailable_and_not_counted(make_session, monkeypatch):
    d = make_session()

    async def down(*args, **kwargs):
        raise ConnectionError("database is unreachable")

    monkeypatch.setattr(d.session.core.auth, "from_app_password", down)
    for tag in "abcd":
        out = await d.line(f"{tag} LOGIN {ALICE} alice-app-pass")
        assert out.startswith(f"{tag} NO [UNAVAILABLE]") and "BYE" not in out
    assert d.session.auth_failures == 0


# -- the authorization identity cannot forge lines --------------------------------------------------


async def test_authzid_with_crlf_forges_neither_a_response_nor_a_log_line(make_session, caplog):
    caplog.set_level(logging.INFO)
    d = make_session()
    forged = f"{BOB}\r\n* OK [ALERT] forged\r\n2026-11-02 INFO mss.auth auth ok id=810000000002"
    out = await d.line(f"a AUTHENTICATE EXTERNAL {b64(forged)}")
    assert out.startswith("a NO [AUTHORIZATIONFAILED]") and out.count("\r\n") == 1 and "forged" not in out
    out = await d.line(f"b AUTHENTICATE EXTERNAL {b64(forged + chr(0))}")
    assert out.startswith("b BAD") and out.count("\r\n") == 1
    out = await d.line(f"c AUTHENTICATE PLAIN {b64(f'{forged}{chr(0)}{ALICE}{chr(0)}alice-app-pass')}")
    assert out.startswith("c NO [AUTHENTICATIONFAILED]") and out.count("\r\n") == 1
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("auth ") for m in messages) == 3
    for m in messages:
        assert "\r" not in m and "\n" not in m and "\x00" not in m, m
    assert any("forged" in m and "\\r\\n" in m for m in messages)
