"""SASL client messages, shared by the SMTP (RFC 4954) and IMAP (RFC 9051 6.2.2) front ends.

- EXTERNAL (RFC 4422 Appendix A): the credentials are the TLS client certificate the
  connection already presented; the client's message is an optional authorization identity
  (authzid) that narrows the certificate's principal to one of its mailboxes.
- OAUTHBEARER (RFC 7628) and XOAUTH2 (Google's format): an e-CPS access token, accepted by
  the core only when bound (`cnf`) to this connection's client certificate.
- PLAIN (RFC 4616): a mailbox address and its app password, next to a valid client
  certificate, never instead of it.

Pure functions (sans-IO): they turn the client's bytes into fields or a `SaslError`; the
front ends do the reading, writing and the calls into `core.auth`. Nothing here keeps or
logs a password or a token.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from mss.principal import Principal

#: Mechanisms that carry a bearer token.
TOKEN_MECHANISMS = frozenset({"OAUTHBEARER", "XOAUTH2"})

#: Failed authentications after which a connection is dropped (SMTP and IMAP alike).
MAX_AUTH_FAILURES = 3


class SaslError(Exception):
    """A client message that is malformed (`refused` false: a protocol error, nothing was
    checked) or credentials that are refused (`refused` true: counts as a failed attempt).

    `text` is safe for the wire; `log_reason` is for the operator and never holds a secret.
    Each front end turns it into its own reply (SMTP 501 / 535, IMAP BAD / NO).
    """

    def __init__(self, text: str, log_reason: str, *, refused: bool = False) -> None:
        super().__init__(log_reason)
        self.text = text
        self.log_reason = log_reason
        self.refused = refused


@dataclass(frozen=True)
class ExternalResult:
    principal: Principal
    authzid: str | None


def decode_response(blob: str) -> bytes:
    """A client response in RFC 4954 form: base64, with "=" meaning "empty"."""
    blob = blob.strip()
    if blob in ("", "="):
        return b""
    try:
        return base64.b64decode(blob.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise SaslError("Cannot decode base64 response", "bad base64") from exc


def external(message: bytes, principal: Principal) -> ExternalResult:
    """RFC 4422 Appendix A: `message` is the authzid (UTF-8), empty for "act as myself".

    The principal was computed from the client certificate when TLS came up; an authzid
    it is not entitled to is refused with 535 5.7.8 (an authorization failure is
    answered as an authentication failure, RFC 4954 6, so nothing is learnt about other
    mailboxes).
    """
    if not message:
        return ExternalResult(principal, None)
    try:
        authzid = message.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SaslError("Authorization identity is not UTF-8", "authzid not utf-8") from exc
    if "\x00" in authzid or not authzid.strip():
        raise SaslError("Invalid authorization identity", "authzid malformed")
    try:
        narrowed = principal.restricted_to(authzid.strip())
    except PermissionError as exc:
        raise SaslError(
            "not authorized to act as this mailbox",
            f"authzid {authzid!r} not entitled for {principal.kind}:{principal.identifier}",
            refused=True,
        ) from exc
    return ExternalResult(narrowed, narrowed.acting_as)


# -- PLAIN, LOGIN -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PasswordCredentials:
    username: str
    password: str = ""

    def __repr__(self) -> str:  # the password never reaches a log line through a repr
        return f"PasswordCredentials(username={self.username!r}, password=<hidden>)"


def utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SaslError(f"{what} is not UTF-8", f"{what.lower()} not utf-8") from exc


def plain(message: bytes) -> "PasswordCredentials":
    """RFC 4616: `[authzid] NUL authcid NUL passwd`.

    The app password belongs to one mailbox, the authcid; an authzid naming another mailbox
    would be a proxy authorization nobody is granted here, so it is refused (535, like any
    authorization failure, RFC 4954 6).
    """
    parts = message.split(b"\x00")
    if len(parts) != 3:
        raise SaslError("Malformed PLAIN message (RFC 4616)", "plain malformed")
    authzid, authcid, password = (utf8(p, n) for p, n in zip(parts, ("Authorization identity", "User name", "Password")))
    if not authcid.strip() or not password:
        raise SaslError("Malformed PLAIN message (RFC 4616)", "plain empty field")
    if authzid and authzid.strip().lower() != authcid.strip().lower():
        raise SaslError(
            "the authorization identity must be the user name",
            f"plain authzid {authzid!r} differs from authcid {authcid!r}",
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
        raise SaslError("Malformed auth value: expected \"Bearer <token>\"", "bearer value malformed")
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
                raise SaslError("Malformed authorization identity", "gs2 saslname malformed")
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
        raise SaslError("Malformed OAUTHBEARER message (RFC 7628 3.1)", "oauthbearer no kvsep")
    fields = gs2.split(",")
    if len(fields) != 3 or fields[2] != "":
        raise SaslError("Malformed OAUTHBEARER GS2 header (RFC 7628 3.1)", "oauthbearer gs2 malformed")
    cb, authz = fields[0], fields[1]
    if cb.startswith("p="):
        raise SaslError("Channel binding is not supported", "oauthbearer channel binding requested")
    if cb not in ("n", "y"):
        raise SaslError("Malformed OAUTHBEARER GS2 header (RFC 7628 3.1)", "oauthbearer gs2 flag")
    authzid: str | None = None
    if authz:
        if not authz.startswith("a="):
            raise SaslError("Malformed OAUTHBEARER GS2 header (RFC 7628 3.1)", "oauthbearer gs2 authzid")
        authzid = _saslname(authz[2:]).strip() or None
    if not rest.endswith("\x01"):
        raise SaslError("Malformed OAUTHBEARER message (RFC 7628 3.1)", "oauthbearer not terminated")
    pairs = rest[:-1].split("\x01")
    if pairs and pairs[-1] == "":
        pairs.pop()
    token = None
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise SaslError("Malformed OAUTHBEARER key/value (RFC 7628 3.1)", "oauthbearer kv malformed")
        if key == "auth":
            token = _bearer(value)
        # host, port and other keys are informational (RFC 7628 3.1)
    if token is None:
        raise SaslError("OAUTHBEARER message without auth=Bearer (RFC 7628 3.1)", "oauthbearer no auth")
    return BearerCredentials(authzid, token)


def xoauth2(message: bytes) -> BearerCredentials:
    """Google's XOAUTH2: `user=<address>^Aauth=Bearer <token>^A^A`; `user` is the authzid."""
    text = utf8(message, "XOAUTH2 message")
    user = token = None
    for pair in text.rstrip("\x01").split("\x01"):
        key, eq, value = pair.partition("=")
        if not eq:
            raise SaslError("Malformed XOAUTH2 message", "xoauth2 kv malformed")
        if key.lower() == "user":
            user = value.strip() or None
        elif key.lower() == "auth":
            token = _bearer(value)
    if token is None:
        raise SaslError("XOAUTH2 message without auth=Bearer", "xoauth2 no auth")
    return BearerCredentials(user, token)


def bearer(mechanism: str, message: bytes) -> BearerCredentials:
    return oauthbearer(message) if mechanism == "OAUTHBEARER" else xoauth2(message)


def bearer_error(mechanism: str, status: str = "invalid_token") -> bytes:
    """The server's error challenge before the final failure (RFC 7628 3.2.2; Google's XOAUTH2
    sends the same JSON shape). The client answers `%x01` (OAUTHBEARER) or an empty line."""
    doc = {"status": status, "schemes": "bearer", "scope": "mss"}
    if mechanism == "XOAUTH2":
        doc = {"status": "401", "schemes": "bearer", "scope": "mss"}
    return json.dumps(doc, separators=(",", ":")).encode("ascii")
