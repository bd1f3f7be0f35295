"""The core's SASL exchange (`mss.sasl.exchange` on `mss.auth.ConnectionAuthentication`), sans-IO:
response lines in, Challenge / Success / Failure out, for every mechanism; failure counting
across exchanges; and the one log line of each result, with nothing raw from the client in it.

The credential checker is a stand-in (the PKI is exercised in tests/identity and end to end in
test_sasl_e2e.py); the exchange, the counting and the logging are the real ones.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mss import sasl
from mss.auth import ConnectionAuthentication, CoreCredentials, log_safe
from mss.errors import AuthenticationFailed, AuthenticationUnavailable
from mss.principal import Principal
from mss.services import Challenge, ClientConnection, Failure, Success

ALICE = "alice@test.mss"
ORG = "cabinet@test.mss"
BOB = "bob@test.mss"
CERT = b"cert-alice"
PASSWORD = "alice-app-pass"
TOKEN = "tok.alice"  # names Alice, bound to CERT

ALICE_PRINCIPAL = Principal("PS", "810000000001", "Alice", frozenset({ALICE, ORG}), primary=ALICE)


class Checker:
    """A `mss.auth.CredentialChecker`: one certificate, one app password, one token.

    `down` makes every check fail as an unreachable database would ("jwks": the token
    verifier's JWKS); `sloppy_detail` puts raw client input into the refusal's log detail, as a
    careless checker might, to show that the core's log line escapes it on its own.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.down: str | None = None
        self.sloppy_detail = False

    def _check_up(self) -> None:
        if self.down == "db":
            raise OSError("database is unreachable")

    async def from_certificate(self, der: bytes | None, *, peer: str = "?") -> Principal:
        self.calls.append("certificate")
        await asyncio.sleep(0)
        self._check_up()
        if not der:
            raise AuthenticationFailed("no_certificate", "a health-PKI client certificate is required")
        if der != CERT:
            raise AuthenticationFailed("untrusted", "client certificate not accepted")
        return ALICE_PRINCIPAL

    async def from_app_password(
        self, username: str, password: str, cert_der: bytes | None, *, peer: str = "?", mechanism: str = "PLAIN"
    ) -> Principal:
        self.calls.append("password")
        principal = await self.from_certificate(cert_der, peer=peer)
        detail = f"mailbox={username}" if self.sloppy_detail else f"mailbox={username!r}"
        if username.lower() != ALICE or password != PASSWORD:
            raise AuthenticationFailed("app_password:wrong", "invalid credentials", detail=detail)
        return replace(principal.restricted_to(username), mechanism=mechanism)

    async def from_token(
        self,
        token: str,
        cert_der: bytes | None,
        authzid: str | None = None,
        *,
        peer: str = "?",
        mechanism: str = "OAUTHBEARER",
    ) -> Principal:
        self.calls.append("token")
        if self.down == "jwks":
            raise AuthenticationUnavailable("token:jwks_unavailable", detail="https://jwks.test: timed out")
        principal = await self.from_certificate(cert_der, peer=peer)
        if token != TOKEN:
            raise AuthenticationFailed("token:bad_signature", "invalid token")
        principal = replace(principal, mechanism=mechanism)
        if authzid:
            try:
                return principal.restricted_to(authzid)
            except PermissionError as exc:
                detail = f"authzid={authzid}" if self.sloppy_detail else f"authzid={authzid!r}"
                raise AuthenticationFailed(
                    "authzid_not_entitled", "not authorized for that mailbox", detail=detail
                ) from exc
        return principal


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def oauthbearer(tok: str, authzid: str = "") -> str:
    gs2 = f"n,a={authzid}," if authzid else "n,,"
    return b64(f"{gs2}\x01host=mss.test\x01port=993\x01auth=Bearer {tok}\x01\x01")


def xoauth2(user: str, tok: str) -> str:
    return b64(f"user={user}\x01auth=Bearer {tok}\x01\x01")


def connection(checker: Checker | None = None, cert: bytes | None = CERT) -> ConnectionAuthentication:
    return CoreCredentials(checker or Checker()).authentication(ClientConnection("imap", "192.0.2.1:4321", cert))


async def run(auth: ConnectionAuthentication, mechanism: str, lines: list[str | None]) -> list[object]:
    """Feed `lines` to a new exchange; the steps it returned, summarised."""
    exchange = auth.exchange(mechanism)
    out: list[object] = []
    for line in lines:
        step = await exchange.step(line)
        if isinstance(step, Challenge):
            out.append(("challenge", step.data))
        elif isinstance(step, Success):
            out.append(("ok", step.principal.default_mailbox, step.principal.mechanism))
        else:
            out.append(("fail", step.kind))
    return out


ERROR_OAUTHBEARER = sasl.bearer_error("OAUTHBEARER")
ERROR_XOAUTH2 = sasl.bearer_error("XOAUTH2")

#: (mechanism, the client's lines: None = no initial response, the steps expected)
EXCHANGES: dict[str, tuple[str, list[str | None], list[tuple[object, ...]]]] = {
    # EXTERNAL (RFC 4422 App. A): the certificate; the message is an optional authzid
    "external, empty initial response": ("EXTERNAL", ["="], [("ok", ALICE, "EXTERNAL")]),
    "external, empty challenge, empty line": ("EXTERNAL", [None, ""], [("challenge", b""), ("ok", ALICE, "EXTERNAL")]),
    "external, authzid of an ORG mailbox": ("EXTERNAL", [b64(ORG)], [("ok", ORG, "EXTERNAL")]),
    "external, authzid in another case": ("EXTERNAL", [b64(ORG.upper())], [("ok", ORG, "EXTERNAL")]),
    "external, authzid not entitled": ("EXTERNAL", [b64(BOB)], [("fail", "unauthorized")]),
    "external, authzid with NUL": ("EXTERNAL", [b64(f"{ORG}\0x")], [("fail", "malformed")]),
    "external, not base64": ("EXTERNAL", ["!!!"], [("fail", "malformed")]),
    "external, cancelled": ("EXTERNAL", [None, "*"], [("challenge", b""), ("fail", "cancelled")]),
    # PLAIN (RFC 4616)
    "plain, initial response": ("PLAIN", [b64(f"\0{ALICE}\0{PASSWORD}")], [("ok", ALICE, "PLAIN")]),
    "plain, after the empty challenge": (
        "PLAIN",
        [None, b64(f"{ALICE}\0{ALICE}\0{PASSWORD}")],
        [("challenge", b""), ("ok", ALICE, "PLAIN")],
    ),
    "plain, lower-case mechanism name": ("plain", [b64(f"\0{ALICE}\0{PASSWORD}")], [("ok", ALICE, "PLAIN")]),
    "plain, wrong password": ("PLAIN", [b64(f"\0{ALICE}\0wrong")], [("fail", "refused")]),
    "plain, authzid differs": ("PLAIN", [b64(f"{ORG}\0{ALICE}\0{PASSWORD}")], [("fail", "refused")]),
    "plain, two fields": ("PLAIN", [b64(f"{ALICE}\0{PASSWORD}")], [("fail", "malformed")]),
    "plain, cancelled": ("PLAIN", [None, " * "], [("challenge", b""), ("fail", "cancelled")]),
    # LOGIN (draft-murchison-sasl-login): Username:, Password:
    "login, both challenges": (
        "LOGIN",
        [None, b64(ALICE), b64(PASSWORD)],
        [("challenge", b"Username:"), ("challenge", b"Password:"), ("ok", ALICE, "LOGIN")],
    ),
    "login, user name as initial response": (
        "LOGIN",
        [b64(ALICE), b64(PASSWORD)],
        [("challenge", b"Password:"), ("ok", ALICE, "LOGIN")],
    ),
    "login, wrong password": ("LOGIN", [b64(ALICE), b64("wrong")], [("challenge", b"Password:"), ("fail", "refused")]),
    "login, empty user name": ("LOGIN", ["="], [("fail", "malformed")]),
    "login, empty password": ("LOGIN", [b64(ALICE), ""], [("challenge", b"Password:"), ("fail", "malformed")]),
    "login, password not UTF-8": (
        "LOGIN",
        [b64(ALICE), b64(b"\xff\xfe")],
        [("challenge", b"Password:"), ("fail", "malformed")],
    ),
    "login, cancelled at the password": (
        "LOGIN",
        [None, b64(ALICE), "*"],
        [("challenge", b"Username:"), ("challenge", b"Password:"), ("fail", "cancelled")],
    ),
    # OAUTHBEARER (RFC 7628), XOAUTH2
    "oauthbearer, initial response": ("OAUTHBEARER", [oauthbearer(TOKEN)], [("ok", ALICE, "OAUTHBEARER")]),
    "oauthbearer, authzid": (
        "OAUTHBEARER",
        [None, oauthbearer(TOKEN, ORG)],
        [("challenge", b""), ("ok", ORG, "OAUTHBEARER")],
    ),
    "oauthbearer, refused token: error challenge, %x01, failure": (
        "OAUTHBEARER",
        [oauthbearer("forged"), b64("\x01")],
        [("challenge", ERROR_OAUTHBEARER), ("fail", "refused")],
    ),
    "oauthbearer, refused token answered with *": (
        "OAUTHBEARER",
        [oauthbearer("forged"), "*"],
        [("challenge", ERROR_OAUTHBEARER), ("fail", "refused")],
    ),
    "oauthbearer, authzid not entitled": (
        "OAUTHBEARER",
        [oauthbearer(TOKEN, BOB), b64("\x01")],
        [("challenge", ERROR_OAUTHBEARER), ("fail", "refused")],
    ),
    "oauthbearer, no kvsep": ("OAUTHBEARER", [b64(f"n,,auth=Bearer {TOKEN}")], [("fail", "malformed")]),
    "oauthbearer, channel binding": (
        "OAUTHBEARER",
        [b64(f"p=tls-unique,,\x01auth=Bearer {TOKEN}\x01\x01")],
        [("fail", "malformed")],
    ),
    "xoauth2, user narrows": ("XOAUTH2", [xoauth2(ORG, TOKEN)], [("ok", ORG, "XOAUTH2")]),
    "xoauth2, refused token: error challenge, empty line, failure": (
        "XOAUTH2",
        [xoauth2(ALICE, "forged"), ""],
        [("challenge", ERROR_XOAUTH2), ("fail", "refused")],
    ),
    # anything else
    "unsupported mechanism": ("CRAM-MD5", [None], [("fail", "unsupported")]),
    "unsupported mechanism with an initial response": ("DIGEST-MD5", ["AAAA"], [("fail", "unsupported")]),
}


@pytest.mark.parametrize("case", list(EXCHANGES))
async def test_exchange(case: str) -> None:
    mechanism, lines, expected = EXCHANGES[case]
    auth = connection()
    assert await run(auth, mechanism, lines) == expected
    counted = expected[-1][0] == "fail" and expected[-1][1] in ("refused", "unauthorized")
    assert auth.failures == (1 if counted else 0)


def test_the_same_mechanisms_on_every_protocol() -> None:
    credentials = CoreCredentials(Checker())
    smtp = credentials.authentication(ClientConnection("smtp", "x", CERT))
    imap = credentials.authentication(ClientConnection("imap", "x", CERT))
    assert smtp.mechanisms == imap.mechanisms == ("EXTERNAL", "PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2")


async def test_error_challenge_json() -> None:
    assert json.loads(ERROR_OAUTHBEARER)["status"] == "invalid_token"
    assert json.loads(ERROR_XOAUTH2)["status"] == "401"


async def test_without_certificate_every_mechanism_is_refused() -> None:
    auth = connection(cert=None)
    assert await run(auth, "EXTERNAL", ["="]) == [("fail", "refused")]
    assert await run(auth, "PLAIN", [b64(f"\0{ALICE}\0{PASSWORD}")]) == [("fail", "refused")]
    steps = await run(auth, "OAUTHBEARER", [oauthbearer(TOKEN), b64("\x01")])
    assert steps == [("challenge", ERROR_OAUTHBEARER), ("fail", "refused")]


# -- counting --------------------------------------------------------------------------------------


async def test_refusals_of_any_mechanism_count_to_the_close() -> None:
    auth = connection()
    first = await auth.password(ALICE, "wrong")
    second = await auth.exchange("EXTERNAL").step(b64(BOB))  # unauthorized counts too
    exchange = auth.exchange("OAUTHBEARER")
    challenge = await exchange.step(oauthbearer("forged"))
    third = await exchange.step(b64("\x01"))
    assert isinstance(challenge, Challenge)
    assert isinstance(first, Failure) and isinstance(second, Failure) and isinstance(third, Failure)
    assert [(f.kind, f.close) for f in (first, second, third)] == [
        ("refused", False),
        ("unauthorized", False),
        ("refused", True),
    ]
    assert auth.failures == 3
    fourth = await auth.password(ALICE, "wrong")
    assert isinstance(fourth, Failure) and fourth.close


async def test_malformed_cancelled_unsupported_are_not_counted() -> None:
    auth = connection()
    for _ in range(5):
        assert await run(auth, "PLAIN", ["!!!"]) == [("fail", "malformed")]
        assert await run(auth, "LOGIN", [None, "*"]) == [("challenge", b"Username:"), ("fail", "cancelled")]
        assert await run(auth, "GSSAPI", [None]) == [("fail", "unsupported")]
    assert auth.failures == 0
    assert await run(auth, "PLAIN", [b64(f"\0{ALICE}\0{PASSWORD}")]) == [("ok", ALICE, "PLAIN")]


@pytest.mark.parametrize("down", ["db", "jwks"])
async def test_unavailable_is_not_counted(down: str) -> None:
    checker = Checker()
    auth = connection(checker)
    checker.down = down
    for _ in range(4):
        steps = await run(auth, "OAUTHBEARER", [oauthbearer(TOKEN)])
        assert steps == [("fail", "unavailable")]  # no error challenge: nothing was refused
        if down == "db":
            assert await run(auth, "PLAIN", [b64(f"\0{ALICE}\0{PASSWORD}")]) == [("fail", "unavailable")]
            assert await run(auth, "EXTERNAL", ["="]) == [("fail", "unavailable")]
            assert (await auth.certificate()).kind == "unavailable"  # type: ignore[union-attr]
    assert auth.failures == 0
    checker.down = None  # back: an unavailable certificate check was not remembered
    assert await run(auth, "EXTERNAL", ["="]) == [("ok", ALICE, "EXTERNAL")]


async def test_login_outside_sasl() -> None:
    auth = connection()
    ok = await auth.password(ALICE.upper(), PASSWORD)
    assert isinstance(ok, Success) and ok.principal.mechanism == "LOGIN" and ok.principal.mailboxes == {ALICE}


# -- the certificate: checked once per connection ---------------------------------------------------


async def test_certificate_is_checked_once_for_the_connection() -> None:
    checker = Checker()
    auth = connection(checker)
    first, second = await asyncio.gather(auth.certificate(), auth.certificate())  # SMTP: TLS up, then MAIL
    assert isinstance(first, Success) and first == second
    assert await run(auth, "EXTERNAL", ["="]) == [("ok", ALICE, "EXTERNAL")]
    assert checker.calls == ["certificate"]


async def test_refused_certificate_is_not_counted_until_the_client_tries() -> None:
    auth = connection(cert=b"forged")
    refused = await auth.certificate()
    assert (
        isinstance(refused, Failure)
        and refused.kind == "refused"
        and refused.public == "client certificate not accepted"
    )
    assert auth.failures == 0  # SMTP's implicit check: the client asked for nothing
    assert await run(auth, "EXTERNAL", ["="]) == [("fail", "refused")]
    assert auth.failures == 1


async def test_a_principal_without_mailbox_never_succeeds() -> None:
    checker = Checker()
    nobody = Principal("ORG", "1750001232", "Nobody", frozenset())

    async def empty(der: bytes | None, *, peer: str = "?") -> Principal:
        return nobody

    checker.from_certificate = empty  # type: ignore[method-assign]
    result = await connection(checker).certificate()
    assert isinstance(result, Failure) and result.kind == "unauthorized"


# -- misuse by a front end ----------------------------------------------------------------------------


async def test_a_finished_exchange_takes_no_more_lines() -> None:
    exchange = connection().exchange("EXTERNAL")
    assert isinstance(await exchange.step("="), Success)
    with pytest.raises(RuntimeError):
        await exchange.step("=")
    exchange = connection().exchange("PLAIN")
    await exchange.step(None)
    with pytest.raises(RuntimeError):
        await exchange.step(None)  # "no initial response" only makes sense first


# -- the log ----------------------------------------------------------------------------------------


def auth_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mss.auth" and r.levelno >= logging.INFO]


async def test_each_result_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mss.auth")
    auth = connection()
    await run(auth, "LOGIN", [None, b64(ALICE), b64("s3cret-guess")])
    await run(auth, "OAUTHBEARER", [oauthbearer("forged.token"), b64("\x01")])
    await run(auth, "PLAIN", [b64(f"\0{ALICE}\0{PASSWORD}")])
    lines = auth_records(caplog)
    assert len(lines) == 3, lines
    assert lines[0].startswith("auth refused peer=192.0.2.1:4321 protocol=imap mech=LOGIN reason=app_password:wrong")
    assert "failures=1/3" in lines[0]
    assert lines[1].startswith(
        "auth refused peer=192.0.2.1:4321 protocol=imap mech=OAUTHBEARER reason=token:bad_signature"
    )
    assert lines[2].startswith("auth ok peer=192.0.2.1:4321 protocol=imap mech=PLAIN kind=PS id=810000000001")
    text = "\n".join(lines)
    assert PASSWORD not in text and "forged.token" not in text and "s3cret-guess" not in text


FORGED = "bob@test.mss\r\n2026-11-02 10:00:00 INFO mss.auth auth ok peer=10.0.0.1:1 id=810000000009\x00"


@pytest.mark.parametrize("sloppy", [False, True], ids=["careful checker", "sloppy checker"])
async def test_client_input_reaches_no_log_line_raw(caplog: pytest.LogCaptureFixture, sloppy: bool) -> None:
    """An authzid (or user name) with CR, LF or NUL cannot forge a log line (IMAP logged the
    refused EXTERNAL authzid raw): the core's line escapes every value, whatever the checker
    put into its refusal."""
    caplog.set_level(logging.INFO, logger="mss.auth")
    checker = Checker()
    checker.sloppy_detail = sloppy
    auth = CoreCredentials(checker, max_failures=100).authentication(
        ClientConnection("smtp", "192.0.2.1:25\r\nforged", CERT)
    )
    no_nul = FORGED.replace("\x00", "")
    await run(auth, "EXTERNAL", [b64(FORGED)])  # NUL: malformed
    await run(auth, "EXTERNAL", [b64(no_nul)])  # not entitled: unauthorized, the authzid in the log
    await run(auth, "PLAIN", [b64(f"{no_nul}\0{ALICE}\0{PASSWORD}")])  # authzid differs
    await run(auth, "LOGIN", [b64(FORGED), b64("wrong")])  # user name in the checker's detail
    await run(auth, "OAUTHBEARER", [oauthbearer(TOKEN, no_nul.replace("=", "=3D").replace(",", "=2C")), "AQ=="])
    await run(auth, "XOAUTH2", [xoauth2(no_nul, TOKEN), ""])
    await auth.password(FORGED, "wrong", mechanism=f"LOGIN\r\n{FORGED}")
    await run(auth, f"X\r\n{FORGED}", [None])
    lines = auth_records(caplog)
    assert len(lines) == 8
    for line in lines:
        assert "\r" not in line and "\n" not in line and "\x00" not in line, line
    assert any("\\r\\n" in line for line in lines)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([*sasl.MECHANISMS, "plain", "CRAM-MD5", "X\r\nY"]),
    st.lists(
        st.one_of(
            st.text(max_size=40),
            st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode()),
            st.sampled_from(["", "=", "*", b64(f"\0{ALICE}\0{PASSWORD}"), oauthbearer(TOKEN)]),
        ),
        min_size=1,
        max_size=4,
    ),
    st.booleans(),
)
def test_any_lines_to_any_exchange(mechanism: str, lines: list[str], initial: bool) -> None:
    """Whatever the client sends: only steps come out, the exchange ends or asks again, failures
    are counted at most once per exchange, and no log line carries a raw control character."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign,assignment]
    logger = logging.getLogger("mss.auth")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)

    async def drive() -> None:
        auth = connection()
        exchange = auth.exchange(mechanism)
        outcome = None
        for line in ([] if initial else [None]) + lines:
            step = await exchange.step(line)
            assert isinstance(step, (Challenge, Success, Failure))
            if not isinstance(step, Challenge):
                outcome = step
                break
        assert auth.failures <= 1
        if isinstance(outcome, Failure):
            assert outcome.public.isprintable() and not outcome.close
            assert auth.failures == (1 if outcome.kind in ("refused", "unauthorized") else 0)

    try:
        asyncio.run(drive())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert len(records) <= 1
    for record in records:
        message = record.getMessage()
        assert "\r" not in message and "\n" not in message and "\x00" not in message


def test_log_safe() -> None:
    assert log_safe("a\r\nb\x00c\u2028d") == "a\\x0d\\x0ab\\x00c\\u2028d"
    assert log_safe("claire@x.test") == "claire@x.test"
    assert log_safe("x" * 1000).endswith("...(+744)")
