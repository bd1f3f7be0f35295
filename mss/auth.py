"""From a TLS client certificate to a `Principal`: crypto checks it, the directory maps it.

Failures carry a precise `reason` for the operator's log and a generic public text: the
wire never tells an attacker which check failed (DESIGN.md, Identity).
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from datetime import datetime, timezone

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.ext.asyncio import async_sessionmaker

from annuaire.local import LocalDirectory
from crypto.identity import Identity, IdentityError, check_ps_id, identity_from_certificate
from crypto.tokens import TokenRejected, TokenVerifier
from crypto.validate import CertificateRejected, CertificateValidator
from mss.errors import AuthenticationFailed
from mss.principal import Principal

log = logging.getLogger("mss.auth")


#: The one text the wire gets for any certificate problem (DESIGN.md: generic on the wire).
CERTIFICATE_REFUSED = "client certificate not accepted"


class Authenticator:
    def __init__(
        self,
        validator: CertificateValidator,
        sessions: async_sessionmaker,
        tokens: TokenVerifier | None = None,
    ) -> None:
        self.validator = validator
        self.sessions = sessions
        self.tokens = tokens

    def _client_identity(self, der: bytes | None, peer: str, mechanism: str) -> tuple[x509.Certificate, Identity]:
        """Validate a client certificate for client authentication and read its identity.

        SERV certificates are refused here: they identify another operator's server on the
        MTA port, never a person or software acting for a mailbox.
        """
        if not der:
            log.warning("auth refused peer=%s mech=%s reason=no_certificate", peer, mechanism)
            raise AuthenticationFailed("no_certificate", "a health-PKI client certificate is required")
        try:
            cert = self.validator.validate(der, usage="client", at=datetime.now(timezone.utc))
            identity = identity_from_certificate(cert)
        except CertificateRejected as exc:
            log.warning("auth refused peer=%s mech=%s reason=%s detail=%s", peer, mechanism, exc.reason, exc.detail)
            raise AuthenticationFailed(exc.reason, CERTIFICATE_REFUSED) from exc
        except IdentityError as exc:
            log.warning("auth refused peer=%s mech=%s reason=identity:%s", peer, mechanism, exc.reason)
            raise AuthenticationFailed(f"identity:{exc.reason}", CERTIFICATE_REFUSED) from exc
        if identity.kind == "SERV":
            log.warning("auth refused peer=%s mech=%s reason=serv_certificate id=%s", peer, mechanism, identity.identifier)
            raise AuthenticationFailed("serv_certificate", CERTIFICATE_REFUSED)
        return cert, identity

    async def from_certificate(self, der: bytes | None, *, peer: str = "?") -> Principal:
        """The principal of a professional card (PER mailboxes and the ORG mailboxes they
        belong to) or of a structure certificate (its ORG and APP mailboxes)."""
        cert, identity = self._client_identity(der, peer, "EXTERNAL")
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
            log.warning(
                "auth refused peer=%s reason=not_in_directory kind=%s id=%s", peer, identity.kind, identity.identifier
            )
            raise AuthenticationFailed("not_in_directory", CERTIFICATE_REFUSED)
        fp = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
        principal = Principal(
            kind=identity.kind,
            identifier=identity.identifier,
            display_name=name,
            mailboxes=frozenset(e.address for e in entries),
            primary=primary or entries[0].address,
            cert_sha256=fp,
        )
        log.info("auth ok peer=%s kind=%s id=%s mailboxes=%d", peer, principal.kind, principal.identifier, len(entries))
        return principal


    # -- OAUTHBEARER / XOAUTH2: an e-CPS token bound to the connection's certificate -------------

    async def from_token(
        self, token: str, cert_der: bytes | None, authzid: str | None = None, *, peer: str = "?",
        mechanism: str = "OAUTHBEARER",
    ) -> Principal:
        """The professional named by an access token, on a connection whose client certificate
        (typically the ORG certificate of practice software) validates and matches the token's
        `cnf` `x5t#S256` (RFC 8705). `authzid`, when given, narrows to one of their mailboxes."""
        if self.tokens is None:
            log.warning("auth refused peer=%s mech=%s reason=tokens_not_configured", peer, mechanism)
            raise AuthenticationFailed("tokens_not_configured", "token authentication is not available")
        cert, holder = self._client_identity(cert_der, peer, mechanism)
        try:
            claims = await asyncio.to_thread(self.tokens.verify, token, cert)
        except TokenRejected as exc:
            log.warning(
                "auth refused peer=%s mech=%s reason=token:%s holder=%s detail=%s",
                peer, mechanism, exc.reason, holder.identifier, exc.detail,
            )
            raise AuthenticationFailed(f"token:{exc.reason}", "invalid token") from exc
        idnat = self.tokens.idnat(claims) or ""
        try:
            check_ps_id(idnat)
        except IdentityError as exc:
            log.warning("auth refused peer=%s mech=%s reason=token:bad_subject:%s", peer, mechanism, exc.reason)
            raise AuthenticationFailed("token:bad_subject", "invalid token") from exc
        async with self.sessions() as s:
            entries = await LocalDirectory(s).for_idnat(idnat)
        if not entries:
            log.warning("auth refused peer=%s mech=%s reason=not_in_directory kind=PS id=%s", peer, mechanism, idnat)
            raise AuthenticationFailed("not_in_directory", "invalid token")
        primary = next((e.address for e in entries if e.type == "PER"), None)
        principal = Principal(
            kind="PS",
            identifier=idnat,
            display_name=str(claims.get("name") or idnat),
            mailboxes=frozenset(e.address for e in entries),
            primary=primary or entries[0].address,
            cert_sha256=hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(),
            mechanism=mechanism,
        )
        principal = self._narrow(principal, authzid, peer)
        log.info(
            "auth ok peer=%s mech=%s kind=PS id=%s via=%s:%s jti=%s",
            peer, mechanism, idnat, holder.kind, holder.identifier, claims.get("jti", "-"),
        )
        return principal

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
        if not principal.may_use(address):
            log.warning(
                "auth refused peer=%s mech=%s reason=app_password:not_entitled id=%s mailbox=%s",
                peer, mechanism, principal.identifier, address,
            )
            raise AuthenticationFailed("app_password:not_entitled", "invalid credentials")
        if not await check_app_password(self.sessions, address, password):
            log.warning(
                "auth refused peer=%s mech=%s reason=app_password:wrong id=%s mailbox=%s",
                peer, mechanism, principal.identifier, address,
            )
            raise AuthenticationFailed("app_password:wrong", "invalid credentials")
        log.info("auth ok peer=%s mech=%s id=%s mailbox=%s", peer, mechanism, principal.identifier, address)
        return dataclasses.replace(principal.restricted_to(address), mechanism=mechanism)

    @staticmethod
    def _narrow(principal: Principal, authzid: str | None, peer: str) -> Principal:
        if not authzid:
            return principal
        try:
            return principal.restricted_to(authzid)
        except PermissionError as exc:
            log.warning(
                "auth refused peer=%s reason=authzid_not_entitled id=%s authzid=%s", peer, principal.identifier, authzid
            )
            raise AuthenticationFailed("authzid_not_entitled", "not authorized for that mailbox") from exc


def peer_certificate_der(ssl_object) -> bytes | None:  # noqa: ANN001 - ssl.SSLObject or SSLSocket
    """The client's leaf certificate in DER, or None when it sent none."""
    if ssl_object is None:
        return None
    return ssl_object.getpeercert(binary_form=True)
