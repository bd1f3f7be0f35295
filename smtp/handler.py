"""aiosmtpd hooks -> core calls, and core results -> SMTP replies.

One `SubmissionHandler` serves every connection of the submission listeners. It owns no
SQL and no cryptography: who the client is comes from the core's `Credentials` (the SASL
exchange is the core's too; `handle_AUTH` only frames its lines), what may be sent from
`core.submission`. Per-connection state lives on the aiosmtpd `Session` (under `session.mss`),
which aiosmtpd replaces after STARTTLS (RFC 3207 4.2), so nothing learnt in clear survives.

Every reply carries an RFC 3463 enhanced status code (RFC 2034), and texts say what was
wrong without saying more than the client may know (DESIGN.md, Identity: the reason a
certificate was refused goes to the log only).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import ssl
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from aiosmtpd.smtp import SMTP, Envelope, Session, auth_mechanism

from mss.admission import close_soon, source_network
from mss.peers import format_peer
from mss.principal import Principal
from mss.records import MailDsn, RcptDsn, TraceInfo
from mss.refusals import Refusal
from mss.services import (
    Authentication,
    Challenge,
    ClientConnection,
    Credentials,
    Failure,
    SmtpServices,
    Submission,
    SubmissionTransaction,
    Success,
)
from smtp import auth as sasl
from smtp.data import DataLines
from smtp.replies import smtp_reply

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
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:  # aiosmtpd decodes with surrogateescape: the bytes were not UTF-8
        return "address is not valid UTF-8 (RFC 6531 3.3)"
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in address):
        return "address contains a control character or a line separator"
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


@dataclass
class ConnectionAuth:
    """What a connection has proved, attached to the aiosmtpd Session as `session.mss`."""

    #: The core's authentication of this connection, from the moment TLS is up.
    authentication: Authentication | None = None
    #: The certificate's principal, looked up while the client sends EHLO (MAIL awaits it).
    certificate: asyncio.Task[Success | Failure] | None = None
    sasl_principal: Principal | None = None
    #: The mail transaction begun by MAIL, carried to DATA (a new one at every MAIL).
    transaction: SubmissionTransaction | None = None
    #: Recipients refused with a 5xx, counted across sessions per principal and source
    #: (`RefusalMemory`, recipient enumeration, `[abuse]`): the key, set by MAIL.
    rcpt_key: str | None = None
    session_refusals: int = 0  # every 5xx of this session
    rcpt_refusals: int = 0  # the count that decides (this session's, or the remembered one)


class RefusalMemory:
    """Refused recipients per key (principal and source address) across sessions, so that
    reconnecting does not start the count again; one refusal is forgotten every `decay_s`
    seconds. In this process only: a cluster of N nodes lets a client N times as many."""

    MAX_KEYS = 100_000

    def __init__(self, decay_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.decay_s = decay_s
        self._clock = clock
        self._counts: dict[str, tuple[float, float]] = {}  # key -> (count, when)

    def add(self, key: str) -> int:
        """Count one more refusal under `key`; the count now (rounded up)."""
        now = self._clock()
        count = self._current(key, now) + 1
        if len(self._counts) >= self.MAX_KEYS and key not in self._counts:
            self._counts = {k: v for k, v in self._counts.items() if self._current(k, now) > 0}
        self._counts[key] = (count, now)
        return math.ceil(count - 1e-9)

    def count(self, key: str) -> int:
        """The count under `key` now (rounded up), counting nothing."""
        return math.ceil(self._current(key, self._clock()) - 1e-9)

    def _current(self, key: str, now: float) -> float:
        count, when = self._counts.get(key, (0.0, now))
        return max(0.0, count - (now - when) / self.decay_s)


def _state(session: Session) -> ConnectionAuth:
    st: ConnectionAuth | None = getattr(session, "mss", None)
    if st is None:
        st = ConnectionAuth()
        session.mss = st  # type: ignore[attr-defined]
    return st


class SubmissionHandler:
    """Hooks for the `submission` and `submissions` listeners (RFC 6409 message submission)."""

    #: Refused recipients counted across sessions per principal and source (enumeration by a
    #: client). Off on the `mta` listener: there one principal is a whole peer operator, whose
    #: ordinary bounces would otherwise add up into delays and 421s for all its users.
    remember_refusals = True

    def __init__(self, core: SmtpServices) -> None:
        self.core = core
        self.credentials: Credentials = core.credentials
        self.submission: Submission = core.submission
        self.settings = core.settings
        self.rcpt_refusals = RefusalMemory(core.settings.abuse.rcpt_error_decay_s)

    # -- authentication by certificate ------------------------------------------------------

    def tls_established(self, session: Session, ssl_object: ssl.SSLObject | None) -> None:
        """Called as soon as TLS is up (STARTTLS or implicit): the core's authentication of
        this connection begins, and with it the certificate look-up, which runs while the
        client sends EHLO; MAIL and AUTH EXTERNAL await its result (the same one)."""
        st = _state(session)
        if st.authentication is None:
            peer = format_peer(session.peer)
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            st.authentication = self.credentials.authentication(ClientConnection("smtp", peer, der))
            st.certificate = asyncio.get_running_loop().create_task(
                st.authentication.certificate(), name=f"smtp-cert-auth {peer}"
            )

    def connection_closed(self, session: Session) -> None:
        st: ConnectionAuth | None = getattr(session, "mss", None)
        if st is not None and st.certificate is not None and not st.certificate.done():
            st.certificate.cancel()

    async def certificate_principal(self, session: Session) -> Success | Failure | None:
        """The certificate's outcome, or None when TLS is not up."""
        st = _state(session)
        if st.certificate is None:
            return None
        return await asyncio.shield(st.certificate)

    async def principal(self, session: Session) -> tuple[Principal | None, str | None]:
        """(principal, None) when the session may send, else (None, the reply to send)."""
        st = _state(session)
        if st.sasl_principal is not None:
            return st.sasl_principal, None
        result = await self.certificate_principal(session)
        if result is None:
            return None, "530 5.7.0 Must issue a STARTTLS command first"
        if isinstance(result, Failure):
            if result.kind == "unavailable":
                return None, "454 4.7.0 Temporary authentication failure, try again later"
            return None, f"530 5.7.0 {' '.join(result.public.split())}"
        return result.principal, None

    # -- aiosmtpd hooks -----------------------------------------------------------------------

    # Each lists its mechanism in aiosmtpd's table (the EHLO "AUTH" line, reordered in
    # handle_EHLO). The exchanges themselves run in `handle_AUTH`, which aiosmtpd calls instead.

    @auth_mechanism("EXTERNAL")
    async def auth_EXTERNAL(self, server: SMTP, args: list[str]) -> None:
        raise NotImplementedError("handled by handle_AUTH")

    @auth_mechanism("PLAIN")
    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> None:
        raise NotImplementedError("handled by handle_AUTH")

    @auth_mechanism("LOGIN")
    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> None:
        raise NotImplementedError("handled by handle_AUTH")

    @auth_mechanism("OAUTHBEARER")
    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> None:
        raise NotImplementedError("handled by handle_AUTH")

    @auth_mechanism("XOAUTH2")
    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> None:
        raise NotImplementedError("handled by handle_AUTH")

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        # The hook replaces aiosmtpd's own bookkeeping, so record the name ourselves.
        session.host_name = hostname
        st: ConnectionAuth | None = getattr(session, "mss", None)
        order = st.authentication.mechanisms if st is not None and st.authentication is not None else sasl.MECHANISMS
        last = responses.pop()  # "250 HELP"
        for i, line in enumerate(responses):
            if line.startswith("250-AUTH "):  # aiosmtpd sorts them; the core's order wins
                offered = set(line[len("250-AUTH ") :].split())
                responses[i] = "250-AUTH " + " ".join(m for m in order if m in offered)
        responses.append("250-PIPELINING")
        responses.append("250-ENHANCEDSTATUSCODES")
        responses.append("250-DSN")  # RFC 3461 4: NOTIFY, ORCPT, RET, ENVID (smtp.dsn_params)
        responses.append(last)
        return responses

    async def handle_AUTH(
        self, server: sasl.SaslServer, session: Session, envelope: Envelope, args: list[str]
    ) -> str | None:
        """RFC 4954 AUTH, after aiosmtpd checked EHLO, TLS, arity and the mechanism name.

        Only framing: the core's exchange decides; its challenges go out as `334 <base64>`
        and the client's lines come back to it. Returns the final reply, or None when it was
        already written (or the client left). The core counts and logs the outcome.
        """
        if envelope.mail_from:
            return "503 5.5.1 AUTH is not permitted during a mail transaction (RFC 4954 4)"
        st = _state(session)
        if st.authentication is None:  # aiosmtpd refuses AUTH before STARTTLS; defence in depth
            return "538 5.7.11 Encryption required for requested authentication mechanism"
        exchange = st.authentication.exchange(args[0])
        response: str | None = args[1] if len(args) > 1 else None  # RFC 4954 4 initial response
        while True:
            step = await exchange.step(response)
            if not isinstance(step, Challenge):
                break
            try:
                response = await server.sasl_challenge(step.data)
            except sasl.ResponseLineTooLong as exc:
                log.info("auth exchange abandoned peer=%s reason=response line too long", format_peer(session.peer))
                return exc.reply
            if response is None:
                return None  # the client went away in the middle of the exchange
        if isinstance(step, Success):
            authenticated = getattr(server, "authenticated", None)
            if authenticated is not None:
                authenticated()  # leaves the pre-authentication connection cap
            st.sasl_principal = step.principal
            session.authenticated = True
            session.auth_data = step.principal  # type: ignore[assignment] # aiosmtpd types it None
            return sasl.SUCCESS
        reply = sasl.failure_reply(step)
        if not step.close:
            return reply
        await server.push(reply)
        await server.push(sasl.TOO_MANY_FAILURES)
        close_soon(server.transport)  # aborted after a grace if the peer does not read
        return None

    def reverse_path(self, address: str) -> str:
        """The sender as the core gets it. aiosmtpd hands the null reverse-path (RFC 5321
        4.5.5) over as ``<>``, which the submission listeners refuse as an invalid address
        (nobody submits a bounce); the `mta` listener makes it ``""`` (`smtp.mta`)."""
        return address

    def trace(self, session: Session, envelope: Envelope, principal: Principal) -> TraceInfo:
        """The hop this message comes by, for its `Received:` field (RFC 5321 4.4): the
        EHLO name, the peer, RFC 3848's protocol name (ESMTPSA: TLS and an authenticated
        client, UTF8SMTPSA with SMTPUTF8, RFC 6531 3.7.3) and the TLS version and cipher."""
        ssl_info = session.ssl or {}
        ssl_object = ssl_info.get("ssl_object") if isinstance(ssl_info, dict) else None
        tls = None
        if ssl_object is not None:
            cipher = ssl_object.cipher()
            tls = f"{ssl_object.version()} {cipher[0] if cipher else '?'}"
        protocol = ("UTF8SMTP" if envelope.smtp_utf8 else "ESMTP") + "S" + ("A" if self.authenticated_client else "")
        return TraceInfo(
            helo=session.host_name or "unknown",
            peer=format_peer(session.peer),
            protocol=protocol,
            tls=tls,
        )

    #: Submission clients are always authenticated (certificate, AUTH): "ESMTPSA".
    authenticated_client = True

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        principal, refusal = await self.principal(session)
        if refusal is not None:
            log.info("MAIL refused peer=%s reply=%r", format_peer(session.peer), refusal)
            return refusal
        sender = self.reverse_path(address)
        problem = address_problem(sender, smtputf8=envelope.smtp_utf8) if sender else None
        if problem is not None:
            log.info("MAIL refused peer=%s from=%r reason=%s", format_peer(session.peer), address, problem)
            return f"553 5.1.7 Invalid sender address: {problem}"
        # RET and ENVID, taken out of the command by `SubmissionSMTP.smtp_MAIL` (RFC 3461 4.3-4.4).
        dsn: MailDsn | None = getattr(server, "mail_dsn", None)
        transaction = self.submission.begin(principal, trace=self.trace(session, envelope, principal))
        try:
            transaction.mail_from(sender, dsn, declared_size(mail_options))
        except Refusal as exc:
            log.info(
                "MAIL refused peer=%s id=%s from=%s reply=%r",
                format_peer(session.peer),
                principal.identifier,
                address,
                smtp_reply(exc),
            )
            return smtp_reply(exc)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        st = _state(session)
        st.transaction = transaction
        st.rcpt_key = f"{principal.identifier}|{source_network(session.peer)}"
        return "250 2.1.0 Sender ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        """The recipient's reply, slowed down and finally cut off when the session collects
        refusals (recipient enumeration, issue 13; the spirit of Postfix's
        smtpd_soft_error_limit / smtpd_hard_error_limit): after `rcpt_soft_error_limit`
        permanent refusals each further one waits `rcpt_error_delay_s` times the refusals
        over the limit (at most `rcpt_error_max_delay_s`; the wait is an `asyncio.sleep`,
        other sessions go on), and the `rcpt_hard_error_limit`-th is answered `421 4.7.0`
        and the connection closed (RFC 5321 3.8)."""
        reply = await self._recipient(session, envelope, address, rcpt_options, getattr(server, "rcpt_dsn", None))
        if not reply.startswith("5"):
            return reply
        st = _state(session)
        # Every 5xx counts in this session; across sessions only the refusals of well-formed
        # addresses (the enumeration signal: a syntax error tells nothing about a mailbox).
        st.session_refusals += 1
        key = st.rcpt_key or f"?|{source_network(session.peer)}"
        syntax = reply.startswith(("553 5.1.3", "503"))
        if not self.remember_refusals:
            remembered = 0
        else:
            remembered = self.rcpt_refusals.count(key) if syntax else self.rcpt_refusals.add(key)
        st.rcpt_refusals = max(st.session_refusals, remembered)
        abuse = self.settings.abuse
        peer = format_peer(session.peer)
        if st.rcpt_refusals >= abuse.rcpt_hard_error_limit:
            log.warning("RCPT limit reached peer=%s refused=%d closing=yes", peer, st.rcpt_refusals)
            # Nothing pipelined behind this RCPT may run (a DATA and its body, say): the
            # reader ends the session at its next read, synchronously (smtp.server).
            reader = getattr(server, "_reader", None)
            if reader is not None:
                reader.ended_by_server = True
            transport = server.transport
            if transport is not None:
                asyncio.get_running_loop().call_soon(close_soon, transport)  # after the reply is written
            return f"421 4.7.0 Too many refused recipients ({st.rcpt_refusals}), closing connection"
        over = st.rcpt_refusals - abuse.rcpt_soft_error_limit
        if over > 0:
            delay = min(abuse.rcpt_error_max_delay_s, abuse.rcpt_error_delay_s * over)
            if delay > 0:
                log.info("RCPT refusal delayed peer=%s refused=%d delay=%.1fs", peer, st.rcpt_refusals, delay)
                await asyncio.sleep(delay)
        return reply

    async def _recipient(
        self, session: Session, envelope: Envelope, address: str, rcpt_options: list[str], dsn: RcptDsn | None
    ) -> str:
        transaction = _state(session).transaction
        if transaction is None or not envelope.mail_from:  # aiosmtpd already requires MAIL
            return "503 5.5.1 Need MAIL command"
        # RFC 5321 4.1.1.3: `postmaster` without a domain is the one dotless recipient allowed.
        problem = None if address.lower() == "postmaster" else address_problem(address, smtputf8=envelope.smtp_utf8)
        if problem is not None:
            log.info("RCPT refused peer=%s to=%r reason=%s", format_peer(session.peer), address, problem)
            return f"553 5.1.3 Invalid recipient address: {problem}"
        # `dsn`: NOTIFY and ORCPT, taken out of the command by `SubmissionSMTP.smtp_RCPT`
        # (RFC 3461 4.1-4.2).
        try:
            await transaction.add_recipient(address, dsn)
        except Refusal as exc:
            log.info("RCPT refused peer=%s to=%s reply=%r", format_peer(session.peer), address, smtp_reply(exc))
            return smtp_reply(exc)
        except Exception:
            log.exception("RCPT check failed peer=%s to=%s", format_peer(session.peer), address)
            return "451 4.3.0 Temporary failure checking the recipient, try again later"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """250 only once `deliver` returned, i.e. the message is durably stored (DESIGN.md 4)."""
        st = _state(session)
        transaction, st.transaction = st.transaction, None
        peer = format_peer(session.peer)
        if transaction is None:
            return "503 5.5.1 Need MAIL command"
        raw = envelope.original_content or b""
        refusal = _data_lines_refusal(getattr(server, "data_lines", None))
        if refusal is not None:
            log.info("DATA refused peer=%s reply=%r", peer, refusal)
            return refusal
        try:
            result = await transaction.deliver(raw)
        except Refusal as exc:
            log.info("DATA refused peer=%s reply=%r", peer, smtp_reply(exc))
            return smtp_reply(exc)
        except Exception:
            log.exception("DATA storing failed peer=%s", peer)
            return "451 4.3.0 Message not stored because of a local error, try again later"
        log.info(
            "DATA stored peer=%s rcpts=%d size=%d over_quota=%s",
            peer,
            len(envelope.rcpt_tos),
            len(raw),
            ",".join(result.over_quota) or "-",
        )
        if result.over_quota:
            # One reply covers every recipient (RFC 5321 4.2.5): the others have the message,
            # the sender gets a failure DSN for these.
            return f"250 2.0.0 Ok: stored; not delivered, mailbox full: {len(result.over_quota)} recipient(s)"
        return "250 2.0.0 Ok: stored"


def declared_size(mail_options: list[str]) -> int | None:
    """The SIZE=n parameter of MAIL (RFC 1870 6), which aiosmtpd has checked to be digits
    within the message size limit; None when not given."""
    for option in mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return None


def _data_lines_refusal(lines: DataLines | None) -> str | None:
    """The reply for content lines `smtp.data` found wrong while DATA was read, or None.

    The smuggling signature first (a lone "." beside a bare LF: refused whole whatever the
    bare-LF setting, since another server could take it for the end of data), then line
    length (RFC 5321 4.5.3.1.6), then bare LF when the operator refuses it (RFC 5321 2.3.8).
    """
    if lines is None:
        return None
    if lines.lone_dot:
        return (
            "550 5.6.0 Message refused: a lone '.' line beside a bare LF looks like a smuggled end of data "
            "(only <CRLF>.<CRLF> ends DATA, RFC 5321 2.3.8, 4.1.1.4)"
        )
    if lines.too_long:
        return "500 5.5.2 Line too long: message lines are at most 998 octets (RFC 5321 4.5.3.1.6)"
    if lines.bare_lf and lines.mode == "reject":
        return "550 5.5.2 Message lines must end with CRLF, bare LF is refused here (RFC 5321 2.3.8)"
    return None
