"""The outbound half of the trust space: one SMTP transaction with another operator.

`SmtpRelayClient` implements `mss.services.RelayTransport` with aiosmtplib. The relay worker
(`mss.relay`) hands it a route, the envelope and the exact bytes to send; it answers with one
reply per recipient, or raises `RelayUnavailable` when no recipient could be tried there.

Security is not negotiable between operators (MSSANTE.md, "Espace de confiance"):

- STARTTLS is required (RFC 3207); a peer that does not offer it is not talked to: the
  message waits for the next retry rather than cross the network in clear.
- TLS 1.2 at least; our client certificate is this operator's SERV certificate (`[tls] cert`
  and `key`: the same as the server's), so the peer authenticates us (mutual TLS).
- The peer's certificate must chain to the health trust anchors (`[tls] trust_anchors`, never
  the system CAs) and name the host of the route (RFC 6125 through OpenSSL's hostname check).
  Any failure of those checks is a temporary failure whose reason says which check failed.

Extensions: DSN parameters (RFC 3461 4) only when the peer's EHLO lists DSN (RFC 3461 5.2: if
it does not, the worker reports "relayed" itself); SIZE (RFC 1870) when offered; BODY=8BITMIME
(RFC 6152) when the content has 8-bit octets; SMTPUTF8 (RFC 6531) when an address needs it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Sequence

import aiosmtplib

from mss.config import Settings
from mss.records import MailDsn, RcptDsn
from mss.services import RelayRecipient, RelayReply, RelayRoute, RelayUnavailable, SendResult

log = logging.getLogger("smtp.relay")

_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}\b")


# -- RFC 3461 4 xtext, RFC 6533 3 utf-8-addr-xtext -------------------------------------------


def xtext(value: str) -> str:
    """RFC 3461 4: every octet outside "!".."~", and "+" and "=", as "+" and two upper-case
    hex digits. Non-ASCII text is encoded as its UTF-8 octets."""
    out = []
    for b in value.encode("utf-8"):
        if 0x21 <= b <= 0x7E and b not in (0x2B, 0x3D):
            out.append(chr(b))
        else:
            out.append(f"+{b:02X}")
    return "".join(out)


def utf8_addr_xtext(value: str) -> str:
    """RFC 6533 3 (ORCPT of type utf-8): QCHARs as they are, "+", "=", "\\", controls and
    non-ASCII characters as ``\\x{HEX}``."""
    out = []
    for ch in value:
        c = ord(ch)
        if 0x21 <= c <= 0x7E and ch not in "+=\\":
            out.append(ch)
        else:
            out.append(f"\\x{{{c:X}}}")
    return "".join(out)


def orcpt_param(orcpt: str, *, smtputf8: bool) -> str | None:
    """The ORCPT parameter for the decoded `type;address` (RFC 3461 4.2), None when it cannot
    be sent to this peer (a non-ASCII address to a peer without SMTPUTF8: ORCPT is advisory)."""
    addr_type, sep, address = orcpt.partition(";")
    if not sep or not addr_type:
        return None
    if address.isascii():
        return f"ORCPT={addr_type};{xtext(address)}"
    if not smtputf8:
        return None
    return f"ORCPT=utf-8;{utf8_addr_xtext(address)}"


def mail_options(dsn: MailDsn | None) -> list[str]:
    """RET and ENVID (RFC 3461 4.3, 4.4) of MAIL."""
    opts: list[str] = []
    if dsn is None:
        return opts
    if dsn.ret:
        opts.append(f"RET={dsn.ret}")
    if dsn.envid:
        opts.append(f"ENVID={xtext(dsn.envid)}")
    return opts


def rcpt_options(dsn: RcptDsn | None, *, smtputf8: bool) -> list[str]:
    """NOTIFY and ORCPT (RFC 3461 4.1, 4.2) of one RCPT; NEVER is the empty set."""
    opts: list[str] = []
    if dsn is None:
        return opts
    if dsn.notify is not None:
        order = ("SUCCESS", "FAILURE", "DELAY")
        values = [v for v in order if v in {n.upper() for n in dsn.notify}]
        opts.append("NOTIFY=" + (",".join(values) if values else "NEVER"))
    if dsn.orcpt:
        p = orcpt_param(dsn.orcpt, smtputf8=smtputf8)
        if p:
            opts.append(p)
    return opts


# -- TLS --------------------------------------------------------------------------------------


def client_context(settings: Settings) -> ssl.SSLContext:
    """Mutual TLS with another operator: our SERV certificate, the peer checked against the
    health trust anchors only, host name checked (PROTOCOL_TLS_CLIENT sets check_hostname and
    CERT_REQUIRED), TLS 1.2 or the configured floor if higher, no compression."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    floor = ssl.TLSVersion[settings.tls.minimum_version.replace(".", "_")]
    ctx.minimum_version = max(floor, ssl.TLSVersion.TLSv1_2)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(settings.path(settings.tls.cert), settings.path(settings.tls.key))
    ctx.load_verify_locations(cafile=str(settings.path(settings.tls.trust_anchors)))
    ctx.options |= ssl.OP_NO_COMPRESSION
    return ctx


def _tls_reason(exc: BaseException, host: str) -> str:
    """Which check of the handshake failed, in words an operator can act on."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        msg = exc.verify_message or str(exc)
        if "hostname" in msg.lower() or "ip address mismatch" in msg.lower():
            return f"TLS: certificate of {host} does not name it ({msg})"
        return f"TLS: certificate of {host} not trusted ({msg})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {host} failed ({exc.reason or exc})"
    return f"TLS handshake with {host} failed ({exc})"


def _reply(code: int, message: str) -> RelayReply:
    return RelayReply(code=int(code), text=" ".join(message.split()))


def _needs_8bit(content: bytes) -> bool:
    return any(b > 0x7F for b in content)


def _headers_8bit(content: bytes) -> bool:
    end = content.find(b"\r\n\r\n")
    head = content if end < 0 else content[:end]
    return _needs_8bit(head)


class SmtpRelayClient:
    """`RelayTransport` over SMTP with STARTTLS and our SERV certificate (see the module doc)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def helo_name(self) -> str:
        """What we say in EHLO: the host name clients are told of, else our domain. The peer
        sees our certificate anyway; the name goes into its `Received:` field."""
        return self.settings.autoconfig.hostname or self.settings.domain

    async def send(
        self,
        route: RelayRoute,
        *,
        mail_from: str,
        recipients: Sequence[RelayRecipient],
        content: bytes,
        dsn: MailDsn | None = None,
    ) -> SendResult:
        where = f"{route.host}:{route.port}"
        r = self.settings.relay
        try:
            context = await asyncio.to_thread(client_context, self.settings)
        except (OSError, ssl.SSLError) as exc:
            raise RelayUnavailable(f"cannot load our TLS certificate or trust anchors: {exc}") from exc
        client = aiosmtplib.SMTP(
            hostname=route.host,
            port=route.port,
            local_hostname=self.helo_name,
            timeout=r.command_timeout_s,
            start_tls=False,  # done below, required, with our context
            tls_context=context,
        )
        try:
            return await self._session(client, route, where, mail_from, recipients, content, dsn)
        finally:
            client.close()

    async def _session(
        self,
        client: aiosmtplib.SMTP,
        route: RelayRoute,
        where: str,
        mail_from: str,
        recipients: Sequence[RelayRecipient],
        content: bytes,
        dsn: MailDsn | None,
    ) -> SendResult:
        r = self.settings.relay
        # -- connection, greeting, EHLO, STARTTLS, EHLO again (RFC 3207 4.2) --
        try:
            await client.connect(timeout=r.connect_timeout_s)
        except aiosmtplib.SMTPConnectResponseError as exc:
            raise RelayUnavailable(
                f"{where} greeted with {exc.code} {exc.message}", reply=_reply(exc.code, exc.message)
            ) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise RelayUnavailable(f"cannot connect to {where}: {exc}") from exc
        try:
            await client.ehlo(hostname=self.helo_name)
        except aiosmtplib.SMTPResponseException as exc:
            raise RelayUnavailable(
                f"{where} refused EHLO: {exc.code} {exc.message}", reply=_reply(exc.code, exc.message)
            ) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise RelayUnavailable(f"{where} lost during EHLO: {exc}") from exc
        if not client.supports_extension("starttls"):
            log.warning("relay to %s: peer offers no STARTTLS, not sending in clear", where)
            raise RelayUnavailable(f"{where}: peer offers no STARTTLS")
        try:
            await client.starttls(server_hostname=route.host, timeout=r.connect_timeout_s)
        except aiosmtplib.SMTPResponseException as exc:
            raise RelayUnavailable(
                f"{where} refused STARTTLS: {exc.code} {exc.message}", reply=_reply(exc.code, exc.message)
            ) from exc
        except ssl.SSLError as exc:
            reason = _tls_reason(exc, route.host)
            log.warning("relay to %s: %s", where, reason)
            raise RelayUnavailable(reason) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            cause = exc.__cause__ or exc.__context__
            reason = (
                _tls_reason(cause, route.host) if isinstance(cause, ssl.SSLError) else f"TLS with {where} failed: {exc}"
            )
            log.warning("relay to %s: %s", where, reason)
            raise RelayUnavailable(reason) from exc
        try:
            await client.ehlo(hostname=self.helo_name)
        except aiosmtplib.SMTPResponseException as exc:
            raise RelayUnavailable(
                f"{where} refused EHLO after STARTTLS: {exc.code} {exc.message}", reply=_reply(exc.code, exc.message)
            ) from exc
        except ssl.SSLError as exc:
            # TLS 1.3: a peer refusing our certificate says so only after the handshake.
            reason = _tls_reason(exc, route.host)
            log.warning("relay to %s: %s", where, reason)
            raise RelayUnavailable(reason) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise RelayUnavailable(
                f"TLS with {where} ended after the handshake (our certificate refused?): {exc}"
            ) from exc

        # -- what this peer offers (after TLS only: RFC 3207 4.2) --
        offers_dsn = client.supports_extension("dsn")
        offers_utf8 = client.supports_extension("smtputf8")
        offers_8bit = client.supports_extension("8bitmime")
        options: list[str] = []
        if client.supports_extension("size"):
            limit = client.esmtp_extensions.get("size", "").strip()
            if limit.isdigit() and int(limit) and len(content) > int(limit):
                reply = RelayReply(552, f"5.3.4 message of {len(content)} octets over {where}'s limit of {limit}")
                raise RelayUnavailable(str(reply), permanent=True, reply=reply)
            options.append(f"SIZE={len(content)}")
        if _needs_8bit(content):
            if not offers_8bit and not offers_utf8:
                # RFC 6152 3: 8-bit content may not be sent to a peer without 8BITMIME, and
                # a signed (DKIM, S/MIME) message cannot be downgraded here.
                reply = RelayReply(554, f"5.6.3 {where} does not accept 8-bit content (no 8BITMIME)")
                raise RelayUnavailable(str(reply), permanent=True, reply=reply)
            if offers_8bit:
                options.append("BODY=8BITMIME")
        need_utf8 = not mail_from.isascii() or any(not rc.address.isascii() for rc in recipients)
        if need_utf8 and not offers_utf8 and not mail_from.isascii():
            reply = RelayReply(553, f"5.6.7 {where} does not accept non-ASCII addresses (no SMTPUTF8)")
            raise RelayUnavailable(str(reply), permanent=True, reply=reply)
        if offers_utf8 and (need_utf8 or _headers_8bit(content)):
            options.append("SMTPUTF8")  # RFC 6531 3.4
        if offers_dsn:
            options += mail_options(dsn)
        encoding = "utf-8" if "SMTPUTF8" in options else "ascii"

        # -- MAIL --
        try:
            await client.mail(mail_from, options=options, encoding=encoding)
        except aiosmtplib.SMTPSenderRefused as exc:
            reply = _reply(exc.code, exc.message)
            raise RelayUnavailable(f"{where} refused MAIL: {reply}", permanent=reply.permanent, reply=reply) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise RelayUnavailable(f"{where} lost during MAIL: {exc}") from exc

        # -- RCPT, one reply per recipient (RFC 5321 3.3) --
        replies: dict[str, RelayReply] = {}
        accepted: list[str] = []
        for rc in recipients:
            if not rc.address.isascii() and not offers_utf8:
                replies[rc.address] = RelayReply(553, "5.6.7 non-ASCII address and the peer offers no SMTPUTF8")
                continue
            ropts = rcpt_options(rc.dsn, smtputf8=offers_utf8) if offers_dsn else []
            try:
                resp = await client.rcpt(rc.address, options=ropts, encoding=encoding)
            except aiosmtplib.SMTPRecipientRefused as exc:
                replies[rc.address] = _reply(exc.code, exc.message)
                continue
            except (aiosmtplib.SMTPException, OSError) as exc:
                # Nothing is delivered before DATA ends: the whole message can wait.
                raise RelayUnavailable(f"{where} lost during RCPT: {exc}") from exc
            replies[rc.address] = _reply(resp.code, resp.message)
            accepted.append(rc.address)

        # -- DATA: its one reply is every accepted recipient's (RFC 5321 4.2.5 without LMTP) --
        if accepted:
            try:
                resp = await client.data(content, timeout=r.command_timeout_s)
                data_reply = _reply(resp.code, resp.message)
            except aiosmtplib.SMTPDataError as exc:
                data_reply = _reply(exc.code, exc.message)
            except (aiosmtplib.SMTPException, OSError) as exc:
                # RFC 5321 6.1: without the final reply the message is not delivered; it is
                # sent again (a rare duplicate rather than a loss).
                data_reply = RelayReply(451, f"4.4.2 connection with {where} lost during DATA: {exc}")
            for address in accepted:
                replies[address] = data_reply
        try:
            if client.is_connected:
                await client.quit(timeout=min(r.command_timeout_s, 10))
        except (aiosmtplib.SMTPException, OSError):
            pass  # the outcome is known already
        return SendResult(replies=replies, peer_offers_dsn=offers_dsn, remote_host=route.host)


def enhanced_status(reply: RelayReply) -> str | None:
    """The RFC 3463 enhanced code at the start of a reply's text, when the peer sent one."""
    m = _ENHANCED.match(reply.text)
    return m.group(0) if m else None
