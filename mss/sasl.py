"""SASL for SMTP (RFC 4954 AUTH) and IMAP (RFC 9051 6.2.2 AUTHENTICATE): one sans-IO exchange.

Two layers, no sockets in either:

- the client-message parsers (pure functions: the client's bytes in, fields or a `SaslError`
  out);
- one small state machine per mechanism (`exchange`): it takes the client's response lines
  as the front end read them (base64, "=" for an empty initial response, "*" to cancel) and
  returns the next `Challenge`, or the outcome, `Success` or `Failure`. The checks themselves
  (certificate, app password, token), the failure count and the one log line of each result
  belong to the connection's `ExchangeHost`, `mss.auth.ConnectionAuthentication`.

The front ends only frame: SMTP writes `334 <base64>`, IMAP `+ <base64>`, and each maps a
`Failure.kind` to its own reply. The mechanisms, offered alike on SMTP and IMAP:

- EXTERNAL (RFC 4422 Appendix A): the credentials are the TLS client certificate the
  connection already presented; the client's message is an optional authorization identity
  (authzid) that narrows the certificate's principal to one of its mailboxes.
- OAUTHBEARER (RFC 7628) and XOAUTH2 (Google's format): an e-CPS access token, accepted by
  the core only when bound (`cnf`) to this connection's client certificate. A refused token
  gets the RFC 7628 3.2.2 error challenge before the final failure.
- PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login-00, what Outlook speaks): a mailbox
  address and its app password, next to a valid client certificate, never instead of it.

Nothing here keeps or logs a password or a token.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from mss.services import Challenge, Failure, SaslExchange, SaslStep, Success

#: Every mechanism, offered on SMTP and IMAP alike once TLS is up, in this order.
MECHANISMS: tuple[str, ...] = ("EXTERNAL", "PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2")

#: Refused attempts (credentials or authorization) after which a connection is dropped,
#: SMTP and IMAP alike. Malformed, cancelled and temporarily failed exchanges do not count.
MAX_AUTH_FAILURES = 3

#: LOGIN's two challenges (the de-facto texts every client expects).
LOGIN_USERNAME = b"Username:"
LOGIN_PASSWORD = b"Password:"

SaslErrorKind = Literal["malformed", "refused", "unauthorized"]


class SaslError(Exception):
    """A client message that is malformed (a protocol error, nothing was checked), or one
    whose content is refused without asking anyone (`refused`: counts as a failed attempt;
    `unauthorized`: an authorization identity that is not allowed, counted too).

    `text` is safe for the wire; `log_reason` is for the operator and never holds a secret
    (client-supplied identities in it are `repr`-quoted, so no CR/LF reaches a log line).
    This is the only exception the parsers raise, whatever bytes they are given.
    """

    def __init__(self, text: str, log_reason: str, *, refused: bool = False, unauthorized: bool = False) -> None:
        super().__init__(log_reason)
        self.text = text
        self.log_reason = log_reason
        self.refused = refused or unauthorized
        self.unauthorized = unauthorized

    @property
    def kind(self) -> SaslErrorKind:
        if self.unauthorized:
            return "unauthorized"
        return "refused" if self.refused else "malformed"


def decode_response(blob: str) -> bytes:
    """A client response line: base64 (RFC 4648 4, padded, nothing else), "=" or "" for empty.

    RFC 4954 4 and RFC 9051 6.2.2 both use "=" for an empty initial response; an empty line
    is an empty answer to a challenge. Raises only `SaslError`.
    """
    blob = blob.strip()
    if blob in ("", "="):
        return b""
    try:
        return base64.b64decode(blob.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise SaslError("Cannot decode base64 response", "bad_base64") from exc


def is_cancel(response: str) -> bool:
    """RFC 4954 4 / RFC 9051 6.2.2: a response of "*" cancels the exchange."""
    return response.strip() == "*"


def external_authzid(message: bytes) -> str | None:
    """RFC 4422 Appendix A: EXTERNAL's message is the authzid (UTF-8), empty for "act as myself"."""
    if not message:
        return None
    authzid = utf8(message, "Authorization identity")
    if "\x00" in authzid or not authzid.strip():
        raise SaslError("Invalid authorization identity", "authzid_malformed")
    return authzid.strip()


# -- PLAIN, LOGIN -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PasswordCredentials:
    username: str
    password: str = ""

    def __repr__(self) -> str:  # the password never reaches a log line through a repr
        return f"PasswordCredentials(username={self.username!r}, password=<hidden>)"


def utf8(data: bytes, what: str) -> str:
    """`data` as UTF-8 (RFC 4422 3.4.1: SASL strings are UTF-8), or a malformed `SaslError`."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SaslError(f"{what} is not UTF-8", f"{what.lower().replace(' ', '_')}_not_utf8") from exc


def plain(message: bytes) -> PasswordCredentials:
    """RFC 4616 2: `[authzid] NUL authcid NUL passwd`.

    The app password belongs to one mailbox, the authcid; an authzid naming another mailbox
    would be a proxy authorization nobody is granted here, so it is refused (counted, and
    answered like a wrong password: RFC 4954 6 answers authorization failures as 535).
    """
    parts = message.split(b"\x00")
    if len(parts) != 3:
        raise SaslError("Malformed PLAIN message (RFC 4616)", "plain_malformed")
    authzid, authcid, password = (
        utf8(p, n) for p, n in zip(parts, ("Authorization identity", "User name", "Password"), strict=False)
    )
    if not authcid.strip() or not password:
        raise SaslError("Malformed PLAIN message (RFC 4616)", "plain_empty_field")
    if authzid and authzid.strip().lower() != authcid.strip().lower():
        raise SaslError(
            "the authorization identity must be the user name",
            f"plain_authzid_differs authzid={authzid!r} authcid={authcid!r}",
            refused=True,
        )
    return PasswordCredentials(authcid.strip(), password)


# -- OAUTHBEARER, XOAUTH2 ---------------------------------------------------------------------


@dataclass(frozen=True)
class BearerCredentials:
    authzid: str | None
    token: str = ""

    def __repr__(self) -> str:  # the token never reaches a log line through a repr
        return f"BearerCredentials(authzid={self.authzid!r}, token=<{len(self.token)} chars>)"


def _bearer(value: str) -> str:
    scheme, _, token = value.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        raise SaslError('Malformed auth value: expected "Bearer <token>"', "bearer_value_malformed")
    return token


def _saslname(value: str) -> str:
    """RFC 5801 4 saslname: "=2C" is ",", "=3D" is "="; any other "=" is an error."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "=":
            code = value[i : i + 3]
            if code == "=2C":
                out.append(",")
            elif code == "=3D":
                out.append("=")
            else:
                raise SaslError("Malformed authorization identity", "gs2_saslname_malformed")
            i += 3
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def oauthbearer(message: bytes) -> BearerCredentials:
    """RFC 7628 3.1: `gs2-header kvsep *(key=value kvsep) kvsep`, kvsep = %x01.

    The GS2 header is `n,` or `y,` (no channel binding) then `a=<authzid>,` or `,`.
    """
    text = utf8(message, "OAUTHBEARER message")
    gs2, sep, rest = text.partition("\x01")
    if not sep:
        raise SaslError("Malformed OAUTHBEARER message (RFC 7628 3.1)", "oauthbearer_no_kvsep")
    fields = gs2.split(",")
    if len(fields) != 3 or fields[2] != "":
        raise SaslError("Malformed OAUTHBEARER GS2 header (RFC 7628 3.1)", "oauthbearer_gs2_malformed")
    cb, authz = fields[0], fields[1]
    if cb.startswith("p="):
        raise SaslError("Channel binding is not supported", "oauthbearer_channel_binding_requested")
    if cb not in ("n", "y"):
        raise SaslError("Malformed OAUTHBEARER GS2 header (RFC 7628 3.1)", "oauthbearer_gs2_flag")
    authzid: str | None = None
    if authz:
        if not authz.startswith("a="):
            raise SaslError("Malformed OAUTHBEARER GS2 header (RFC 7628 3.1)", "oauthbearer_gs2_authzid")
        authzid = _saslname(authz[2:]).strip() or None
    if not rest.endswith("\x01"):
        raise SaslError("Malformed OAUTHBEARER message (RFC 7628 3.1)", "oauthbearer_not_terminated")
    pairs = rest[:-1].split("\x01")
    if pairs and pairs[-1] == "":
        pairs.pop()
    token = None
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise SaslError("Malformed OAUTHBEARER key/value (RFC 7628 3.1)", "oauthbearer_kv_malformed")
        if key == "auth":
            token = _bearer(value)
        # host, port and other keys are informational (RFC 7628 3.1)
    if token is None:
        raise SaslError("OAUTHBEARER message without auth=Bearer (RFC 7628 3.1)", "oauthbearer_no_auth")
    return BearerCredentials(authzid, token)


def xoauth2(message: bytes) -> BearerCredentials:
    """Google's XOAUTH2: `user=<address>^Aauth=Bearer <token>^A^A`; `user` is the authzid."""
    text = utf8(message, "XOAUTH2 message")
    user = token = None
    for pair in text.rstrip("\x01").split("\x01"):
        key, eq, value = pair.partition("=")
        if not eq:
            raise SaslError("Malformed XOAUTH2 message", "xoauth2_kv_malformed")
        if key.lower() == "user":
            user = value.strip() or None
        elif key.lower() == "auth":
            token = _bearer(value)
    if token is None:
        raise SaslError("XOAUTH2 message without auth=Bearer", "xoauth2_no_auth")
    return BearerCredentials(user, token)


def bearer(mechanism: str, message: bytes) -> BearerCredentials:
    """The token message of `mechanism` (OAUTHBEARER or XOAUTH2)."""
    return oauthbearer(message) if mechanism == "OAUTHBEARER" else xoauth2(message)


def bearer_error(mechanism: str, status: str = "invalid_token") -> bytes:
    """The server's error challenge before the final failure (RFC 7628 3.2.2; Google's XOAUTH2
    sends the same JSON shape). The client answers `%x01` (OAUTHBEARER) or an empty line."""
    doc = {"status": status, "schemes": "bearer", "scope": "mss"}
    if mechanism == "XOAUTH2":
        doc = {"status": "401", "schemes": "bearer", "scope": "mss"}
    return json.dumps(doc, separators=(",", ":")).encode("ascii")


# -- the exchange ------------------------------------------------------------------------------


class ExchangeHost(Protocol):
    """What an exchange needs from its connection (`mss.auth.ConnectionAuthentication`).

    Every method returns the outcome already concluded: counted when it is a refusal, and
    logged once. The exchange only turns lines into credentials and decides what comes next.
    """

    async def external(self, authzid: str | None, *, mechanism: str) -> Success | Failure:
        """The connection's certificate principal, narrowed to `authzid` when one is given."""
        ...

    async def password(self, username: str, password: str, *, mechanism: str = "LOGIN") -> Success | Failure:
        """A mailbox address and one of its app passwords, next to the certificate."""
        ...

    async def token(self, credentials: BearerCredentials, *, mechanism: str) -> Success | Failure:
        """An e-CPS token bound to the connection's certificate."""
        ...

    def rejected(self, error: SaslError, *, mechanism: str) -> Failure:
        """A message the exchange itself refused (malformed, or refused by its syntax rules)."""
        ...

    def cancelled(self, *, mechanism: str) -> Failure:
        """The client sent "*"."""
        ...

    def unsupported(self, *, mechanism: str) -> Failure:
        """A mechanism this connection does not offer."""
        ...


class _Exchange:
    """The common part: one outcome per exchange, base64 decoding, "*" cancels.

    `step(None)` means "no initial response" and is only valid as the first step; a step
    after the outcome is a bug in the front end (RuntimeError), not something a client can
    cause, since the front end stops reading for the exchange once it has the outcome.
    """

    def __init__(self, host: ExchangeHost, mechanism: str) -> None:
        self.host = host
        self.mechanism = mechanism
        self._started = False
        self._finished = False

    async def step(self, response: str | None) -> SaslStep:
        if self._finished:
            raise RuntimeError(f"the {self.mechanism} exchange is already finished")
        if response is None and self._started:
            raise RuntimeError("None (no initial response) is only valid as the first step")
        self._started = True
        result = await self._step(response)
        if not isinstance(result, Challenge):
            self._finished = True
        return result

    async def _step(self, response: str | None) -> SaslStep:  # pragma: no cover - abstract
        raise NotImplementedError

    async def _answer(self, response: str, handle: Callable[[bytes], Awaitable[SaslStep]]) -> SaslStep:
        """Decode a response line and hand the message to `handle`; cancel and errors end here."""
        if is_cancel(response):
            return self.host.cancelled(mechanism=self.mechanism)
        try:
            return await handle(decode_response(response))
        except SaslError as exc:
            return self.host.rejected(exc, mechanism=self.mechanism)


class _ClientFirst(_Exchange):
    """EXTERNAL, PLAIN, OAUTHBEARER and XOAUTH2 are client-first (RFC 4422 3 and 5): the
    client's message is the initial response, or, without one, the answer to an empty
    challenge (RFC 4954 4 "334 " / RFC 9051 6.2.2 "+ ")."""

    async def _step(self, response: str | None) -> SaslStep:
        if response is None:
            return Challenge(b"")
        return await self._answer(response, self._message)

    async def _message(self, message: bytes) -> SaslStep:  # pragma: no cover - abstract
        raise NotImplementedError


class _External(_ClientFirst):
    async def _message(self, message: bytes) -> SaslStep:
        return await self.host.external(external_authzid(message), mechanism=self.mechanism)


class _Plain(_ClientFirst):
    async def _message(self, message: bytes) -> SaslStep:
        creds = plain(message)
        return await self.host.password(creds.username, creds.password, mechanism=self.mechanism)


class _Bearer(_ClientFirst):
    """OAUTHBEARER / XOAUTH2. A refused token is not answered with the failure at once: RFC
    7628 3.2.2 sends an error challenge (JSON: status, schemes, scope) first, the client
    answers it with %x01 (XOAUTH2 clients: an empty line), and only then comes the failure
    (RFC 7628 3.2.3). Whatever the client answers, even "*", the attempt has failed: it was
    counted and logged when the token was refused, so a client that leaves instead of
    answering does not escape the count."""

    def __init__(self, host: ExchangeHost, mechanism: str) -> None:
        super().__init__(host, mechanism)
        self._refused: Failure | None = None

    async def _step(self, response: str | None) -> SaslStep:
        if self._refused is not None:
            return self._refused
        return await super()._step(response)

    async def _message(self, message: bytes) -> SaslStep:
        outcome = await self.host.token(bearer(self.mechanism, message), mechanism=self.mechanism)
        if isinstance(outcome, Failure) and outcome.kind == "refused":
            self._refused = outcome
            return Challenge(bearer_error(self.mechanism))
        return outcome


class _Login(_Exchange):
    """LOGIN (draft-murchison-sasl-login-00 2.1): server-first, "Username:" then "Password:".
    The user name may come as an initial response (Outlook sends it so, RFC 4954 4 allows it),
    and then the first challenge is "Password:"."""

    def __init__(self, host: ExchangeHost, mechanism: str) -> None:
        super().__init__(host, mechanism)
        self._username: str | None = None

    async def _step(self, response: str | None) -> SaslStep:
        if response is None:
            return Challenge(LOGIN_USERNAME)
        return await self._answer(response, self._message)

    async def _message(self, message: bytes) -> SaslStep:
        if self._username is None:
            username = utf8(message, "User name").strip()
            if not username:
                raise SaslError("Empty user name", "login_empty_user_name")
            self._username = username
            return Challenge(LOGIN_PASSWORD)
        password = utf8(message, "Password")
        if not password:
            raise SaslError("Empty password", "login_empty_password")
        return await self.host.password(self._username, password, mechanism=self.mechanism)


class _Unsupported(_Exchange):
    """A mechanism nobody offered: the first step is the failure, whatever the client sent."""

    async def _step(self, response: str | None) -> SaslStep:
        return self.host.unsupported(mechanism=self.mechanism)


_EXCHANGES: dict[str, type[_Exchange]] = {
    "EXTERNAL": _External,
    "PLAIN": _Plain,
    "LOGIN": _Login,
    "OAUTHBEARER": _Bearer,
    "XOAUTH2": _Bearer,
}


def exchange(host: ExchangeHost, mechanism: str, offered: tuple[str, ...] = MECHANISMS) -> SaslExchange:
    """A new exchange for `mechanism` (case-insensitive, RFC 4422 3.1), on `host`'s connection.

    A mechanism outside `offered` gets an exchange whose first step is Failure("unsupported").
    """
    name = mechanism.strip().upper()
    kind = _EXCHANGES.get(name) if name in offered else None
    return (kind or _Unsupported)(host, name)
