"""The `mta` listener (port 25's role): mail from the other operators of the trust space.

The same aiosmtpd session as the submission listeners (`smtp.server.SubmissionSMTP`: strict
command lines, enhanced codes, DATA through `smtp.data.DataLines`, so bare LF and smuggled
ends of data are handled exactly as there; the connection caps are shared) and the same
hooks (`smtp.handler.SubmissionHandler`: RCPT and DATA go to `core.submission` unchanged).
What differs is who the client is:

- STARTTLS is required before MAIL (RFC 3207 4; aiosmtpd answers `530 5.7.0` before it);
- the client is another operator's MTA, known by its SERV certificate only: when TLS is up,
  `core.credentials.operator` validates it (chain, revocation, whitelisted domain; the
  reason of a refusal goes to the log, `mss.auth`). No AUTH is offered or accepted: a
  password would prove nothing about an operator;
- MAIL without a valid SERV principal is refused (`530 5.7.0` without a certificate,
  `550 5.7.1` with a wrong one); the null reverse-path (`MAIL FROM:<>`, RFC 5321 4.5.5: a
  delivery status notification) is accepted, the core deciding (only SERV principals may);
- the sender's domain must be one the certificate speaks for, and recipients only this
  operator's domains (no relaying onwards): both the core's rules (`mss.delivery`,
  `Reason.RELAY_DENIED`), so every front end answers them alike;
- EHLO offers STARTTLS (before TLS), SIZE, 8BITMIME, SMTPUTF8, PIPELINING,
  ENHANCEDSTATUSCODES and DSN (RFC 3461); the trace protocol is ESMTPS (RFC 3848).

With `[relay] enabled = false` the listener is `smtp.server.NoRelayService` (554 greeting).
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from aiosmtpd.smtp import Envelope, Session

from mss.admission import Admission
from mss.config import Settings
from mss.peers import format_peer
from mss.principal import Principal
from mss.services import ClientConnection, Failure, SmtpServices
from smtp.handler import SubmissionHandler, _state
from smtp.server import SubmissionSMTP

log = logging.getLogger("mss.smtp")

__all__ = ["MtaHandler", "MtaSMTP"]

NO_CERTIFICATE = "530 5.7.0 Another operator's server must present its SERV certificate (mutual TLS)"
NO_TLS = "530 5.7.0 Must issue a STARTTLS command first"
UNAVAILABLE = "454 4.7.0 Temporary authentication failure, try again later"


class MtaHandler(SubmissionHandler):
    """The submission hooks with another operator's SERV certificate as the only credential."""

    #: No SMTP AUTH here: the trace protocol is ESMTPS, not ESMTPSA (RFC 3848).
    authenticated_client = False

    remember_refusals = False  # per session only (SubmissionHandler.remember_refusals)

    def __init__(self, core: SmtpServices) -> None:
        super().__init__(core)
        settings: Settings = core.settings
        # Lower-case A-labels, as `Principal.domains` (the settings validate the domain).
        self.own_domains = frozenset(d.lower().rstrip(".") for d in (settings.domain, settings.patient_domain) if d)

    def tls_established(self, session: Session, ssl_object: ssl.SSLObject | None) -> None:
        """TLS is up: the operator's certificate is checked while the client sends EHLO;
        MAIL awaits the result (`principal`)."""
        st = _state(session)
        if st.certificate is None:
            peer = _peer(session)
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            st.certificate = asyncio.get_running_loop().create_task(
                self.credentials.operator(ClientConnection("smtp", peer, der)), name=f"mta-operator-auth {peer}"
            )

    async def principal(self, session: Session) -> tuple[Principal | None, str | None]:
        result = await self.certificate_principal(session)
        if result is None:
            return None, NO_TLS
        if isinstance(result, Failure):
            if result.kind == "unavailable":
                return None, UNAVAILABLE
            if not _peer_certificate(session):
                return None, NO_CERTIFICATE
            return None, f"550 5.7.1 Refused: {' '.join(result.public.split())}"
        principal = result.principal
        if principal.kind != "SERV" or not principal.domains:  # defence in depth: the core decided
            log.warning("mta refused peer=%s reason=not_serv id=%s", _peer(session), principal.identifier)
            return None, "550 5.7.1 Refused: a SERV certificate of the trust space is required"
        if principal.domains & self.own_domains:
            log.warning(
                "mta refused peer=%s reason=own_domain id=%s domains=%s",
                _peer(session),
                principal.identifier,
                ",".join(sorted(principal.domains)),
            )
            return None, "550 5.7.1 Refused: the certificate names a domain of this operator, not of a peer"
        return principal, None

    def reverse_path(self, address: str) -> str:
        """aiosmtpd's ``<>`` is the null reverse-path (RFC 5321 4.5.5): ``""`` for the core."""
        return "" if address == "<>" else address

    async def handle_EHLO(
        self, server: object, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        responses = await super().handle_EHLO(server, session, envelope, hostname, responses)  # type: ignore[arg-type]
        return [line for line in responses if not line.startswith("250-AUTH")]

    async def handle_AUTH(self, server: object, session: Session, envelope: Envelope, args: list[str]) -> str:
        return MtaSMTP.NO_AUTH  # never reached (MtaSMTP.smtp_AUTH), kept as a second lock


class MtaSMTP(SubmissionSMTP):
    """One connection of the `mta` listener (STARTTLS required, no AUTH)."""

    NO_AUTH = "502 5.5.1 AUTH is not offered here: operators authenticate by their SERV certificate"

    def __init__(
        self,
        handler: MtaHandler,
        *,
        settings: Settings,
        tls_context: ssl.SSLContext | None,
        loop: asyncio.AbstractEventLoop | None = None,
        admission: Admission | None = None,
    ) -> None:
        super().__init__(
            handler,
            settings=settings,
            tls_context=tls_context,
            implicit_tls=False,
            loop=loop,
            admission=admission,
        )

    @property
    def listener(self) -> str:
        return "mta"

    async def smtp_AUTH(self, arg: str) -> None:
        await self.push(self.NO_AUTH)


def _peer(session: Session) -> str:
    return format_peer(session.peer)


def _peer_certificate(session: Session) -> bytes | None:
    info = session.ssl if isinstance(session.ssl, dict) else {}
    ssl_object = info.get("ssl_object")
    return ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
