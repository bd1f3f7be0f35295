"""STARTTLS (RFC 9051 6.2.1), AUTHENTICATE (RFC 9051 6.2.2, RFC 4959 SASL-IR) and LOGIN.

Every way in needs TLS and the connection's health-PKI client certificate:

- EXTERNAL (RFC 4422 App. A): the certificate alone; the optional authorization identity
  names the one mailbox this session acts for, which the principal must be entitled to.
- OAUTHBEARER (RFC 7628) and XOAUTH2: an e-CPS token for a professional, accepted by the core
  only when its `cnf` matches this connection's certificate (e.g. practice software's ORG
  certificate); the session then acts for that professional. A refused token gets the
  RFC 7628 3.2.2 error challenge first, and the final NO once the client answered it.
- PLAIN (RFC 4616) and LOGIN (RFC 9051 6.2.3): a mailbox address and its app password, on
  top of a certificate whose principal is entitled to that mailbox.

The message parsers are shared with the SMTP front end (`smtp.auth`). Passwords and tokens
are never logged; the core logs why it refused, the wire only says that it did.
"""
from __future__ import annotations

import base64
import binascii
import logging

from mss.errors import AuthenticationFailed
from mss.refusals import Refusal
from mss import sasl

from imap.protocol.commands import Command
from imap.protocol.response import Continue, Response, bad, bye, no, ok
from imap.session import MAX_AUTH_FAILURES, StartTLS

log = logging.getLogger("mss.imap")

#: Advertised as AUTH=... once TLS is up, in this order.
MECHANISMS: tuple[str, ...] = ("EXTERNAL", "PLAIN", "OAUTHBEARER", "XOAUTH2")

_BEARER_ERROR = "bearer-error"  # step: the client is answering the error challenge


async def starttls(session, cmd: Command) -> list:
    if session.tls:
        return [bad(cmd.tag, "TLS is already active")]
    return [ok(cmd.tag, "Begin TLS negotiation now"), StartTLS()]


async def login(session, cmd: Command) -> list[Response]:
    """RFC 9051 6.2.3 with a per-mailbox app password (the session dispatcher already refused
    it before TLS, where LOGINDISABLED is advertised)."""
    if not session.tls:  # defence in depth
        return [no(cmd.tag, "TLS is required; then use AUTHENTICATE EXTERNAL", "PRIVACYREQUIRED")]
    try:
        password = bytes(cmd["password"]).decode("utf-8")
    except UnicodeDecodeError:
        return [bad(cmd.tag, "Password is not UTF-8")]
    return await _password_login(session, cmd, cmd["user"], password, "LOGIN")


async def authenticate(session, cmd: Command) -> list[Response]:
    mechanism = cmd["mechanism"]
    if mechanism not in MECHANISMS:
        return [no(cmd.tag, f"Unsupported SASL mechanism {mechanism}; use one of {' '.join(MECHANISMS)}", "CANNOT")]
    initial = cmd["initial"]
    if initial is None:
        # Every mechanism here is client-first: the server's first challenge is empty.
        session.expect_auth_response(cmd)
        return [Continue("")]
    return await finish_authenticate(session, cmd, initial)


async def finish_authenticate(session, cmd: Command, response: bytes, step=None) -> list[Response]:
    """The client's message (initial response or the answer to a challenge)."""
    response = response.strip()
    if isinstance(step, tuple) and step[0] == _BEARER_ERROR:
        # RFC 7628 3.2.3: whatever the client answers (%x01, or "*"), the attempt failed.
        return _failed(session, cmd, f"Authentication failed: {step[1]}", "AUTHENTICATIONFAILED")
    if response == b"*":
        return [bad(cmd.tag, "AUTHENTICATE cancelled")]
    if response in (b"", b"="):
        message = b""
    else:
        try:
            message = base64.b64decode(response, validate=True)
        except (binascii.Error, ValueError):
            return [bad(cmd.tag, "Invalid base64 in SASL response")]
    mechanism = cmd["mechanism"]
    try:
        if mechanism == "EXTERNAL":
            return await _external(session, cmd, message)
        if mechanism == "PLAIN":
            creds = sasl.plain(message)
            return await _password_login(session, cmd, creds.username, creds.password, "PLAIN")
        return await _bearer(session, cmd, mechanism, message)
    except sasl.SaslError as exc:
        log.warning("imap auth refused peer=%s mechanism=%s reason=%s", session.peer, mechanism, exc.log_reason)
        if exc.refused:
            return _failed(session, cmd, exc.text, "AUTHENTICATIONFAILED")
        return [bad(cmd.tag, exc.text)]
    except Exception:
        # The dispatcher does not see continuation lines: answer here, change nothing.
        log.exception("imap auth error peer=%s mechanism=%s", session.peer, mechanism)
        return [no(cmd.tag, "Temporary authentication failure, try again later", "UNAVAILABLE")]


async def _external(session, cmd: Command, message: bytes) -> list[Response]:
    try:
        authzid = message.decode("utf-8")
    except UnicodeDecodeError:
        return [bad(cmd.tag, "Authorization identity is not UTF-8")]
    try:
        principal = await session.core.auth.from_certificate(session.client_certificate, peer=session.peer)
    except AuthenticationFailed as exc:
        return _failed(session, cmd, f"Authentication failed: {exc.public}", "AUTHENTICATIONFAILED")
    if authzid:
        try:
            principal = principal.restricted_to(authzid)
        except PermissionError:
            log.warning(
                "imap authz refused peer=%s id=%s authzid=%s", session.peer, principal.identifier, authzid
            )
            return _failed(session, cmd, f"Not authorized to act as {authzid}", "AUTHORIZATIONFAILED")
    return await _succeed(session, cmd, principal)


async def _password_login(session, cmd: Command, username: str, password: str, mechanism: str) -> list[Response]:
    try:
        principal = await session.core.auth.from_app_password(
            username, password, session.client_certificate, peer=session.peer, mechanism=mechanism
        )
    except AuthenticationFailed as exc:
        return _failed(session, cmd, f"Authentication failed: {exc.public}", "AUTHENTICATIONFAILED")
    return await _succeed(session, cmd, principal)


async def _bearer(session, cmd: Command, mechanism: str, message: bytes) -> list[Response]:
    creds = sasl.bearer(mechanism, message)
    try:
        principal = await session.core.auth.from_token(
            creds.token, session.client_certificate, creds.authzid, peer=session.peer, mechanism=mechanism
        )
    except AuthenticationFailed as exc:
        # RFC 7628 3.2.2: the error challenge; the final NO comes after the client's answer.
        session.expect_auth_response(cmd, (_BEARER_ERROR, exc.public))
        return [Continue(base64.b64encode(sasl.bearer_error(mechanism)).decode("ascii"))]
    return await _succeed(session, cmd, principal)


async def _succeed(session, cmd: Command, principal) -> list[Response]:
    try:
        handle = await session.core.mail.open(principal)
    except Refusal as exc:
        log.warning("imap login refused peer=%s id=%s reason=%r", session.peer, principal.identifier, exc.log)
        return _failed(session, cmd, exc.public, "AUTHORIZATIONFAILED")
    session.authenticated(principal, handle)
    log.info(
        "imap login peer=%s mechanism=%s kind=%s id=%s mailbox=%s",
        session.peer, principal.mechanism, principal.kind, principal.identifier, handle.address,
    )
    return [ok(cmd.tag, f"Authenticated; mailbox {handle.address}", "CAPABILITY " + " ".join(session.capabilities()))]


def _failed(session, cmd: Command, text: str, code: str) -> list:
    session.auth_failures += 1
    out: list = [no(cmd.tag, text, code)]
    if session.auth_failures >= MAX_AUTH_FAILURES:
        session.logout()
        out.append(bye("Too many failed authentication attempts"))
    return out
