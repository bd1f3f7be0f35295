"""Property tests of the SASL client-message parsers of `mss.sasl` (DESIGN.md, Bad input: every
parser faces the internet): well-formed messages round-trip, and arbitrary bytes get either
the parsed fields or the one documented error, `SaslError`, never anything else."""

from __future__ import annotations

import base64
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from mss import sasl

#: Anything a client can send: the parsers get the decoded base64, i.e. any bytes.
any_bytes = st.binary(max_size=300)
#: A message built around the SASL separators, so that the parsers' branches are reached.
separated = st.lists(
    st.one_of(
        st.binary(max_size=12),
        st.sampled_from(
            [b"\x00", b"\x01", b",", b"=", b"n,", b"a=", b"auth=", b"Bearer ", b"user=", b"=2C", b"=3D", b"\xff"]
        ),
    ),
    max_size=16,
).map(b"".join)
hostile = st.one_of(any_bytes, separated)

# RFC 6750 2.1 b64token: what an access token is made of.
token = st.from_regex(r"\A[A-Za-z0-9\-._~+/]+=*\Z", fullmatch=True).filter(lambda t: len(t) < 200)
# A UTF-8 identity without NUL (RFC 4616 UTF8SAFE) nor the OAUTHBEARER kvsep, trimmed.
identity = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\x01"), min_size=1, max_size=40
).filter(lambda s: s == s.strip() and s != "")
password = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=40)
kv_value = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\x01"), max_size=20)


def saslname(value: str) -> str:
    """RFC 5801 4: "," and "=" are escaped in a GS2 authzid."""
    return value.replace("=", "=3D").replace(",", "=2C")


# -- base64 responses ----------------------------------------------------------------------------


@given(any_bytes)
def test_base64_response_round_trip(data: bytes) -> None:
    assert sasl.decode_response(base64.b64encode(data).decode("ascii")) == data
    assert sasl.decode_response(" " + base64.b64encode(data).decode("ascii") + "\r\n") == data


def test_empty_responses() -> None:
    assert sasl.decode_response("=") == b"" and sasl.decode_response("") == b""


@given(st.text(max_size=60))
def test_any_response_line_decodes_or_is_a_sasl_error(line: str) -> None:
    try:
        sasl.decode_response(line)
    except sasl.SaslError as exc:
        assert exc.kind == "malformed"


# -- PLAIN ---------------------------------------------------------------------------------------


@given(identity, password, st.booleans())
def test_plain_round_trip(authcid: str, secret: str, with_authzid: bool) -> None:
    authzid = authcid if with_authzid else ""  # RFC 4616: an authzid equal to the authcid is no proxy
    creds = sasl.plain(f"{authzid}\0{authcid}\0{secret}".encode())
    assert (creds.username, creds.password) == (authcid, secret)
    assert "password=<hidden>" in repr(creds)


@given(hostile)
def test_plain_on_arbitrary_bytes(message: bytes) -> None:
    try:
        creds = sasl.plain(message)
    except sasl.SaslError as exc:
        assert exc.kind in ("malformed", "refused") and exc.text
    else:
        assert creds.username and creds.password and message.count(b"\x00") == 2


# -- OAUTHBEARER (RFC 7628 3.1: GS2 header, kvsep) -----------------------------------------------


@given(
    st.one_of(st.none(), identity.filter(lambda s: "\x01" not in s)),
    token,
    kv_value,
    st.lists(
        st.tuples(st.from_regex(r"\A[a-z]{1,8}\Z", fullmatch=True).filter(lambda k: k != "auth"), kv_value), max_size=3
    ),
    st.sampled_from(["n", "y"]),
)
def test_oauthbearer_round_trip(
    authzid: str | None, tok: str, host: str, extra: list[tuple[str, str]], flag: str
) -> None:
    gs2 = f"{flag},a={saslname(authzid)}," if authzid else f"{flag},,"
    pairs = [f"host={host}", "port=993", *(f"{k}={v}" for k, v in extra), f"auth=Bearer {tok}"]
    creds = sasl.oauthbearer((gs2 + "\x01" + "\x01".join(pairs) + "\x01\x01").encode())
    assert creds.token == tok
    assert creds.authzid == authzid
    assert f"token=<{len(tok)} chars>" in repr(creds)


@given(hostile)
def test_oauthbearer_on_arbitrary_bytes(message: bytes) -> None:
    try:
        creds = sasl.oauthbearer(message)
    except sasl.SaslError as exc:
        assert exc.kind == "malformed" and exc.text
    else:
        assert creds.token and not any(c.isspace() for c in creds.token)


# -- XOAUTH2 -------------------------------------------------------------------------------------


@given(st.one_of(st.none(), identity.filter(lambda s: "\x01" not in s)), token)
def test_xoauth2_round_trip(user: str | None, tok: str) -> None:
    creds = sasl.xoauth2(f"user={user or ''}\x01auth=Bearer {tok}\x01\x01".encode())
    assert (creds.authzid, creds.token) == (user, tok)


@given(hostile)
def test_xoauth2_on_arbitrary_bytes(message: bytes) -> None:
    try:
        creds = sasl.xoauth2(message)
    except sasl.SaslError as exc:
        assert exc.kind == "malformed" and exc.text
    else:
        assert creds.token


# -- EXTERNAL ------------------------------------------------------------------------------------


@given(identity)
def test_external_authzid_round_trip(authzid: str) -> None:
    assert sasl.external_authzid(authzid.encode()) == authzid


@given(hostile)
def test_external_authzid_on_arbitrary_bytes(message: bytes) -> None:
    try:
        authzid = sasl.external_authzid(message)
    except sasl.SaslError as exc:
        assert exc.kind == "malformed"
    else:
        assert authzid is None or (authzid and "\x00" not in authzid)


# -- every parser, one error type ------------------------------------------------------------------


@settings(max_examples=200)
@given(st.sampled_from(["PLAIN", "OAUTHBEARER", "XOAUTH2", "EXTERNAL"]), hostile)
def test_sasl_error_texts_are_wire_safe(mechanism: str, message: bytes) -> None:
    """Whatever the input, the public text of a refusal is one printable line of ours."""
    parse = {
        "PLAIN": sasl.plain,
        "OAUTHBEARER": sasl.oauthbearer,
        "XOAUTH2": sasl.xoauth2,
        "EXTERNAL": sasl.external_authzid,
    }[mechanism]
    try:
        parse(message)
    except sasl.SaslError as exc:
        assert exc.text.isprintable() and exc.log_reason.isprintable()


def test_error_challenge_is_the_rfc_7628_json() -> None:
    doc = json.loads(sasl.bearer_error("OAUTHBEARER"))
    assert doc["status"] == "invalid_token" and doc["schemes"] == "bearer" and "scope" in doc
