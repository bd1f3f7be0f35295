"""aiosmtpd hooks -> core calls, and core results -> SMTP replies.

One `SubmissionHandler` serves every connection of the submission listeners. It owns no
SQL and no cryptography: who the client is comes from `core.auth`, what may be sent from
`core.delivery`. Per-connection state lives on the aiosmtpd `Session` (under `session.mss`),
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

from mss.delivery import Envelope as CoreEnvelope
from mss.errors import AuthenticationFailed, PolicyRejection
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
    sasl_principal: Principal | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def _state(session: Any) -> ConnectionAuth:
    st = getattr(session, "mss", None)
    if st is None:
        st = ConnectionAuth()
        session.mss = st
    return st


class SubmissionHandler:
    """Hooks for the `submission` and `submissions` listeners (RFC 6409 message submission)."""

    def __init__(self, core: Any) -> None:
        self.core = core
        self.settings = core.settings
        self.max_recipients = core.settings.limits.max_recipients

    # -- authentication by certificate ------------------------------------------------------

    def tls_established(self, session: Any, ssl_object: Any) -> None:
        """Called as soon as TLS is up (STARTTLS or implicit): start mapping the certificate.

        The look-up runs while the client sends EHLO; MAIL and AUTH await its result.
        """
        st = _state(session)
        if st.certificate is None:
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

    @auth_mechanism("EXTERNAL")
    async def auth_EXTERNAL(self, server: Any, args: list[str]) -> Any:
        """Lists EXTERNAL in aiosmtpd's mechanism table (the EHLO "AUTH" line).

        The exchange itself runs in `handle_AUTH`, which aiosmtpd calls instead of this.
        """
        raise NotImplementedError("handled by handle_AUTH")

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]):
        # The hook replaces aiosmtpd's own bookkeeping, so record the name ourselves.
        session.host_name = hostname
        last = responses.pop()  # "250 HELP"
        responses.append("250-PIPELINING")
        responses.append("250-ENHANCEDSTATUSCODES")
        responses.append(last)
        return responses

    async def handle_AUTH(self, server: Any, session: Any, envelope: Any, args: list[str]) -> str | None:
        """RFC 4954 AUTH, after aiosmtpd checked EHLO, TLS, arity and the mechanism name."""
        peer = peer_text(session.peer)
        if envelope.mail_from:
            return "503 5.5.1 AUTH is not permitted during a mail transaction (RFC 4954 4)"
        mechanism = args[0].upper()
        if mechanism != "EXTERNAL":
            return "504 5.5.4 Unrecognized authentication type"
        try:
            if len(args) > 1:
                message = sasl.decode_response(args[1])
            else:
                line = await server.sasl_challenge(b"")
                if line is None:
                    return None  # the connection went away
                if line.strip() == "*":
                    return "501 5.7.0 Authentication aborted"
                message = sasl.decode_response(line)
        except sasl.SaslError as exc:
            log.info("auth refused peer=%s mechanism=EXTERNAL reason=%s", peer, exc.log_reason)
            return exc.reply
        result = await self.certificate_principal(session)
        if isinstance(result, AuthenticationFailed):
            log.warning("auth refused peer=%s mechanism=EXTERNAL reason=%s", peer, result.reason)
            return f"{sasl.INVALID}: {result.public}"
        if isinstance(result, Exception):
            return "454 4.7.0 Temporary authentication failure, try again later"
        if result is None:
            return "538 5.7.11 Encryption required for requested authentication mechanism"
        try:
            outcome = sasl.external(message, result)
        except sasl.SaslError as exc:
            log.warning("auth refused peer=%s mechanism=EXTERNAL reason=%s", peer, exc.log_reason)
            return exc.reply
        _state(session).sasl_principal = outcome.principal
        session.authenticated = True
        session.auth_data = outcome.principal
        log.info(
            "auth ok peer=%s mechanism=EXTERNAL id=%s authzid=%s",
            peer, outcome.principal.identifier, outcome.authzid or "-",
        )
        return "235 2.7.0 Authentication successful"

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]):
        principal, refusal = await self.principal(session)
        if refusal is not None:
            log.info("MAIL refused peer=%s reply=%r", peer_text(session.peer), refusal)
            return refusal
        problem = address_problem(address, smtputf8=envelope.smtp_utf8)
        if problem is not None:
            return f"553 5.1.7 Invalid sender address: {problem}"
        try:
            self.core.delivery.check_sender(principal, address)
        except PolicyRejection as exc:
            log.info(
                "MAIL refused peer=%s id=%s from=%s reply=%r",
                peer_text(session.peer), principal.identifier, address, exc.smtp_reply,
            )
            return exc.smtp_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        _state(session).extras["principal"] = principal
        return "250 2.1.0 Sender ok"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]):
        principal = _state(session).extras.get("principal")
        if principal is None:  # aiosmtpd already requires MAIL; defence in depth
            return "503 5.5.1 Need MAIL command"
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return f"452 4.5.3 Too many recipients (at most {self.max_recipients} per message)"
        problem = address_problem(address, smtputf8=envelope.smtp_utf8)
        if problem is not None:
            return f"553 5.1.3 Invalid recipient address: {problem}"
        try:
            await self.core.delivery.check_recipient(principal, address)
        except PolicyRejection as exc:
            log.info(
                "RCPT refused peer=%s id=%s to=%s reply=%r",
                peer_text(session.peer), principal.identifier, address, exc.smtp_reply,
            )
            return exc.smtp_reply
        except Exception:  # noqa: BLE001 - never 250 on an unknown failure
            log.exception("RCPT check failed peer=%s to=%s", peer_text(session.peer), address)
            return "451 4.3.0 Temporary failure checking the recipient, try again later"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """250 only once `submit` returned, i.e. the message is durably stored (DESIGN.md 4)."""
        principal = _state(session).extras.get("principal")
        peer = peer_text(session.peer)
        if principal is None:
            return "503 5.5.1 Need MAIL command"
        raw = envelope.original_content or b""
        core_env = CoreEnvelope(envelope.mail_from, tuple(envelope.rcpt_tos))
        try:
            await self.core.delivery.submit(core_env, raw, principal)
        except PolicyRejection as exc:
            log.info("DATA refused peer=%s id=%s reply=%r", peer, principal.identifier, exc.smtp_reply)
            return exc.smtp_reply
        except Exception:  # noqa: BLE001 - never 250 when storing failed
            log.exception("DATA storing failed peer=%s id=%s", peer, principal.identifier)
            return "451 4.3.0 Message not stored because of a local error, try again later"
        log.info(
            "DATA stored peer=%s id=%s rcpts=%d size=%d", peer, principal.identifier, len(envelope.rcpt_tos), len(raw)
        )
        return "250 2.0.0 Ok: stored"
