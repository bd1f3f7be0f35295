"""Who a client is: the credential checkers, and each connection's authentication.

- `Authenticator` checks one kind of credential at a time (a TLS client certificate, an
  e-CPS token bound to it, a mailbox app password next to it) and returns a `Principal` or
  raises `AuthenticationFailed` with a precise `reason` for the operator and a generic public
  text: the wire never tells an attacker which check failed (DESIGN.md, Identity). It does
  not log.
- `ConnectionAuthentication` (`mss.services.Authentication`) is one connection's side: the
  SASL exchanges of `mss.sasl` run on it, it counts refused attempts across them (one
  `MAX_AUTH_FAILURES` for SMTP and IMAP) and writes the one log line of every result.
- `AuthThrottle` counts refused password attempts across connections, nodes and protocols
  (SMTP and IMAP share its database counters), with an exponential back-off.
- `CoreCredentials` (`mss.services.Credentials`) hands each new connection its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import math
import unicodedata
from collections.abc import Iterable
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from sqlalchemy.ext.asyncio import async_sessionmaker

from annuaire.ids import idna_domain
from annuaire.local import LocalDirectory
from annuaire.whitelist import in_trust_space
from crypto.identity import Identity, IdentityError, check_ps_id, identity_from_certificate
from crypto.tokens import TokenRejected, TokenVerifier
from crypto.validate import CertificateRejected, CertificateValidator
from mss import metrics, sasl
from mss.admission import source_network
from mss.audit import AuditTrail
from mss.errors import AuthenticationFailed, AuthenticationUnavailable
from mss.password_cache import VerifiedPasswords
from mss.principal import Principal
from mss.services import ClientConnection, Failure, FailureKind, SaslExchange, Success
from mss.throttle import AUTH_ADDRESS_PREFIX, AUTH_MAILBOX_PREFIX, Throttle

log = logging.getLogger("mss.auth")


#: The one text the wire gets for any certificate problem (DESIGN.md: generic on the wire).
CERTIFICATE_REFUSED = "client certificate not accepted"
#: The wire text of every temporary failure (database, directory or JWKS unreachable).
TEMPORARY_FAILURE = "Temporary authentication failure, try again later"
#: Wire texts of the `mta` listener's refusals of another operator's server (RFC 5321 3.1
#: "clear reply"): what kind of certificate is wanted, never which validation check failed.
SERV_REQUIRED = "a SERV certificate of the health PKI is required on this port (operators of the trust space)"
NOT_SERV = "this port is for the servers of other operators: a SERV certificate is required"
NOT_WHITELISTED = "the certificate's domain is not on the trust-space whitelist"
OWN_DOMAIN = "the certificate names a domain of this operator, not of a peer"


class Authenticator:
    """The credential checkers (`CredentialChecker`) over the trust anchors, the directory,
    the app-password store and the token verifier.

    `peer` is accepted for the callers' convenience and not used: the checkers do not log,
    `ConnectionAuthentication` does, once per result.
    """

    def __init__(
        self,
        validator: CertificateValidator,
        sessions: async_sessionmaker,
        tokens: TokenVerifier | None = None,
        *,
        local_domains: Iterable[str] = (),
        password_cache: VerifiedPasswords | None = None,
    ) -> None:
        self.validator = validator
        self.sessions = sessions
        self.tokens = tokens
        #: Verified app passwords, for a TTL (`mss.password_cache`); None: every login pays Argon2id.
        self.password_cache = password_cache
        #: This operator's own mail domains: a certificate naming one is never a peer's.
        self.local_domains = frozenset(idna_domain(d) for d in local_domains if d)

    def _validated(self, der: bytes) -> tuple[x509.Certificate, Identity]:
        """Chain, usage, validity and revocation, then the identity the certificate names:
        the checks every certificate credential starts with (client and SERV alike)."""
        try:
            # "now" (no `at`): the validator may answer from its memory of accepted leaves.
            cert = self.validator.validate(der, usage="client")
            return cert, identity_from_certificate(cert)
        except CertificateRejected as exc:
            raise AuthenticationFailed(exc.reason, CERTIFICATE_REFUSED, detail=exc.detail) from exc
        except IdentityError as exc:
            raise AuthenticationFailed(f"identity:{exc.reason}", CERTIFICATE_REFUSED) from exc

    def _client_identity(self, der: bytes | None) -> tuple[x509.Certificate, Identity]:
        """Validate a client certificate for client authentication and read its identity.

        SERV certificates are refused here: they identify another operator's server on the
        MTA port, never a person or software acting for a mailbox.
        """
        if not der:
            raise AuthenticationFailed("no_certificate", "a health-PKI client certificate is required")
        cert, identity = self._validated(der)
        if identity.kind == "SERV":
            raise AuthenticationFailed("serv_certificate", CERTIFICATE_REFUSED, detail=f"id={identity.identifier}")
        return cert, identity

    async def from_certificate(self, der: bytes | None, *, peer: str = "?") -> Principal:
        """The principal of a professional card (PER mailboxes and the ORG mailboxes they
        belong to) or of a structure certificate (its ORG and APP mailboxes)."""
        cert, identity = self._client_identity(der)
        async with self.sessions() as s:
            directory = LocalDirectory(s)
            if identity.kind == "PS":
                entries = await directory.for_idnat(identity.identifier)
                primary = next((e.address for e in entries if e.type == "PER"), None)
                name = " ".join(p for p in (identity.given_name, identity.surname) if p) or identity.common_name
            else:
                entries = [e for e in await directory.for_structure(identity.identifier) if e.type in ("ORG", "APP")]
                primary = next((e.address for e in entries if e.type == "APP"), None)
                name = identity.organization or identity.common_name
        if not entries:
            raise AuthenticationFailed(
                "not_in_directory", CERTIFICATE_REFUSED, detail=f"kind={identity.kind} id={identity.identifier}"
            )
        fp = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
        return Principal(
            kind=identity.kind,
            identifier=identity.identifier,
            display_name=name,
            mailboxes=frozenset(e.address for e in entries),
            sent_copy=frozenset(e.address for e in entries if e.sent_copy),
            primary=primary or entries[0].address,
            cert_sha256=fp,
        )

    # -- another operator's server (the `mta` listener) -------------------------------------

    async def from_server_certificate(self, der: bytes | None, *, peer: str = "?") -> Principal:
        """The principal of another operator of the trust space: its SERV certificate (the
        client certificate of its MTA, RFC 3207 mutual TLS) validated against the trust
        anchors, revocation included; the mail domains it names (SAN dNSNames, else the CN)
        that are on the trust-space whitelist (`annuaire.whitelist`) are the domains it may
        send from (`Principal.domains`).

        Refusal reasons (log only): the validator's (`untrusted`, `expired`, `revoked`,
        `crl_stale`, ...), `no_certificate`, `not_serv` (a PS card or an ORG certificate:
        people and software submit on the submission ports), `own_domain` (a certificate for
        this operator's domain is not a peer's, whoever holds it), `domain_not_whitelisted`.
        """
        if not der:
            raise AuthenticationFailed("no_certificate", SERV_REQUIRED)
        cert, identity = self._validated(der)
        if identity.kind != "SERV":
            raise AuthenticationFailed("not_serv", NOT_SERV, detail=f"kind={identity.kind} id={identity.identifier}")
        names = _dns_names(cert)
        who = f"id={identity.identifier} names={','.join(names) or '-'}"
        own = [n for n in names if n in self.local_domains]
        if own:
            raise AuthenticationFailed("own_domain", OWN_DOMAIN, detail=who)
        async with self.sessions() as s:
            domains = frozenset([n for n in names if await in_trust_space(s, n)])
        if not domains:
            raise AuthenticationFailed("domain_not_whitelisted", NOT_WHITELISTED, detail=who)
        return Principal(
            kind="SERV",
            identifier=identity.identifier,
            display_name=identity.organization or identity.common_name,
            mailboxes=frozenset(),
            cert_sha256=hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(),
            domains=domains,
        )

    # -- OAUTHBEARER / XOAUTH2: an e-CPS token bound to the connection's certificate -------------

    async def from_token(
        self,
        token: str,
        cert_der: bytes | None,
        authzid: str | None = None,
        *,
        peer: str = "?",
        mechanism: str = "OAUTHBEARER",
    ) -> Principal:
        """The professional named by an access token, on a connection whose client certificate
        (typically the ORG certificate of practice software) validates and matches the token's
        `cnf` `x5t#S256` (RFC 8705). `authzid`, when given, narrows to one of their mailboxes.

        A JWKS that cannot be fetched is `AuthenticationUnavailable` (try later), not a refusal.
        """
        if self.tokens is None:
            raise AuthenticationFailed("tokens_not_configured", "token authentication is not available")
        cert, holder = self._client_identity(cert_der)
        via = f"via={holder.kind}:{holder.identifier}"
        try:
            claims = await asyncio.to_thread(self.tokens.verify, token, cert)
        except TokenRejected as exc:
            if exc.reason == "jwks_unavailable":
                raise AuthenticationUnavailable("token:jwks_unavailable", detail=exc.detail) from exc
            raise AuthenticationFailed(f"token:{exc.reason}", "invalid token", detail=f"{via} {exc.detail}") from exc
        idnat = self.tokens.idnat(claims) or ""
        try:
            check_ps_id(idnat)
        except IdentityError as exc:
            raise AuthenticationFailed("token:bad_subject", "invalid token", detail=f"{via} {exc.reason}") from exc
        async with self.sessions() as s:
            entries = await LocalDirectory(s).for_idnat(idnat)
        if not entries:
            raise AuthenticationFailed("not_in_directory", "invalid token", detail=f"kind=PS id={idnat} {via}")
        primary = next((e.address for e in entries if e.type == "PER"), None)
        principal = Principal(
            kind="PS",
            identifier=idnat,
            display_name=str(claims.get("name") or idnat),
            mailboxes=frozenset(e.address for e in entries),
            sent_copy=frozenset(e.address for e in entries if e.sent_copy),
            primary=primary or entries[0].address,
            cert_sha256=hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(),
            mechanism=mechanism,
        )
        return self._narrow(principal, authzid)

    # -- PLAIN / LOGIN: certificate + per-mailbox app password ----------------------------------

    async def from_app_password(
        self, username: str, password: str, cert_der: bytes | None, *, peer: str = "?", mechanism: str = "PLAIN"
    ) -> Principal:
        """The certificate's principal narrowed to mailbox `username`, when the certificate
        validates, its principal is entitled to that mailbox, and `password` is one of the
        mailbox's app passwords (Argon2id)."""
        from mss.credentials import check_app_password

        principal = await self.from_certificate(cert_der, peer=peer)
        address = (username or "").strip().lower()
        who = f"id={principal.identifier} mailbox={address!r}"
        if not principal.may_use(address):
            raise AuthenticationFailed("app_password:not_entitled", "invalid credentials", detail=who)
        thumbprint = hashlib.sha256(cert_der or b"").digest()
        if not await check_app_password(
            self.sessions, address, password, thumbprint=thumbprint, cache=self.password_cache
        ):
            raise AuthenticationFailed("app_password:wrong", "invalid credentials", detail=who)
        return dataclasses.replace(principal.restricted_to(address), mechanism=mechanism)

    @staticmethod
    def _narrow(principal: Principal, authzid: str | None) -> Principal:
        if not authzid:
            return principal
        try:
            return principal.restricted_to(authzid)
        except PermissionError as exc:
            raise AuthenticationFailed(
                "authzid_not_entitled",
                "not authorized for that mailbox",
                detail=f"id={principal.identifier} authzid={authzid!r}",
            ) from exc


def _dns_names(cert: x509.Certificate) -> list[str]:
    """The DNS names a server certificate speaks for, IDNA lower-case: its SAN dNSNames
    (RFC 6125 6.4.4: when there are any the CN is not looked at), else its CN."""
    try:
        raw = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
    except x509.ExtensionNotFound:
        raw = []
    if not raw:
        raw = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    names: list[str] = []
    for name in raw:
        try:
            d = idna_domain(name)
        except Exception:  # noqa: BLE001, S112 - a name idna refuses names no mail domain
            continue
        if d and not d.startswith("*") and d not in names:
            names.append(d)
    return names


class CredentialChecker(Protocol):
    """The checkers a connection's authentication calls (`Authenticator`; a fake in the
    IMAP unit tests). Each returns the principal, raises `AuthenticationFailed` (refused) or
    `AuthenticationUnavailable`; any other exception is taken as "unavailable" too."""

    async def from_certificate(self, der: bytes | None, *, peer: str = "?") -> Principal: ...

    async def from_token(
        self,
        token: str,
        cert_der: bytes | None,
        authzid: str | None = None,
        *,
        peer: str = "?",
        mechanism: str = "OAUTHBEARER",
    ) -> Principal: ...

    async def from_app_password(
        self, username: str, password: str, cert_der: bytes | None, *, peer: str = "?", mechanism: str = "PLAIN"
    ) -> Principal: ...

    async def from_server_certificate(self, der: bytes | None, *, peer: str = "?") -> Principal: ...


# -- across connections -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ThrottleKeys:
    """The counters one attempt is reserved under (`mss.throttle` keys)."""

    #: `auth-address:<source>`: every mailbox guessed from this address or IPv6 /64.
    address: str
    #: `auth-mailbox:<mailbox>` (from anywhere) and `auth-mailbox:<mailbox>|<source>`.
    mailbox: str | None = None
    pair: str | None = None

    @property
    def all(self) -> list[str]:
        return [k for k in (self.address, self.mailbox, self.pair) if k]

    @property
    def of_mailbox(self) -> list[str]:
        return [k for k in (self.mailbox, self.pair) if k]


class AuthThrottle:
    """Refused authentication attempts counted across connections, nodes and protocols.

    Issue 13: three failures closed a connection and the next one started afresh (375
    password guesses in 3 minutes from one address). Now every app-password attempt (IMAP
    LOGIN, SASL PLAIN and LOGIN, on SMTP and IMAP alike) is reserved first under three
    database counters (`mss.throttle.Throttle`, whose allowances come from `[abuse]`):

    - the (mailbox, source) pair: few free failures (`auth_free_failures`), then a back-off
      doubling from 1 s up to `auth_max_backoff_s`; a success resets it;
    - the mailbox from anywhere: many free failures and a short cap
      (`auth_mailbox_free_failures`, `auth_mailbox_max_backoff_s`), so that an attacker who
      knows an address cannot keep its owner out for long (OWASP, Authentication Cheat Sheet);
    - the source address (IPv4 address or IPv6 /64): `auth_address_free_failures`.

    The mailbox counters only keep failures where the password was actually compared (a
    refused certificate or a mailbox the certificate is not entitled to tests no password,
    so nobody can run a victim's counters up without a certificate entitled to it).
    Bearer tokens are reserved under the address counter only (a token names no mailbox
    before it is verified). Certificate-only authentication (EXTERNAL, SMTP's implicit
    check) is never throttled: a private key cannot be guessed, the TLS stack already
    validated the chain, and that keeps the legitimate user behind a guesser's address in.
    """

    def __init__(self, throttle: Throttle) -> None:
        self.throttle = throttle

    @staticmethod
    def keys(peer: str, mailbox: str | None = None) -> ThrottleKeys:
        source = source_network(peer)
        address = f"{AUTH_ADDRESS_PREFIX}{source}"
        if mailbox is None:
            return ThrottleKeys(address)
        mailbox = mailbox.strip().lower()
        return ThrottleKeys(address, f"{AUTH_MAILBOX_PREFIX}{mailbox}", f"{AUTH_MAILBOX_PREFIX}{mailbox}|{source}")

    async def attempt(self, keys: ThrottleKeys) -> float:
        """0: go on (the attempt counts as a failure until `succeeded`/`refund`), else the
        seconds to wait. Raises when the database is unreachable."""
        return await self.throttle.attempt(keys.all)

    async def succeeded(self, keys: ThrottleKeys) -> None:
        """Give the reservation back, and reset the (mailbox, source) pair."""
        await self.throttle.succeeded(keys.all, reset=[keys.pair] if keys.pair else ())

    async def refund(self, keys: list[str]) -> None:
        """Give the reservation back under `keys` (nothing of theirs was tested)."""
        if keys:
            await self.throttle.succeeded(keys)


# -- one connection ---------------------------------------------------------------------------

#: Longest client-influenced value written into a log line (a 12 KB SASL line may not flood it).
_LOG_VALUE_MAX = 256


def log_safe(value: object) -> str:
    """`value` for a log line: control characters (CR, LF, NUL, ...; Unicode line and
    paragraph separators too) escaped as `\\xNN` / `\\uNNNN`, and long values cut, so that a
    client can neither forge a log line nor flood one. Safe without any escaping formatter."""
    text = str(value)
    if len(text) > _LOG_VALUE_MAX:
        text = f"{text[:_LOG_VALUE_MAX]}...(+{len(text) - _LOG_VALUE_MAX})"
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or ch == " ":
            out.append(ch)
        elif unicodedata.category(ch) == "Zs":  # no-break and other spaces: harmless
            out.append(" ")
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


class ConnectionAuthentication:
    """`mss.services.Authentication` for one connection, and the `mss.sasl.ExchangeHost` its
    exchanges run on.

    The certificate is checked once per connection and the result kept (SMTP starts the check
    when TLS comes up, RFC 3207; AUTH EXTERNAL and later MAIL reuse it); an unavailable result
    is not kept, so the next attempt asks again.
    """

    def __init__(
        self,
        checker: CredentialChecker,
        client: ClientConnection,
        *,
        mechanisms: tuple[str, ...] = sasl.MECHANISMS,
        max_failures: int = sasl.MAX_AUTH_FAILURES,
        throttle: AuthThrottle | None = None,
        audit: AuditTrail | None = None,
    ) -> None:
        self.client = client
        self._checker = checker
        self._throttle = throttle
        self._audit = audit  # every result is also an audit event (mss.audit)
        self._mechanisms = mechanisms
        self._max_failures = max_failures
        self._failures = 0
        self._certificate_lock = asyncio.Lock()
        self._certificate_result: Principal | AuthenticationFailed | None = None

    @property
    def mechanisms(self) -> tuple[str, ...]:
        return self._mechanisms

    @property
    def failures(self) -> int:
        return self._failures

    def exchange(self, mechanism: str) -> SaslExchange:
        return sasl.exchange(self, mechanism, self._mechanisms)

    # -- Authentication -------------------------------------------------------------------------

    async def certificate(self) -> Success | Failure:
        try:
            result = await self._certificate_principal()
        except Exception as exc:  # noqa: BLE001 - the directory or the CRLs are unreachable
            return self._unavailable(exc, mechanism=None)
        if isinstance(result, AuthenticationFailed):
            return self._refused(result, mechanism=None, counted=False)
        return self._success(result, mechanism=None)

    async def operator(self) -> Success | Failure:
        """Another operator's server on the `mta` listener: its SERV certificate's principal
        (`Authenticator.from_server_certificate`), logged once as `operator ok|refused|
        unavailable` and audited. Not counted: a certificate cannot be guessed, and the
        connection has nothing else to try (no AUTH there)."""
        try:
            principal = await self._checker.from_server_certificate(self.client.certificate, peer=self.client.peer)
        except AuthenticationFailed as exc:
            return self._conclude(
                "refused",
                exc.public,
                mechanism=None,
                reason=exc.reason,
                detail=exc.detail,
                counted=False,
                event="operator",
            )
        except Exception as exc:  # noqa: BLE001 - the whitelist or the CRLs are unreachable
            return self._unavailable(exc, mechanism=None, event="operator")
        self._log(
            logging.INFO,
            "ok",
            None,
            event="operator",
            kind=principal.kind,
            id=principal.identifier,
            domains=",".join(sorted(principal.domains)),
            cert=(principal.cert_sha256 or "-")[:16],
        )
        return Success(principal)

    async def password(self, username: str, password: str, *, mechanism: str = "LOGIN") -> Success | Failure:
        # The certificate and the entitlement first, before any shared counter is touched: an
        # attempt without a valid certificate entitled to the mailbox compares no password, so
        # anonymous guessers never fill the `auth-address:` counter of the users behind their
        # address (they still count toward this connection's MAX_AUTH_FAILURES).
        try:
            holder = await self._certificate_principal()
        except Exception as exc:  # noqa: BLE001 - the directory or the CRLs are unreachable
            return self._unavailable(exc, mechanism=mechanism)
        if isinstance(holder, AuthenticationFailed):
            return self._refused(holder, mechanism=mechanism)
        address = (username or "").strip().lower()
        if not holder.may_use(address):
            who = f"id={holder.identifier} mailbox={address!r}"
            return self._refused(
                AuthenticationFailed("app_password:not_entitled", "invalid credentials", detail=who),
                mechanism=mechanism,
            )
        keys = AuthThrottle.keys(self.client.peer, username)
        held = await self._reserve(keys, mechanism=mechanism)
        if held is not None:
            return held
        try:
            principal = await self._checker.from_app_password(
                username, password, self.client.certificate, peer=self.client.peer, mechanism=mechanism
            )
        except AuthenticationFailed as exc:
            if exc.reason != "app_password:wrong":  # no password compared: nothing counted
                await self._give_back(keys.all)
            return self._refused(exc, mechanism=mechanism)
        except Exception as exc:  # noqa: BLE001 - the database is unreachable: not the client's fault
            await self._give_back(keys.all)
            return self._unavailable(exc, mechanism=mechanism)
        await self._give_back(keys.all, succeeded=keys)
        return self._success(principal, mechanism=mechanism)

    # -- ExchangeHost ---------------------------------------------------------------------------

    async def external(self, authzid: str | None, *, mechanism: str) -> Success | Failure:
        try:
            result = await self._certificate_principal()
        except Exception as exc:  # noqa: BLE001
            return self._unavailable(exc, mechanism=mechanism)
        if isinstance(result, AuthenticationFailed):
            return self._refused(result, mechanism=mechanism)
        if not authzid:
            return self._success(result, mechanism=mechanism)
        try:
            narrowed = result.restricted_to(authzid)
        except PermissionError:
            # RFC 4422 3.4.1: the authzid is an authorization request, refused on its own.
            return self._conclude(
                "unauthorized",
                "not authorized to act as this mailbox",
                mechanism=mechanism,
                reason="authzid_not_entitled",
                detail=f"authzid={authzid!r}",
                principal=result,
            )
        return self._success(narrowed, mechanism=mechanism)

    async def token(self, credentials: sasl.BearerCredentials, *, mechanism: str) -> Success | Failure:
        if self.client.certificate is None:  # refused before any shared counter is touched
            return self._refused(
                AuthenticationFailed("no_certificate", "a health-PKI client certificate is required"),
                mechanism=mechanism,
            )
        keys = AuthThrottle.keys(self.client.peer)
        held = await self._reserve(keys, mechanism=mechanism)
        if held is not None:
            return held
        try:
            principal = await self._checker.from_token(
                credentials.token,
                self.client.certificate,
                credentials.authzid,
                peer=self.client.peer,
                mechanism=mechanism,
            )
        except AuthenticationFailed as exc:
            # Counted only when the token itself was rejected (signature, expiry, audience,
            # binding: `TokenRejected`); a refused certificate or an unknown subject is not a guess.
            if not exc.reason.startswith("token:") or exc.reason == "token:bad_subject":
                await self._give_back(keys.all)
            return self._refused(exc, mechanism=mechanism)
        except Exception as exc:  # noqa: BLE001 - JWKS or directory unreachable
            await self._give_back(keys.all)
            return self._unavailable(exc, mechanism=mechanism)
        await self._give_back(keys.all)
        return self._success(principal, mechanism=mechanism)

    def rejected(self, error: sasl.SaslError, *, mechanism: str) -> Failure:
        return self._conclude(error.kind, error.text, mechanism=mechanism, reason=error.log_reason)

    def cancelled(self, *, mechanism: str) -> Failure:
        return self._conclude("cancelled", "Authentication cancelled", mechanism=mechanism, reason="client_cancelled")

    def unsupported(self, *, mechanism: str) -> Failure:
        # RFC 4422 3.1 names are [A-Z0-9-_]{1,20}; anything else is not echoed on the wire.
        named = 0 < len(mechanism) <= 20 and all(c.isascii() and (c.isalnum() or c in "-_") for c in mechanism)
        what = f"SASL mechanism {mechanism}" if named else "SASL mechanism"
        public = f"Unsupported {what}; use one of {' '.join(self._mechanisms)}"
        return self._conclude("unsupported", public, mechanism=mechanism, reason="mechanism_not_offered")

    # -- across connections: the back-off ------------------------------------------------------

    async def _reserve(self, keys: ThrottleKeys, *, mechanism: str) -> Failure | None:
        """Reserve this attempt under the shared counters (`AuthThrottle`): None to go on,
        else the `throttled` failure (or `unavailable` when the counters cannot be read:
        nothing is checked unthrottled)."""
        if self._throttle is None:
            return None
        try:
            wait = await self._throttle.attempt(keys)
        except Exception as exc:  # noqa: BLE001 - the database is unreachable
            return self._unavailable(exc, mechanism=mechanism)
        if wait <= 0:
            return None
        seconds = max(1, math.ceil(wait))
        return self._conclude(
            "throttled",
            f"Too many failed authentication attempts; try again in {seconds} s",
            mechanism=mechanism,
            reason="backoff",
            detail=f"wait={seconds}s",
        )

    async def _give_back(self, keys: list[str], *, succeeded: ThrottleKeys | None = None) -> None:
        """Refund the reservation under `keys` (or, after a success, refund all and reset the
        pair). A failure here is logged and otherwise ignored: the result stands."""
        if self._throttle is None:
            return
        try:
            if succeeded is not None:
                await self._throttle.succeeded(succeeded)
            else:
                await self._throttle.refund(keys)
        except Exception as exc:  # noqa: BLE001
            log.warning("auth throttle update failed peer=%s error=%s", log_safe(self.client.peer), log_safe(exc))

    # -- conclusions: count, log once ------------------------------------------------------------

    async def _certificate_principal(self) -> Principal | AuthenticationFailed:
        """The certificate's principal or its refusal, checked once; raises when unavailable."""
        async with self._certificate_lock:
            if self._certificate_result is None:
                try:
                    self._certificate_result = await self._checker.from_certificate(
                        self.client.certificate, peer=self.client.peer
                    )
                except AuthenticationFailed as exc:
                    self._certificate_result = exc
            return self._certificate_result

    def _success(self, principal: Principal, *, mechanism: str | None) -> Success | Failure:
        if principal.default_mailbox is None:
            return self._conclude(
                "unauthorized",
                "no mailbox for this certificate",
                mechanism=mechanism,
                reason="no_mailbox",
                principal=principal,
                counted=False,
            )
        self._log(
            logging.INFO,
            "ok",
            mechanism,
            kind=principal.kind,
            id=principal.identifier,
            mailbox=principal.default_mailbox,
            mailboxes=len(principal.mailboxes),
            cert=(principal.cert_sha256 or "-")[:16],
        )
        return Success(principal)

    def _refused(self, exc: AuthenticationFailed, *, mechanism: str | None, counted: bool = True) -> Failure:
        return self._conclude(
            "refused", exc.public, mechanism=mechanism, reason=exc.reason, detail=exc.detail, counted=counted
        )

    def _unavailable(self, exc: Exception, *, mechanism: str | None, event: str | None = None) -> Failure:
        if isinstance(exc, AuthenticationUnavailable):
            reason, detail = exc.reason, exc.detail
        else:
            reason, detail = "error", f"{type(exc).__name__}: {exc}"
            log.debug("authentication error peer=%s", log_safe(self.client.peer), exc_info=exc)
        return self._conclude(
            "unavailable", TEMPORARY_FAILURE, mechanism=mechanism, reason=reason, detail=detail, event=event
        )

    def _conclude(
        self,
        kind: FailureKind,
        public: str,
        *,
        mechanism: str | None,
        reason: str,
        detail: str = "",
        principal: Principal | None = None,
        counted: bool = True,
        event: str | None = None,
    ) -> Failure:
        """The failure, counted when the client's credentials or authzid were refused
        (`refused`, `unauthorized`): malformed, cancelled, unsupported and unavailable
        exchanges test nothing of the client's (RFC 4954 4 leaves the policy to the server)."""
        counted = counted and kind in ("refused", "unauthorized", "throttled")
        if counted:
            self._failures += 1
        close = counted and self._failures >= self._max_failures
        level = {
            "unavailable": logging.ERROR,
            "refused": logging.WARNING,
            "unauthorized": logging.WARNING,
            "throttled": logging.WARNING,
        }
        self._log(
            level.get(kind, logging.INFO),
            kind,
            mechanism,
            event=event,
            reason=reason,
            kind=principal.kind if principal else None,
            id=principal.identifier if principal else None,
            failures=f"{self._failures}/{self._max_failures}" if counted else None,
            closing="yes" if close else None,
            detail=detail,  # free text: last
        )
        return Failure(kind, public, close)

    def _log(
        self, level: int, outcome: str, mechanism: str | None, *, event: str | None = None, **fields: object
    ) -> None:
        """The one line of a result: `auth <outcome>` for an attempt, `certificate <outcome>`
        for SMTP's implicit certificate check, `operator <outcome>` for another operator's
        server on the `mta` listener. Every value goes through `log_safe`."""
        event = event or ("auth" if mechanism else "certificate")
        metrics.auth_result(self.client.protocol, mechanism, outcome, str(fields.get("reason") or ""))
        names = ["peer", "protocol"]
        values: list[object] = [self.client.peer, self.client.protocol]
        if mechanism:
            names.append("mech")
            values.append(mechanism)
        for name, value in fields.items():
            if value is not None and value != "":
                names.append(name)
                values.append(value)
        template = f"{event} {outcome} " + " ".join(f"{n}=%s" for n in names)
        log.log(level, template, *(log_safe(v) for v in values))
        if self._audit is not None:
            self._audit.submit_login(self.client.protocol, self.client.peer, event, outcome, mechanism, fields)


class CoreCredentials:
    """`mss.services.Credentials`: a `ConnectionAuthentication` per connection, all over the
    same checkers. The mechanisms and the failure limit are the same on SMTP and IMAP."""

    def __init__(
        self,
        checker: CredentialChecker,
        *,
        mechanisms: tuple[str, ...] = sasl.MECHANISMS,
        max_failures: int = sasl.MAX_AUTH_FAILURES,
        throttle: AuthThrottle | None = None,
        audit: AuditTrail | None = None,
    ) -> None:
        self.checker = checker
        self.mechanisms = mechanisms
        self.max_failures = max_failures
        self.throttle = throttle
        self.audit = audit

    def authentication(self, client: ClientConnection) -> ConnectionAuthentication:
        return ConnectionAuthentication(
            self.checker,
            client,
            mechanisms=self.mechanisms,
            max_failures=self.max_failures,
            throttle=self.throttle,
            audit=self.audit,
        )

    async def operator(self, client: ClientConnection) -> Success | Failure:
        """`mss.services.Credentials.operator`: another operator's server on the `mta`
        listener, by its SERV certificate (`Authenticator.from_server_certificate`)."""
        return await self.authentication(client).operator()
