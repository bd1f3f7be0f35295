"""STARTTLS (RFC 9051 6.2.1), AUTHENTICATE (RFC 9051 6.2.2, RFC 4959 SASL-IR) and LOGIN.

Every way in needs TLS and the connection's health-PKI client certificate. The SASL
exchange (EXTERNAL, PLAIN, LOGIN, OAUTHBEARER, XOAUTH2), the checks, the failure count and
the log line of each result are the core's (`mss.services.Authentication`); this module only
frames: a `Challenge` goes out as a `+ <base64>` continuation, the client's next raw line
goes back into the same exchange (the session is then AUTHENTICATING: `Event.AUTH_CONTINUE`),
and the outcome becomes a tagged response and `Event.AUTH_OK` or `Event.AUTH_FAILED`:

| outcome                  | response                                   |
|--------------------------|--------------------------------------------|
| Success                  | OK [CAPABILITY ...]                        |
| Failure refused          | NO [AUTHENTICATIONFAILED] (RFC 5530 3)     |
| Failure unauthorized     | NO [AUTHORIZATIONFAILED]                   |
| Failure malformed        | BAD                                        |
| Failure cancelled        | BAD (RFC 9051 6.2.2)                       |
| Failure unavailable      | NO [UNAVAILABLE]                           |
| Failure unsupported      | NO [CANNOT]                                |
| Failure throttled        | NO [UNAVAILABLE] (backed off: try later)   |
| Failure with close       | the NO, then `* BYE`, and the connection closes |
"""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING

from imap.actions import PendingAuthentication, StartTLS
from imap.namespaces import Namespaces
from imap.protocol.commands import Authenticate, Login, StartTls
from imap.protocol.response import Continue, Response, Status, bad, bye, no, ok
from imap.state import Event, State
from mss.refusals import Refusal
from mss.services import Challenge, Failure, FailureKind, SaslExchange, SaslStep, Success

if TYPE_CHECKING:
    from imap.session import Session

log = logging.getLogger("mss.imap")

#: Failure kind -> (status, response code, text prefix). RFC 5530 3 for the codes.
FAILURE_RESPONSE: dict[FailureKind, tuple[str, str | None, str]] = {
    "refused": ("NO", "AUTHENTICATIONFAILED", "Authentication failed: "),
    "unauthorized": ("NO", "AUTHORIZATIONFAILED", "Authorization failed: "),
    "malformed": ("BAD", None, ""),
    "cancelled": ("BAD", None, ""),
    "unavailable": ("NO", "UNAVAILABLE", ""),
    "unsupported": ("NO", "CANNOT", ""),
    "throttled": ("NO", "UNAVAILABLE", ""),  # RFC 5530 3: temporary, try again later
}


async def starttls(session: Session, cmd: StartTls) -> list[Response | StartTLS]:
    """RFC 9051 6.2.1: OK, then the handshake; nothing the client pipelined is kept."""
    if session.tls:
        return [bad(cmd.tag, "TLS is already active")]
    session.apply(Event.STARTTLS)
    return [ok(cmd.tag, "Begin TLS negotiation now"), StartTLS()]


async def login(session: Session, cmd: Login) -> list[Response]:
    """RFC 9051 6.2.3 with a per-mailbox app password (the session dispatcher already refused
    it before TLS, where LOGINDISABLED is advertised)."""
    if not session.tls:  # defence in depth
        return [no(cmd.tag, "TLS is required; then use AUTHENTICATE EXTERNAL", "PRIVACYREQUIRED")]
    authentication = session.authentication
    if authentication is None:  # TLS without `tls_started`: a bug of the I/O layer
        return [no(cmd.tag, "Authentication is not available on this connection", "UNAVAILABLE")]
    try:
        password = bytes(cmd.password).decode("utf-8")
    except UnicodeDecodeError:
        return [bad(cmd.tag, "Password is not UTF-8")]
    return await _outcome(session, cmd.tag, await authentication.password(cmd.user, password, mechanism="LOGIN"))


async def authenticate(session: Session, cmd: Authenticate) -> list[Response]:
    """RFC 9051 6.2.2: the exchange starts with the initial response (RFC 4959) if any."""
    authentication = session.authentication
    if authentication is None:
        return [no(cmd.tag, "Authentication is not available on this connection", "UNAVAILABLE")]
    initial = cmd.initial
    response = None if initial is None else bytes(initial).decode("ascii")  # the grammar checked base64
    return await _step(session, cmd.tag, authentication.exchange(cmd.mechanism), response)


async def continue_authenticate(session: Session, pending: PendingAuthentication, line: bytes) -> list[Response]:
    """The client's line after a `+` challenge (the session is AUTHENTICATING), fed back to
    the pending exchange."""
    # Non-ASCII cannot be base64: the exchange reports it as malformed.
    response = line.decode("ascii", errors="replace").strip()
    try:
        return await _step(session, pending.tag, pending.exchange, response)
    except Exception:
        log.exception("imap AUTHENTICATE failed peer=%r", session.peer)
        if session.state is State.AUTHENTICATING:
            session.apply(Event.AUTH_FAILED)
        return [no(pending.tag, "Internal server error; nothing was changed", "SERVERBUG")]


async def _step(session: Session, tag: str, exchange: SaslExchange, response: str | None) -> list[Response]:
    step: SaslStep = await exchange.step(response)
    if isinstance(step, Challenge):
        session.apply(Event.AUTH_CONTINUE, PendingAuthentication(tag, exchange))
        return [Continue(base64.b64encode(step.data).decode("ascii"))]
    return await _outcome(session, tag, step)


async def _outcome(session: Session, tag: str, outcome: Success | Failure) -> list[Response]:
    if isinstance(outcome, Failure):
        return _failed(session, tag, outcome)
    principal = outcome.principal
    try:
        handle = await session.core.mail.open(principal)
        # Without an authorization identity, the shared mailboxes it may list (RFC 2342).
        shared = await session.core.mail.shared(principal)
    except Refusal as exc:
        log.warning("imap login refused peer=%s id=%s reason=%r", session.peer, principal.identifier, exc.log)
        return _failed(session, tag, Failure("unauthorized", exc.public))
    session.apply(Event.AUTH_OK, Namespaces(handle, session.core.mail, shared))
    return [ok(tag, f"Authenticated; mailbox {handle.address}", "CAPABILITY " + " ".join(session.capabilities()))]


def _failed(session: Session, tag: str, failure: Failure) -> list[Response]:
    status, code, prefix = FAILURE_RESPONSE[failure.kind]
    session.apply(Event.AUTH_FAILED)
    out: list[Response] = [Status(status, prefix + failure.public, tag, code)]
    if failure.close:
        session.apply(Event.DISCONNECT)
        out.append(bye("Too many failed authentication attempts"))
    return out
