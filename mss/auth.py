"""From a TLS client certificate to a `Principal`: crypto checks it, the directory maps it.

Failures carry a precise `reason` for the operator's log and a generic public text: the
wire never tells an attacker which check failed (DESIGN.md, Identity).
"""
from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timezone

from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.ext.asyncio import async_sessionmaker

from annuaire.local import LocalDirectory
from crypto.identity import IdentityError, identity_from_certificate
from crypto.validate import CertificateRejected, CertificateValidator
from mss.errors import AuthenticationFailed
from mss.principal import Principal

log = logging.getLogger("mss.auth")


class Authenticator:
    def __init__(self, validator: CertificateValidator, sessions: async_sessionmaker) -> None:
        self.validator = validator
        self.sessions = sessions

    async def from_certificate(self, der: bytes | None, *, peer: str = "?") -> Principal:
        if not der:
            log.warning("auth refused peer=%s reason=no_certificate", peer)
            raise AuthenticationFailed("no_certificate", "a health-PKI client certificate is required")
        try:
            cert = self.validator.validate(der, usage="client", at=datetime.now(timezone.utc))
            identity = identity_from_certificate(cert)
        except CertificateRejected as exc:
            log.warning("auth refused peer=%s reason=%s", peer, exc.reason)
            raise AuthenticationFailed(exc.reason, "client certificate not accepted") from exc
        except IdentityError as exc:
            log.warning("auth refused peer=%s reason=identity:%s", peer, exc.reason)
            raise AuthenticationFailed(f"identity:{exc.reason}", "client certificate not accepted") from exc
        async with self.sessions() as s:
            directory = LocalDirectory(s)
            if identity.kind == "PS":
                entries = await directory.for_idnat(identity.identifier)
                primary = next((e.address for e in entries if e.type == "PER"), None)
                name = " ".join(p for p in (identity.given_name, identity.surname) if p) or identity.common_name
            else:
                entries = await directory.for_structure(identity.identifier)
                primary = next((e.address for e in entries if e.type == "APP"), None)
                name = identity.organization or identity.common_name
        if not entries:
            log.warning(
                "auth refused peer=%s reason=not_in_directory kind=%s id=%s", peer, identity.kind, identity.identifier
            )
            raise AuthenticationFailed("not_in_directory", "no mailbox for this certificate")
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


def peer_certificate_der(ssl_object) -> bytes | None:  # noqa: ANN001 - ssl.SSLObject or SSLSocket
    """The client's leaf certificate in DER, or None when it sent none."""
    if ssl_object is None:
        return None
    return ssl_object.getpeercert(binary_form=True)
