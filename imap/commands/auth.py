"""STARTTLS (RFC 9051 6.2.1), AUTHENTICATE EXTERNAL (RFC 4422 App. A, RFC 4959 SASL-IR), LOGIN.

Authentication is the TLS client certificate: the core checks it against the health trust
anchors and the directory maps it to a `Principal`. The SASL authorization identity, when
given, names the one mailbox this session acts for; it must be one the principal may use.
"""
from __future__ import annotations

import base64
import binascii
import logging

from mss.errors import AuthenticationFailed

from imap.protocol.commands import Command
from imap.protocol.response import Continue, Response, bad, bye, no, ok
from imap.session import MAX_AUTH_FAILURES, StartTLS

log = logging.getLogger("mss.imap")


async def starttls(session, cmd: Command) -> list:
    if session.tls:
        return [bad(cmd.tag, "TLS is already active")]
    return [ok(cmd.tag, "Begin TLS negotiation now"), StartTLS()]


async def login(session, cmd: Command) -> list[Response]:
    # LOGINDISABLED is always advertised: passwords are never accepted here.
    if not session.tls:
        return [no(cmd.tag, "TLS is required; then use AUTHENTICATE EXTERNAL", "PRIVACYREQUIRED")]
    return [no(cmd.tag, "LOGIN is disabled: use AUTHENTICATE EXTERNAL with your health-PKI certificate", "CANNOT")]


async def authenticate(session, cmd: Command) -> list[Response]:
    if cmd["mechanism"] != "EXTERNAL":
        return [no(cmd.tag, f"Unsupported SASL mechanism {cmd['mechanism']}; use EXTERNAL", "CANNOT")]
    initial = cmd["initial"]
    if initial is None:
        # RFC 4422 App. A: the server's challenge is empty.
        session.expect_auth_response(cmd)
        return [Continue("")]
    return await finish_authenticate(session, cmd, initial)


async def finish_authenticate(session, cmd: Command, response: bytes) -> list[Response]:
    response = response.strip()
    if response == b"*":
        return [bad(cmd.tag, "AUTHENTICATE cancelled")]
    if response in (b"", b"="):
        authzid = ""
    else:
        try:
            authzid = base64.b64decode(response, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return [bad(cmd.tag, "Invalid base64 in SASL response")]
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
    mailbox = principal.default_mailbox
    if not mailbox:
        return _failed(session, cmd, "No mailbox for this certificate", "AUTHORIZATIONFAILED")
    # Idempotent: a mailbox's special-use folders exist from its first session on.
    await session.core.store.ensure_default_folders(mailbox)
    session.authenticated(principal, mailbox)
    log.info("imap login peer=%s id=%s mailbox=%s", session.peer, principal.identifier, mailbox)
    return [ok(cmd.tag, f"Authenticated; mailbox {mailbox}", "CAPABILITY " + " ".join(session.capabilities()))]


def _failed(session, cmd: Command, text: str, code: str) -> list:
    session.auth_failures += 1
    out: list = [no(cmd.tag, text, code)]
    if session.auth_failures >= MAX_AUTH_FAILURES:
        session.logout()
        out.append(bye("Too many failed authentication attempts"))
    return out
