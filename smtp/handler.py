"""aiosmtpd hooks -> core calls, and core results -> SMTP replies.

One `SubmissionHandler` serves every connection of the submission listeners. It owns no
SQL and no cryptography: who the client is comes from `core.auth`, what may be sent from
`core.submission`. Per-connection state lives on the aiosmtpd `Session` (under `session.mss`),
which aiosmtpd replaces after STARTTLS (RFC 3207 4.2), so nothing learnt in clear survives.

Every reply carries an RFC 3463 enhanced status code (RFC 2034), and texts say what was
wrong without saying more than the client may know (DESIGN.md, Identity: the reason a
certificate was refused goes to the log only).
"""
from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import auth_mechanism

from mss.errors import AuthenticationFailed
from mss.refusals import Refusal
from smtp.replies import smtp_reply
from mss.principal import Principal
from smtp import auth as sasl

log = logging.getLogger("mss.smtp")

# RFC 5321 4.1.2 (with RFC 6531 3.3 for UTF-8), checked on the addr-spec aiosmtpd extracted.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_ATEXT_UTF8 = r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f])"
_QUOTED = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"'
_QUOTED_UTF8 = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|[^\x00-\x7f]|\\[\x20-\x7e])*"'
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_LABEL_UTF8 = r"(?:[A-Za-z0-9]|[^\x00-\x7f])(?:(?:[A-Za-z0-9-]|[^\x00-\x7f]){0,61}(?:[A-Za-z0-9]|[^\x00-\x7f]))?"


def _mailbox_re(atext: str, quoted: str, label: str) -> re.Pattern[str]:
    local = rf"(?:{atext}+(?:\.{atext}+)*|{quoted})"
    domain = rf"{label}(?:\.{label})+"
    return re.compile(rf"(?P<local>{local})@(?P<domain>{domain})\Z")


_MAILBOX = _mailbox_re(_ATEXT, _QUOTED, _LABEL)
_MAILBOX_UTF8 = _mailbox_re(_ATEXT_UTF8, _QUOTED_UTF8, _LABEL_UTF8)


def address_problem(address: str, *, smtputf8: bool = False) -> str | None:
    """Why `address` is not an RFC 5321 Mailbox we accept, or None when it is.

    Address literals (`user@[192.0.2.1]`) and dotless domains are refused: every mailbox
    of the trust space has a domain name. Length limits are RFC 5321 4.5.3.1.1-3.
    """
    if not smtputf8 and not address.isascii():
        return "non-ASCII address without SMTPUTF8"
    m = (_MAILBOX_UTF8 if smtputf8 else _MAILBOX).match(address)
    if m is None:
        return "address syntax is invalid (RFC 5321 4.1.2)"
    if len(m["local"].encode("utf-8")) > 64:
        return "local part longer than 64 octets"
    if len(m["domain"].encode("utf-8")) > 255:
        return "domain longer than 255 octets"
    if len(address.encode("utf-8")) > 254:
        return "address longer than 254 octets"
    return None


def peer_text(peer: Any) -> str:
    """`ip:port` (or `[ip6]:port`) for log lines and `Authenticator.from_certificate`."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer)


@dataclass
class ConnectionAuth:
    """What a connection has proved, attached to the aiosmtpd Session as `session.mss`."""

    certificate: asyncio.Task | None = None  # -> Principal | Exception
    certificate_der: bytes | None = None  # the client's leaf certificate, for SASL PLAIN/OAUTH
    sasl_principal: Principal | None = None
    auth_failures: int = 0
    extras: dict[str, Any] = field(default_factory=dict)


def _state(session: Any) -> ConnectionAuth:
    st = getattr(session, "mss", None)
    if st is None:
        st = ConnectionAuth()
        session.mss = st
    return st


class _Gone(Exception):
    """The client went away in the middle of an AUTH exchange."""


class _Aborted(Exception):
    """The client cancelled an AUTH exchange with "*" (RFC 4954 4)."""


class SubmissionHandler:
    """Hooks for the `submission` and `submissions` listeners (RFC 6409 message submission)."""

    def __init__(self, core: Any) -> None:
        self.core = core
        self.settings = core.settings

    # -- authentication by certificate ------------------------------------------------------

    def tls_established(self, session: Any, ssl_object: Any) -> None:
        """Called as soon as TLS is up (STARTTLS or implicit): start mapping the certificate.

        The look-up runs while the client sends EHLO; MAIL and AUTH await its result.
        """
        st = _state(session)
        if st.certificate is None:
            st.certificate_der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            st.certificate = asyncio.get_running_loop().create_task(
                self._authenticate_certificate(ssl_object, peer_text(session.peer)),
                name=f"smtp-cert-auth {peer_text(session.peer)}",
            )

    async def _authenticate_certificate(self, ssl_object: Any, peer: str) -> Principal | Exception:
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        try:
            principal = await self.core.auth.from_certificate(der, peer=peer)
        except AuthenticationFailed as exc:
            log.warning("certificate refused peer=%s reason=%s", peer, exc.reason)
            return exc
        except Exception as exc:  # noqa: BLE001 - a temporary failure, answered with 4xx
            log.exception("certificate check failed peer=%s", peer)
            return exc
        log.info(
            "certificate ok peer=%s kind=%s id=%s", peer, principal.kind, principal.identifier
        )
        return principal

    def connection_closed(self, session: Any) -> None:
        st = getattr(session, "mss", None)
        if st is not None and st.certificate is not None and not st.certificate.done():
            st.certificate.cancel()

    async def certificate_principal(self, session: Any) -> Principal | Exception | None:
        """The certificate's principal, its failure, or None when TLS is not up."""
        st = _state(session)
        if st.certificate is None:
            return None
        return await asyncio.shield(st.certificate)

    async def principal(self, session: Any) -> tuple[Principal | None, str | None]:
        """(principal, None) when the session may send, else (None, the reply to send)."""
        st = _state(session)
        if st.sasl_principal is not None:
            return st.sasl_principal, None
        result = await self.certificate_principal(session)
        if result is None:
            return None, "530 5.7.0 Must issue a STARTTLS command first"
        if isinstance(result, AuthenticationFailed):
            return None, f"530 5.7.0 {result.public}"
        if isinstance(result, Exception):
            return None, "454 4.7.0 Temporary authentication failure, try again later"
        return result, None

    # -- aiosmtpd hooks -----------------------------------------------------------------------

    # Each lists its mechanism in aiosmtpd's table (the EHLO "AUTH" line, reordered in
    # handle_EHLO). The exchanges themselves run in `handle_AUTH`, which aiosmtpd calls instead.

    @auth_mechanism("EXTERNAL")
    async def auth_EXTERNAL(self, server: Any, args: list[str]) -> Any:
        raise NotImplementedError("handled by handle_AUTH")

    @auth_mechanism("PLAIN")
    async def auth_PLAIN(self, server: Any, args: list[str]) -> Any:
        raise NotImplementedError("handled by handle_AUTH")

    @auth_mechanism("LOGIN")
    async def auth_LOGIN(self, server: Any, args: list[str]) -> Any:
        raise NotImplementedError("handled by handle_AUTH")

    @auth_mechanism("OAUTHBEARER")
    async def auth_OAUTHBEARER(self, server: Any, args: list[str]) -> Any:
        raise NotImplementedError("handled by handle_AUTH")

    @auth_mechanism("XOAUTH2")
    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> Any:
        raise NotImplementedError("handled by handle_AUTH")

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]):
        # The hook replaces aiosmtpd's own bookkeeping, so record the name ourselves.
        session.host_name = hostname
        last = responses.pop()  # "250 HELP"
        for i, line in enumerate(responses):
            if line.startswith("250-AUTH "):  # aiosmtpd sorts them; the strongest goes first
                offered = set(line[len("250-AUTH "):].split())
                responses[i] = "250-AUTH " + " ".join(m for m in sasl.MECHANISMS if m in offered)
        responses.append("250-PIPELINING")
        responses.append("250-ENHANCEDSTATUSCODES")
        responses.append(last)
        return responses

    async def handle_AUTH(self, server: Any, session: Any, envelope: Any, args: list[str]) -> str | None:
        """RFC 4954 AUTH, after aiosmtpd checked EHLO, TLS, arity and the mechanism name.

        Returns the final reply, or None when it was already written (or the client left).
        Every refusal of credentials (535) counts; after `MAX_AUTH_FAILURES` of them the
        connection is closed with 421. Passwords and tokens are never logged.
        """
        peer = peer_text(session.peer)
        if envelope.mail_from:
            return "503 5.5.1 AUTH is not permitted during a mail transaction (RFC 4954 4)"
        mechanism = args[0].upper()
        if mechanism not in sasl.MECHANISMS:
            return "504 5.5.4 Unrecognized authentication type"
        st = _state(session)
        if st.certificate is None:  # aiosmtpd refuses AUTH before STARTTLS; defence in depth
            return "538 5.7.11 Encryption required for requested authentication mechanism"
        initial = args[1] if len(args) > 1 else None
        try:
            if mechanism == "EXTERNAL":
                outcome = await self._external(server, session, initial, peer)
            elif mechanism in sasl.TOKEN_MECHANISMS:
                outcome = await self._bearer(server, session, mechanism, initial, peer)
            else:
                outcome = await self._password(server, session, mechanism, initial, peer)
        except _Gone:
            return None
        except _Aborted:
            log.info("auth aborted peer=%s mechanism=%s", peer, mechanism)
            return await self._refused(server, st, "501 5.7.0 Authentication aborted")
        except sasl.SaslError as exc:
            log.warning("auth refused peer=%s mechanism=%s reason=%s", peer, mechanism, exc.log_reason)
            return await self._refused(server, st, sasl.smtp_reply(exc))
        except AuthenticationFailed as exc:  # the core logged the precise reason
            log.warning("auth refused peer=%s mechanism=%s reason=%s", peer, mechanism, exc.reason)
            return await self._refused(server, st, f"{sasl.INVALID}: {exc.public}")
        if isinstance(outcome, str):  # a temporary failure: not the client's fault, not counted
            return outcome
        principal = outcome
        st.sasl_principal = principal
        session.authenticated = True
        session.auth_data = principal
        log.info(
            "auth ok peer=%s mechanism=%s kind=%s id=%s mailboxes=%s",
            peer, mechanism, principal.kind, principal.identifier, ",".join(sorted(principal.mailboxes)),
        )
        return "235 2.7.0 Authentication successful"

    async def _refused(self, server: Any, st: ConnectionAuth, reply: str) -> str | None:
        """Count refused credentials (535; a malformed or cancelled exchange tests none)."""
        if not reply.startswith("535"):
            return reply
        st.auth_failures += 1
        if st.auth_failures < sasl.MAX_AUTH_FAILURES:
            return reply
        log.warning("auth failures=%d: closing the connection", st.auth_failures)
        await server.push(reply)
        await server.push("421 4.7.0 Too many failed authentication attempts, closing connection")
        if server.transport is not None:
            server.transport.close()
        return None

    @staticmethod
    async def _response(server: Any, challenge: bytes) -> bytes:
        """Send `334 <challenge>` and decode the client's answer."""
        line = await server.sasl_challenge(challenge)
        if line is None:
            raise _Gone()
        if line.strip() == "*":
            raise _Aborted()
        return sasl.decode_response(line)

    async def _message(self, server: Any, initial: str | None) -> bytes:
        """The client's first message: the initial response, or the answer to an empty challenge."""
        if initial is not None:
            return sasl.decode_response(initial)
        return await self._response(server, b"")

    async def _external(self, server: Any, session: Any, initial: str | None, peer: str) -> Principal | str:
        message = await self._message(server, initial)
        result = await self.certificate_principal(session)
        if isinstance(result, AuthenticationFailed):
            raise result
        if isinstance(result, Exception) or result is None:
            return "454 4.7.0 Temporary authentication failure, try again later"
        return sasl.external(message, result).principal

    async def _bearer(
        self, server: Any, session: Any, mechanism: str, initial: str | None, peer: str
    ) -> Principal | str:
        creds = sasl.bearer(mechanism, await self._message(server, initial))
        try:
            return await self.core.auth.from_token(
                creds.token, _state(session).certificate_der, creds.authzid, peer=peer, mechanism=mechanism
            )
        except AuthenticationFailed:
            # RFC 7628 3.2.2: an error challenge, the client's %x01 (XOAUTH2: empty) reply,
            # then the failure. Whatever the client answers, the attempt has failed.
            line = await server.sasl_challenge(sasl.bearer_error(mechanism))
            if line is None:
                raise _Gone() from None
            raise
        except Exception:  # noqa: BLE001 - JWKS or directory unavailable: 454, not 535
            log.exception("auth error peer=%s mechanism=%s", peer, mechanism)
            return "454 4.7.0 Temporary authentication failure, try again later"

    async def _password(
        self, server: Any, session: Any, mechanism: str, initial: str | None, peer: str
    ) -> Principal | str:
        if mechanism == "PLAIN":
            creds = sasl.plain(await self._message(server, initial))
        else:  # LOGIN: the user name may come as the initial response (what Outlook does)
            if initial is not None:
                user = sasl.decode_response(initial)
            else:
                user = await self._response(server, sasl.LOGIN_USERNAME)
            password = await self._response(server, sasl.LOGIN_PASSWORD)
            creds = sasl.PasswordCredentials(
                sasl.utf8(user, "User name").strip(), sasl.utf8(password, "Password")
            )
            if not creds.username or not creds.password:
                raise sasl.SaslError("Empty user name or password", "login empty field")
        try:
            return await self.core.auth.from_app_password(
                creds.username, creds.password, _state(session).certificate_der, peer=peer, mechanism=mechanism
            )
        except AuthenticationFailed:
            raise
        except Exception:  # noqa: BLE001 - database unavailable: 454, not 535
            log.exception("auth error peer=%s mechanism=%s", peer, mechanism)
            return "454 4.7.0 Temporary authentication failure, try again later"

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]):
        principal, refusal = await self.principal(session)
        if refusal is not None:
            log.info("MAIL refused peer=%s reply=%r", peer_text(session.peer), refusal)
            return refusal
        problem = address_problem(address, smtputf8=envelope.smtp_utf8)
        if problem is not None:
            return f"553 5.1.7 Invalid sender address: {problem}"
        transaction = self.core.submission.begin(principal)
        try:
            transaction.mail_from(address)
        except Refusal as exc:
            log.info(
                "MAIL refused peer=%s id=%s from=%s reply=%r",
                peer_text(session.peer), principal.identifier, address, smtp_reply(exc),
            )
            return smtp_reply(exc)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        _state(session).extras["transaction"] = transaction
        return "250 2.1.0 Sender ok"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]):
        transaction = _state(session).extras.get("transaction")
        if transaction is None or not envelope.mail_from:  # aiosmtpd already requires MAIL
            return "503 5.5.1 Need MAIL command"
        problem = address_problem(address, smtputf8=envelope.smtp_utf8)
        if problem is not None:
            return f"553 5.1.3 Invalid recipient address: {problem}"
        try:
            await transaction.add_recipient(address)
        except Refusal as exc:
            log.info("RCPT refused peer=%s to=%s reply=%r", peer_text(session.peer), address, smtp_reply(exc))
            return smtp_reply(exc)
        except Exception:  # noqa: BLE001 - never 250 on an unknown failure
            log.exception("RCPT check failed peer=%s to=%s", peer_text(session.peer), address)
            return "451 4.3.0 Temporary failure checking the recipient, try again later"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """250 only once `deliver` returned, i.e. the message is durably stored (DESIGN.md 4)."""
        transaction = _state(session).extras.pop("transaction", None)
        peer = peer_text(session.peer)
        if transaction is None:
            return "503 5.5.1 Need MAIL command"
        raw = envelope.original_content or b""
        try:
            await transaction.deliver(raw)
        except Refusal as exc:
            log.info("DATA refused peer=%s reply=%r", peer, smtp_reply(exc))
            return smtp_reply(exc)
        except Exception:  # noqa: BLE001 - never 250 when storing failed
            log.exception("DATA storing failed peer=%s", peer)
            return "451 4.3.0 Message not stored because of a local error, try again later"
        log.info("DATA stored peer=%s rcpts=%d size=%d", peer, len(envelope.rcpt_tos), len(raw))
        return "250 2.0.0 Ok: stored"
