"""Fuzz target: the SASL client-message parsers and exchanges of `mss.sasl`.

What must hold for any client bytes (RFC 4422, 4616, 4954 4, 5801 4, 7628 3.1; XOAUTH2):

- `decode_response`, `external_authzid`, `plain`, `oauthbearer`, `xoauth2` raise only
  `SaslError` (their documented contract), with a wire text free of CR/LF;
- what they accept round-trips: base64 encoding of the decoded bytes decodes back; the
  credentials PLAIN, OAUTHBEARER and XOAUTH2 return, written back in the mechanism's
  canonical form, parse to equal credentials; no repr shows a password or a token;
- the exchange of each mechanism, fed the input's lines, gives Challenges and then exactly
  one outcome (Success or Failure), hands its host the credentials the parser gives for the
  same message, and refuses a step after the outcome.
"""

from __future__ import annotations

import base64

from fuzzlib import check

from mss import sasl
from mss.services import Challenge, Failure, Success

NAME = "sasl"
MAX_LEN = 2048


def _no_crlf(exc: sasl.SaslError) -> None:
    check("\r" not in exc.text and "\n" not in exc.text, f"CR/LF in the wire text {exc.text!r}")
    check(exc.kind in ("malformed", "refused", "unauthorized"), f"unknown SaslError kind {exc.kind!r}")


def _saslname(value: str) -> str:
    return value.replace("=", "=3D").replace(",", "=2C")


def _hidden(creds: object) -> None:
    """The repr is exactly the documented one: identities quoted, the secret never shown."""
    if isinstance(creds, sasl.PasswordCredentials):
        expected = f"PasswordCredentials(username={creds.username!r}, password=<hidden>)"
    else:
        assert isinstance(creds, sasl.BearerCredentials)
        expected = f"BearerCredentials(authzid={creds.authzid!r}, token=<{len(creds.token)} chars>)"
    check(repr(creds) == expected, f"repr {repr(creds)[:80]!r} is not the redacted form")


def _parsers(message: bytes) -> dict[str, object]:
    """Each parser's result for `message`: credentials, or the SaslError's kind."""
    out: dict[str, object] = {}
    for name, fn in (
        ("EXTERNAL", sasl.external_authzid),
        ("PLAIN", sasl.plain),
        ("OAUTHBEARER", sasl.oauthbearer),
        ("XOAUTH2", sasl.xoauth2),
    ):
        try:
            out[name] = fn(message)
        except sasl.SaslError as exc:
            _no_crlf(exc)
            out[name] = exc
    ext = out["EXTERNAL"]
    if isinstance(ext, str):
        check(ext == ext.strip() and ext and "\x00" not in ext, f"EXTERNAL authzid {ext!r}")
    creds = out["PLAIN"]
    if isinstance(creds, sasl.PasswordCredentials):
        check(creds.username == creds.username.strip() and creds.username and creds.password, "PLAIN fields")
        again = sasl.plain(b"\x00" + creds.username.encode() + b"\x00" + creds.password.encode())
        check(again == creds, f"PLAIN round trip: {creds!r} -> {again!r}")
        again = sasl.plain(
            creds.username.encode() + b"\x00" + creds.username.encode() + b"\x00" + creds.password.encode()
        )
        check(again == creds, "PLAIN with authzid = authcid is not the same credentials")
        _hidden(creds)
    for mech in ("OAUTHBEARER", "XOAUTH2"):
        creds = out[mech]
        if not isinstance(creds, sasl.BearerCredentials):
            continue
        check(creds.token and not any(ch.isspace() for ch in creds.token), f"{mech} token {creds.token!r}")
        check(creds.authzid is None or (creds.authzid and creds.authzid == creds.authzid.strip()), "authzid")
        if mech == "OAUTHBEARER":
            gs2 = "n," + (f"a={_saslname(creds.authzid)}" if creds.authzid else "") + ","
            canonical = f"{gs2}\x01auth=Bearer {creds.token}\x01\x01"
        else:
            canonical = (f"user={creds.authzid}\x01" if creds.authzid else "") + f"auth=Bearer {creds.token}\x01\x01"
        again = sasl.bearer(mech, canonical.encode())
        check(again == creds, f"{mech} round trip: {creds!r} -> {canonical!r} -> {again!r}")
        _hidden(creds)
    return out


class _Host:
    """An `ExchangeHost` that accepts everything it is asked about and records the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    async def external(self, authzid, *, mechanism):
        self.calls.append(("external", authzid))
        return Failure("refused", "no")

    async def password(self, username, password, *, mechanism="LOGIN"):
        self.calls.append(("password", username, password))
        return Failure("refused", "no")

    async def token(self, credentials, *, mechanism):
        self.calls.append(("token", credentials))
        return Failure("refused", "no")

    def rejected(self, error, *, mechanism):
        _no_crlf(error)
        self.calls.append(("rejected", error.log_reason))
        return Failure(error.kind, error.text)

    def cancelled(self, *, mechanism):
        self.calls.append(("cancelled",))
        return Failure("cancelled", "cancelled")

    def unsupported(self, *, mechanism):
        self.calls.append(("unsupported",))
        return Failure("unsupported", "unsupported")


def _run(coro):
    """Run a coroutine that never suspends (the host above answers at once)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("an exchange step suspended with a host that answers at once")


def _exchange(mechanism: str, lines: list[str | None]) -> None:
    host = _Host()
    ex = sasl.exchange(host, mechanism)
    outcome = None
    steps = 0
    for line in lines:
        step = _run(ex.step(line))
        steps += 1
        if isinstance(step, Challenge):
            check(isinstance(step.data, bytes), "challenge data is not bytes")
            continue
        check(isinstance(step, (Success, Failure)), f"step returned {type(step).__name__}")
        outcome = step
        break
    if outcome is None:
        return
    finals = [
        c for c in host.calls if c[0] in ("external", "password", "token", "rejected", "cancelled", "unsupported")
    ]
    check(len(finals) >= 1, "an outcome without any host decision")
    try:
        _run(ex.step("="))
    except RuntimeError:
        pass
    else:
        raise AssertionError("a step after the outcome was accepted")
    # The credentials the host saw are the parser's for the same message.
    for call in host.calls:
        if call[0] == "token":
            raw = None
            for line in lines:
                if line is not None and not sasl.is_cancel(line):
                    raw = sasl.decode_response(line)
                    break
            check(raw is not None and sasl.bearer(mechanism.upper(), raw) == call[1], "token credentials differ")


def test_one_input(data: bytes) -> None:
    # Raw messages, as the parsers get them after base64.
    _parsers(data)

    text = data.decode("latin-1")
    try:
        decoded = sasl.decode_response(text)
    except sasl.SaslError as exc:
        _no_crlf(exc)
    else:
        if decoded:
            check(sasl.decode_response(base64.b64encode(decoded).decode()) == decoded, "base64 round trip")
        _parsers(decoded)

    # Exchanges: the first line picks the mechanism, the rest are response lines (base64
    # of the input's pieces, or the lines as sent, so both the decoder and the parsers run).
    head, _, rest = text.partition("\n")
    mechanism = head.strip()[:20] or "PLAIN"
    pieces = rest.split("\n")
    encoded: list[str | None] = [None] + [base64.b64encode(p.encode("latin-1")).decode() for p in pieces]
    _exchange(mechanism, encoded)
    _exchange(mechanism, pieces[:6])
    for mech in sasl.MECHANISMS:
        _exchange(mech, [base64.b64encode(data).decode()])
