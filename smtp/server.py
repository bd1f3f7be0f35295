"""SMTP listeners: `submission` (STARTTLS), `submissions` (implicit TLS), `mta` (port 25 role).

`start(core)` creates the three servers on the running loop (`mta`: `smtp.mta.MtaSMTP`, or
`NoRelayService` when `[relay] enabled` is false) and returns them by role; the
caller reads the real ports from `server.sockets` (port 0 means ephemeral) and closes them.

aiosmtpd 1.4.6 does the SMTP state machine. `SubmissionSMTP` adapts it where it falls short
of what a health messaging server must do (DESIGN.md, Known ground and Bad input):

- implicit TLS: aiosmtpd only knows STARTTLS, so `submissions` accepts plain TCP and puts a
  TLS layer under the SMTP protocol itself (`ImplicitTLS`). A failed handshake (unknown CA,
  expired certificate) is then logged with the peer and the reason, which
  `create_server(ssl=...)` would swallow;
- every reply gets an RFC 3463 enhanced status code (RFC 2034 3), aiosmtpd's own included;
- command lines must end in CRLF with no bare CR (RFC 5321 2.3.8): an SMTP smuggling
  precondition, refused with 500 instead of being normalised;
- the command-line limit is per connection (aiosmtpd keeps it in a class-level dict that
  every EHLO grows), a second STARTTLS is refused, idle connections get `421 4.4.2`;
- exceptions never reach the wire: aiosmtpd would send the exception text;
- the DSN parameters of MAIL and RCPT (RFC 3461 4: RET, ENVID, NOTIFY, ORCPT) are taken out
  of the command, with their case, before aiosmtpd upper-cases and refuses them
  (`smtp.dsn_params`), and handed to the handler's hooks (`mail_dsn`, `rcpt_dsn`);
- connection caps shared by the three listeners (`mss.admission`): a global and a per-address
  cap, answered `421 4.7.0` and closed; connections that have not authenticated yet (no
  validated client certificate, no AUTH) have their own small cap per address, the oldest
  giving way to a newcomer, and a short life (`[limits] smtp_preauth_timeout_s`).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import re
import ssl
from collections.abc import Callable

from aiosmtpd.smtp import SMTP, TLSSetupException, syntax

from mss import metrics
from mss.admission import Admission, Ticket, close_soon
from mss.config import Settings
from mss.peers import format_peer
from mss.records import MailDsn, RcptDsn
from mss.services import SmtpServices
from mss.tls_protocol import server_tls_protocol
from smtp import auth as sasl
from smtp.data import DataLines
from smtp.dsn_params import DsnSyntaxError, parse_mail_params, parse_rcpt_params
from smtp.handler import SubmissionHandler

#: A MAIL or RCPT path `<local@domain>` with a dot-atom local part and a domain of letters,
#: digits and hyphens (RFC 5321 4.1.2 Dot-string, RFC 5322 3.2.3 atext), optionally after
#: spaces; the parameters follow the `>`. Anything else (quoted local parts, literals,
#: comments, `<>`) goes through the parser.
_PLAIN_PATH = re.compile(
    r" *<((?P<local>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)>"
)
log = logging.getLogger("mss.smtp")

__all__ = ["ImplicitTLS", "NoRelayService", "SubmissionSMTP", "start", "stop"]

IDENT = "MSS ESMTP"

# RFC 3463 codes for replies written without one (aiosmtpd's built-in replies).
_DEFAULT_ENHANCED = {
    211: "2.0.0",
    214: "2.0.0",
    220: "2.0.0",
    221: "2.0.0",
    235: "2.7.0",
    250: "2.0.0",
    252: "2.0.0",
    421: "4.7.0",
    450: "4.2.0",
    451: "4.3.0",
    452: "4.3.1",
    454: "4.7.0",
    500: "5.5.2",
    501: "5.5.4",
    502: "5.5.1",
    503: "5.5.1",
    504: "5.5.4",
    530: "5.7.0",
    534: "5.7.9",
    535: "5.7.8",
    538: "5.7.11",
    550: "5.0.0",
    552: "5.3.4",
    553: "5.1.3",
    554: "5.7.0",
    555: "5.5.4",
}
_HAS_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}(?: |$)")
# Replies that never carry one: AUTH challenges and the DATA go-ahead (RFC 2034 3).
_NO_ENHANCED = {334, 354}


class ProtocolViolation(Exception):
    """Raised from the read path; `reply` is sent and the session goes on."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class _StrictLineReader(asyncio.StreamReader):
    """A StreamReader whose command lines must end in CRLF and hold no other CR.

    aiosmtpd reads commands with `readuntil(b"\\n")` and strips any CR/LF mix at the end,
    so `MAIL FROM:<a@b>\\n` or `...\\r\\r\\n` would pass. DATA is read with
    `readuntil(b"\\r\\n")`: each piece goes through `data_lines` (`smtp.data`: bare LF made
    CRLF or noted, smuggling signatures noted) and the core refuses bare CR with 550 5.6.0.
    """

    _draining = False  # the rest of an over-long line that aiosmtpd is throwing away
    data_lines: DataLines | None = None  # set by `SubmissionSMTP.smtp_DATA` while DATA runs
    #: Set (synchronously) by a handler that ended the session with `421`: no further
    #: command is read, even one already buffered.
    ended_by_server = False

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        # Once the session closed the connection (421, too many unknown commands or failed
        # logins), aiosmtpd would still act on commands the client pipelined behind: end the
        # session as a lost connection does (found by tests/fuzz/fuzz_smtp.py).
        if self.ended_by_server or (
            self._transport is not None and self._transport.is_closing()  # type: ignore[attr-defined]
        ):
            raise asyncio.CancelledError
        try:
            line = await super().readuntil(separator)
        except asyncio.LimitOverrunError:
            self._draining = True
            raise
        if self._draining:
            self._draining = False
            return line
        if separator == b"\r\n" and self.data_lines is not None:
            return self.data_lines.feed(line)
        if separator == b"\n" and (not line.endswith(b"\r\n") or b"\r" in line[:-2]):
            raise ProtocolViolation(
                "500 5.5.2 Bare CR or LF in command line; lines must end with CRLF (RFC 5321 2.3.8)"
            )
        return line


def _refusal(reason: str) -> str:
    """The reply to a connection the caps turn away or close (RFC 5321 3.8: 421)."""
    return f"421 4.7.0 {reason}\r\n"


def _say_and_close(transport: asyncio.BaseTransport | None, reason: str) -> None:
    if transport is None or transport.is_closing():
        return
    try:
        transport.write(_refusal(reason).encode("ascii"))  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001, S110 - the connection is going away anyway
        pass
    close_soon(transport)  # aborted after a grace if the peer does not read (mss.admission)


class _Refused(asyncio.Protocol):
    """A connection over a cap: `421 4.7.0`, then closed (over TLS on `submissions`)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _say_and_close(transport, self.reason)


def _admit(admission: Admission | None, transport: asyncio.BaseTransport, listener: str) -> Ticket | str | None:
    """A slot for a new TCP connection (None: no caps), or the refusal, logged."""
    if admission is None:
        return None
    peername = transport.get_extra_info("peername")
    ticket = admission.admit(peername, lambda reason: _closing(transport, reason, peername, listener))
    if isinstance(ticket, str):
        log.warning("smtp connection refused peer=%s listener=%s reason=%s", format_peer(peername), listener, ticket)
    return ticket


def _closing(transport: asyncio.BaseTransport | None, reason: str, peername: object, listener: str) -> None:
    log.info("smtp connection closed peer=%s listener=%s reason=%s", format_peer(peername), listener, reason)
    _say_and_close(transport, reason)


def _closing_silently(transport: asyncio.BaseTransport, reason: str, peer: str) -> None:
    log.info("smtp connection closed peer=%s listener=submissions reason=%s", peer, reason)
    close_soon(transport)


class SubmissionSMTP(SMTP):
    """One connection of `submission` (STARTTLS required) or `submissions` (implicit TLS);
    `smtp.mta.MtaSMTP` (the `mta` listener) is one too, with AUTH taken away."""

    #: The DSN parameters of the MAIL / RCPT command being handled (RFC 3461 4), taken out
    #: of it by `smtp_MAIL` / `smtp_RCPT` before aiosmtpd parses the rest; the handler's
    #: hooks read them (`smtp.handler`).
    mail_dsn: MailDsn | None = None
    rcpt_dsn: RcptDsn | None = None

    @property
    def listener(self) -> str:
        """The listener's name in logs, metrics and the connection caps."""
        return "submissions" if self.implicit_tls else "submission"

    def __init__(
        self,
        handler: SubmissionHandler,
        *,
        settings: Settings,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        loop: asyncio.AbstractEventLoop | None = None,
        admission: Admission | None = None,
        ticket: Ticket | None = None,
    ) -> None:
        limits = settings.limits
        self.implicit_tls = implicit_tls
        #: The caps (`submission`: admitted here at connect; `submissions`: by `ImplicitTLS`
        #: before the handshake, which hands the slot over).
        self.admission = admission
        self.ticket = ticket
        super().__init__(
            handler,
            data_size_limit=limits.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,  # keeps 8BITMIME, hands the core the exact bytes
            hostname=getattr(settings, "hostname", None) or settings.domain,
            ident=IDENT,
            # Implicit TLS: the transport is already TLS, so no STARTTLS is offered, and AUTH
            # need not wait for one (aiosmtpd only counts STARTTLS as TLS).
            tls_context=None if implicit_tls else tls_context,
            require_starttls=not implicit_tls,
            auth_require_tls=not implicit_tls,
            timeout=limits.smtp_timeout_s,
            command_call_limit={
                "EHLO": 10,
                "HELO": 10,
                "NOOP": 50,
                "VRFY": 10,
                "HELP": 10,
                "AUTH": 5,
                "STARTTLS": 3,
                "*": 1_000_000,
            },
            loop=loop,
        )
        # RFC 5321 4.5.3.1.4: 512 octets. aiosmtpd keeps the per-command table on the class
        # and each EHLO adds to it; keep ours per connection and rebuild it on every EHLO.
        self.command_size_limit = limits.smtp_command_line
        self.command_size_limits = collections.defaultdict(lambda: self.command_size_limit)
        self._greeted = False
        self._bare_replies = False  # EHLO/HELO replies carry no enhanced code (RFC 2034 3)

    # -- connection life ----------------------------------------------------------------------

    def _cb_client_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reader.__class__ = _StrictLineReader
        # aiosmtpd reads with a 1001-octet stream limit; SASL lines may be 12288 (RFC 4954 4).
        # Other commands keep their own limits (command_size_limits), DATA lines its 998.
        reader._limit = max(reader._limit, sasl.MAX_RESPONSE_LINE + 2)  # type: ignore[attr-defined]
        super()._cb_client_connected(reader, writer)

    _counted = False  # in mss_sessions_open (STARTTLS calls connection_made a second time)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.ticket is None and self.admission is not None:
            ticket = _admit(self.admission, transport, self.listener)
            if isinstance(ticket, str):
                _say_and_close(transport, ticket)  # SMTP never starts: no session
                return
            self.ticket = ticket
        super().connection_made(transport)
        if self.ticket is not None:
            peername = transport.get_extra_info("peername")
            listener = self.listener
            self.ticket.on_evict = lambda reason: _closing(self.transport, reason, peername, listener)
        if not self._counted:
            self._counted = True
            metrics.session_opened(self.listener)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        assert self.session is not None
        if self.session.ssl is None:  # implicit TLS: aiosmtpd only fills it after STARTTLS
            self.session.ssl = {
                "ssl_object": ssl_object,
                "peercert": ssl_object.getpeercert(),
                "cipher": ssl_object.cipher(),
            }
        log.info(
            "tls up peer=%s version=%s cipher=%s implicit=%s",
            format_peer(self.session.peer),
            ssl_object.version(),
            (ssl_object.cipher() or ("?",))[0],
            self.implicit_tls,
        )
        self.event_handler.tls_established(self.session, ssl_object)
        if ssl_object.getpeercert(binary_form=True):
            # The TLS stack validated the client's chain against the trust anchors: counted
            # as authenticated from now on (mss.admission), whatever the directory says.
            self.authenticated()

    def authenticated(self) -> None:
        """The connection proved who it is (a validated certificate, a successful AUTH): it
        leaves the pre-authentication pool; over the per-address cap it is closed."""
        if self.ticket is None:
            return
        refused = self.ticket.promote()
        if refused is not None:
            self.ticket.evict(refused)  # its slot is given back in connection_lost

    def connection_lost(self, error: Exception | None) -> None:
        if self.ticket is not None:
            self.ticket.release()
        if self._counted:
            self._counted = False
            metrics.session_closed(self.listener)
        if self.session is None:
            return  # implicit TLS whose handshake failed, or refused by the caps: SMTP never started
        self.event_handler.connection_closed(self.session)
        super().connection_lost(error)

    def _timeout_cb(self) -> None:
        # RFC 5321 4.5.3.2: say why before closing.
        if self.transport is not None and not self.transport.is_closing():
            try:
                self.transport.write(f"421 4.4.2 {self.hostname} Error: timeout exceeded\r\n".encode())
            except Exception:  # noqa: BLE001, S110 - the connection is going away anyway
                pass
        # aiosmtpd's close() would wait for the peer to read what is buffered, for ever if it
        # never does (a client pipelining commands without reading replies): abort after a grace.
        log.info("smtp connection timeout peer=%s", format_peer(self.session.peer if self.session else None))
        close_soon(self.transport)

    # -- replies ------------------------------------------------------------------------------

    def _enhance(self, status: str) -> str:
        if len(status) < 4 or not status[:3].isdigit():
            return status
        code = int(status[:3])
        sep, text = status[3], status[4:]
        if not self._greeted:
            self._greeted = True  # the 220 greeting
            return status
        if self._bare_replies or code in _NO_ENHANCED or _HAS_ENHANCED.match(text):
            return status
        text = self._clearer_text(code, text)
        enhanced = _DEFAULT_ENHANCED.get(code, f"{str(code)[0]}.0.0")
        return f"{code}{sep}{enhanced} {text}"

    def _clearer_text(self, code: int, text: str) -> str:
        if code == 552:
            return f"Message size exceeds the fixed maximum of {self.data_size_limit} bytes"
        if text == "Command line too long":
            return f"Command line too long (at most {self.command_size_limit} octets, RFC 5321 4.5.3.1.4)"
        if text.startswith("Line too long"):
            return "Line too long: message lines are at most 998 octets (RFC 5321 4.5.3.1.6)"
        if text == "Error: send HELO first":
            return "Error: send EHLO first"
        # aiosmtpd echoes client text in these two: keep it printable ASCII (RFC 5321 4.2
        # textstring) and short (4.5.3.1.5: a reply line is at most 512 octets). Found by
        # tests/fuzz/fuzz_smtp.py: control characters, and 500-octet names, were sent back.
        if text.startswith('Error: command "') and text.endswith('" not recognized'):
            name = text[len('Error: command "') : -len('" not recognized')]
            shown = "".join(ch if " " < ch < "\x7f" else "?" for ch in name[:32])
            return f'Error: command "{shown}{"..." if len(name) > 32 else ""}" not recognized'
        if text.startswith("Could not VRFY "):
            return "Could not VRFY that address"
        return text

    async def push(self, status: str | bytes) -> None:
        if isinstance(status, str):
            status = self._enhance(status)
        await super().push(status)

    async def handle_exception(self, error: Exception) -> str:
        """Log, and answer without the exception's text (aiosmtpd would put it on the wire)."""
        peer = format_peer(self.session.peer if self.session else None)
        if isinstance(error, ProtocolViolation):
            log.info("protocol violation peer=%s reply=%r", peer, error.reply)
            return error.reply
        if isinstance(error, TLSSetupException):
            log.warning("tls handshake failed peer=%s via=STARTTLS reason=%s", peer, _tls_reason(error.__cause__))
            return "454 4.7.0 TLS handshake failed"
        log.exception("smtp session error peer=%s", peer)
        return "451 4.3.0 Internal error, try again later"

    # -- commands -----------------------------------------------------------------------------

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's MAIL/RCPT/VRFY address parsing, with its parser's own bugs contained.

        `email._header_value_parser` raises AttributeError on an unterminated domain literal
        (`MAIL FROM:<a@[>`) and aiosmtpd only catches HeaderParseError: it became `451` and a
        traceback in the log (found by tests/fuzz/fuzz_smtp.py). It is a malformed address.
        The same parser raises UnboundLocalError on `a@[ ` (a space after the literal's `[`,
        found by the same target later): whatever it raises means "malformed", never a 451.

        A path of the plain form (`_PLAIN_PATH`) is answered without it: aiosmtpd's version
        builds a `typing.Protocol` class on every call and the stdlib parser walks the tokens
        of an RFC 5322 address, about 3 % of the event loop's time under load for what one
        regular expression says; the result is the parser's, tests/smtp show it.
        """
        plain = _PLAIN_PATH.match(arg)
        rest = arg[plain.end() :] if plain is not None else ""
        if rest[:1] in (" ", "\t"):  # as the parser's folding white space: then every blank goes
            rest = rest.lstrip()
        if plain is not None and not rest.startswith("("):  # `<dot-atom@domain>`, nearly every path
            if self.local_part_limit and len(plain.group("local")) > self.local_part_limit:
                return None, None
            return plain.group(1), rest
        try:
            return super()._getaddr(arg)
        except Exception:  # noqa: BLE001 - the stdlib parser's bugs on hostile input, contained
            return None, None

    async def smtp_EHLO(self, hostname: str) -> None:
        self.command_size_limits.clear()
        self._bare_replies = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._bare_replies = False
            # RFC 4954 4: an AUTH line with a bearer token as initial response exceeds 512.
            self.command_size_limits["AUTH"] = sasl.MAX_RESPONSE_LINE
            # RFC 3461 5 (the DSN extension): MAIL lines may be 78 octets longer (RET, ENVID),
            # RCPT lines 500 longer (NOTIFY, ORCPT).
            self.command_size_limits["MAIL"] += 78
            self.command_size_limits["RCPT"] += 500

    def _take_dsn(self, keyword: str, arg: str | None) -> tuple[str | None, str | None]:
        """(the parameter string to parse for DSN, the command up to it) for `keyword`
        (``FROM:``/``TO:``), or (None, None) when there is nothing to take: no ESMTP session
        (parameters are then a syntax error aiosmtpd reports), no parameters, or a command
        aiosmtpd refuses anyway. The address is found with aiosmtpd's own parser, so the
        split is where aiosmtpd would make it; the parameters keep their case."""
        if arg is None or self.session is None or not self.session.extended_smtp:
            return None, None
        rest = self._strip_command_keyword(keyword, arg)
        if rest is None:
            return None, None
        address, params = self._getaddr(rest)
        if not address or not params or not params.strip():
            return None, None
        return params, keyword + rest[: len(rest) - len(params)].rstrip()

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        """aiosmtpd's MAIL, with RET and ENVID taken out first (RFC 3461 4.3, 4.4)."""
        self.mail_dsn = None
        params, head = self._take_dsn("FROM:", arg)
        if params is not None and head is not None:
            try:
                self.mail_dsn, remaining = parse_mail_params(params)
            except DsnSyntaxError as exc:
                await self.push(exc.reply)
                return
            arg = f"{head} {remaining}" if remaining else head
        await super().smtp_MAIL(arg)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        """aiosmtpd's RCPT, with NOTIFY and ORCPT taken out first (RFC 3461 4.1, 4.2)."""
        self.rcpt_dsn = None
        params, head = self._take_dsn("TO:", arg)
        if params is not None and head is not None:
            try:
                self.rcpt_dsn, remaining = parse_rcpt_params(params)
            except DsnSyntaxError as exc:
                await self.push(exc.reply)
                return
            arg = f"{head} {remaining}" if remaining else head
        await super().smtp_RCPT(arg)

    async def smtp_HELO(self, hostname: str) -> None:
        self._bare_replies = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._bare_replies = False

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, with its pieces (CRLF-ended) going through `smtp.data.DataLines`
        (bare LF normalised or noted, RFC 5321 2.3.8; the end of data stays <CRLF>.<CRLF>
        only). aiosmtpd's own line-length check counts a whole piece as one line, so it is
        lifted here and `DataLines` counts lines itself; `handle_DATA` reads the outcome."""
        reader = self._reader
        if not isinstance(reader, _StrictLineReader):  # pragma: no cover - set on connect
            await super().smtp_DATA(arg)
            return
        self.data_lines = DataLines(self.event_handler.settings.limits.bare_newline, self.line_length_limit)
        saved = reader._limit, self.line_length_limit  # type: ignore[attr-defined]
        reader.data_lines = self.data_lines
        reader._limit = self.line_length_limit = max(saved[0], (self.data_size_limit or 0) + 2)  # type: ignore[attr-defined]
        try:
            await super().smtp_DATA(arg)
        finally:
            reader.data_lines = self.data_lines = None
            reader._limit, self.line_length_limit = saved  # type: ignore[attr-defined]

    async def smtp_STARTTLS(self, arg: str) -> None:
        if self._tls_protocol is not None or self.implicit_tls:
            await self.push("503 5.5.1 TLS is already active")
            return
        await super().smtp_STARTTLS(arg)

    async def sasl_challenge(self, challenge: bytes = b"") -> str | None:
        """RFC 4954 4: send `334 <base64>` and return the client's response line."""
        await self.push(b"334 " + base64.b64encode(challenge))
        try:
            line = await self._reader.readline()
        except (ConnectionError, asyncio.IncompleteReadError):
            return None
        except ValueError as exc:  # StreamReader.readline: over the stream limit
            raise sasl.ResponseLineTooLong() from exc
        if not line:
            return None
        return line.decode("ascii", errors="replace").rstrip("\r\n")


def _tls_reason(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown"
    if isinstance(exc, ssl.SSLError):
        return f"{exc.reason or type(exc).__name__}: {exc.verify_message if isinstance(exc, ssl.SSLCertVerificationError) else exc.strerror or exc}"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "handshake timeout"
    return f"{type(exc).__name__}: {exc}"


class ImplicitTLS(asyncio.Protocol):
    """RFC 8314 implicit TLS in front of an aiosmtpd protocol.

    Installs a TLS layer on the TCP transport synchronously in `connection_made` (so that no
    byte of the ClientHello can reach anything else; with uvloop a `loop.start_tls` task
    loses that race), the way aiosmtpd does for STARTTLS. The SMTP protocol gets
    `connection_made` with the TLS transport only once the handshake succeeded, and a failed
    handshake is logged with the peer and the reason.
    """

    def __init__(
        self,
        factory: Callable[[Ticket | None], SMTP],
        context: ssl.SSLContext,
        handshake_timeout: float,
        admission: Admission | None = None,
    ) -> None:
        self.factory = factory
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.admission = admission

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        peer = format_peer(transport.get_extra_info("peername"))
        waiter = loop.create_future()
        # Admitted before the handshake (a handshake costs the server too); a refused client
        # still gets its 421 over TLS, which is all it can read.
        ticket = _admit(self.admission, transport, "submissions")
        if isinstance(ticket, Ticket):
            # Closed during the handshake: nothing can be said in clear inside TLS.
            ticket.on_evict = lambda reason: _closing_silently(transport, reason, peer)
        app: asyncio.Protocol = _Refused(ticket) if isinstance(ticket, str) else self.factory(ticket)
        tls = server_tls_protocol(loop, app, self.context, waiter, handshake_timeout=self.handshake_timeout)
        transport.set_protocol(tls)  # type: ignore[attr-defined]
        tls.connection_made(transport)

        def handshake_done(fut: asyncio.Future) -> None:
            if fut.cancelled():
                return
            exc = fut.exception()
            if exc is not None:
                if isinstance(ticket, Ticket):
                    ticket.release()
                log.warning("tls handshake failed peer=%s via=implicit reason=%s", peer, _tls_reason(exc))

        waiter.add_done_callback(handshake_done)


class NoRelayService(asyncio.Protocol):
    """The `mta` listener when mail between operators is off (`[relay] enabled = false`).

    RFC 5321 3.1: a server that offers no service greets with 554, then answers QUIT with
    221 and every other command with 503 until the client leaves. RFC 3463 3.8: 5.7.1,
    delivery not authorized.
    """

    MAX_LINE = 1024
    MAX_COMMANDS = 20

    def __init__(self, settings: Settings, admission: Admission | None = None) -> None:
        self.admission = admission
        self.ticket: Ticket | None = None
        self.hostname = getattr(settings, "hostname", None) or settings.domain
        self.timeout = settings.limits.smtp_timeout_s
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.commands = 0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        metrics.session_opened("mta")
        ticket = _admit(self.admission, transport, "mta")
        if isinstance(ticket, str):
            _say_and_close(transport, ticket)
            return
        self.ticket = ticket
        peer = format_peer(transport.get_extra_info("peername"))
        log.info("mta connection refused peer=%s reason=relay_not_enabled", peer)
        self._write(f"554 5.7.1 {self.hostname} inbound mail from other operators is not enabled on this server")
        self._timer = asyncio.get_running_loop().call_later(self.timeout, self._close)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, _, self.buffer = self.buffer.partition(b"\n")
            self.commands += 1
            if line.strip().upper() == b"QUIT":
                self._write("221 2.0.0 Bye")
                self._close()
                return
            if self.commands >= self.MAX_COMMANDS:
                self._write("421 4.7.0 Too many commands, closing")
                self._close()
                return
            self._write("503 5.5.1 No SMTP service here: mail from other operators is not enabled")
        if len(self.buffer) > self.MAX_LINE:
            self._write("500 5.5.2 Line too long")
            self._close()

    def _write(self, reply: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply.encode("ascii") + b"\r\n")

    def _close(self) -> None:
        close_soon(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        metrics.session_closed("mta")
        if self._timer is not None:
            self._timer.cancel()
        if self.ticket is not None:
            self.ticket.release()
        self.transport = None


async def start(core: SmtpServices) -> dict[str, asyncio.AbstractServer]:
    """Listen on `submission`, `submissions` and `mta`; returns the servers by role."""
    from smtp.mta import MtaHandler, MtaSMTP  # smtp.mta builds on this module

    loop = asyncio.get_running_loop()
    settings = core.settings
    host = settings.listen.host
    # aiosmtpd logs every command line at INFO on "mail.log"; ours ("mss.smtp") say what
    # matters. Leave it alone if the operator configured it.
    aiosmtpd_log = logging.getLogger("mail.log")
    if aiosmtpd_log.level == logging.NOTSET:
        aiosmtpd_log.setLevel(logging.WARNING)
    context = core.server_ssl_context()
    handler = SubmissionHandler(core)
    limits = settings.limits
    handshake_timeout = float(min(60, limits.smtp_timeout_s, limits.smtp_preauth_timeout_s))
    # One set of caps over the three listeners (mss.admission).
    admission = Admission(
        max_total=limits.smtp_max_connections,
        max_per_ip=limits.smtp_max_connections_per_ip,
        max_preauth_per_ip=limits.smtp_max_preauth_per_ip,
        preauth_timeout_s=limits.smtp_preauth_timeout_s,
        evict_after_s=limits.smtp_preauth_evict_after_s,
    )

    def submission() -> SMTP:
        return SubmissionSMTP(handler, settings=settings, tls_context=context, loop=loop, admission=admission)

    mta_handler = MtaHandler(core)

    def mta() -> asyncio.Protocol:
        if not settings.relay.enabled:
            return NoRelayService(settings, admission)
        return MtaSMTP(mta_handler, settings=settings, tls_context=context, loop=loop, admission=admission)

    def submissions_smtp(ticket: Ticket | None) -> SMTP:
        return SubmissionSMTP(
            handler, settings=settings, implicit_tls=True, loop=loop, admission=admission, ticket=ticket
        )

    servers: dict[str, asyncio.AbstractServer] = {}
    # Worker processes share each port (mss.workers): SO_REUSEPORT.
    shared = settings.worker_count > 1
    try:
        servers["submission"] = await loop.create_server(
            submission, host, settings.listen.submission, reuse_port=shared
        )
        servers["submissions"] = await loop.create_server(
            lambda: ImplicitTLS(submissions_smtp, context, handshake_timeout, admission),
            host,
            settings.listen.submissions,
            reuse_port=shared,
        )
        servers["mta"] = await loop.create_server(mta, host, settings.listen.mta, reuse_port=shared)
    except BaseException:
        await stop(servers)
        raise
    for role, server in servers.items():
        ports = sorted({s.getsockname()[1] for s in server.sockets})
        log.info("smtp %s listening on %s port %s", role, host, ",".join(map(str, ports)))
    return servers


async def stop(servers: dict[str, asyncio.AbstractServer]) -> None:
    """Stop accepting; connections in progress finish their current command."""
    for server in servers.values():
        server.close()
    for server in servers.values():
        await server.wait_closed()
