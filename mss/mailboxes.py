"""Mailbox-level services used by IMAP: which mailboxes a principal sees, and APPEND.

APPEND is the other way into the store besides SMTP: a draft or a client's copy of a sent
message. It is encrypted to the mailbox's certificates here, before the store sees it.
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Iterable, Sequence

from cryptography import x509

from sqlalchemy.ext.asyncio import async_sessionmaker

from annuaire.local import LocalDirectory
from crypto.smime import is_encrypted, protect_and_encrypt, replace_outer_subject
from mss.config import Settings
from mss.refusals import Reason, Refusal
from mss.message import outer_headers
from mss.principal import Principal
from mss.store import NewMessage, OuterHeaders, Store, StoredRef


class Mailboxes:
    def __init__(self, settings: Settings, sessions: async_sessionmaker, store: Store) -> None:
        self.settings = settings
        self.sessions = sessions
        self.store = store

    def for_principal(self, principal: Principal) -> list[str]:
        return sorted(principal.mailboxes)

    def check_access(self, principal: Principal, mailbox: str) -> None:
        if not principal.may_use(mailbox):
            raise PermissionError(f"{principal.identifier} may not open {mailbox}")

    async def encryption_certificates(self, mailbox: str):
        async with self.sessions() as s:
            return await LocalDirectory(s).encryption_certificates(mailbox)

    async def seal(
        self, mailbox: str, raw: bytes, certs: Sequence[x509.Certificate] | None = None
    ) -> tuple[bytes, OuterHeaders]:
        """Ciphertext for `mailbox` and its outer headers; refuses if it has no key.

        `certs` may be given by a caller that already looked them up (delivery does).
        """
        if is_encrypted(raw):  # DESIGN.md: stored as it came (the operator may hide its Subject)
            if self.settings.delivery.hide_subject_of_encrypted:
                raw = replace_outer_subject(raw, placeholder_subject=self.settings.delivery.placeholder_subject)
            return raw, outer_headers(raw)
        if certs is None:
            certs = await self.encryption_certificates(mailbox)
        if not certs:
            raise Refusal(
                Reason.NO_ENCRYPTION_KEY, f"Mailbox <{mailbox}> has no valid encryption certificate; nothing is stored in clear"
            )
        sealed = await asyncio.to_thread(
            protect_and_encrypt, raw, certs, placeholder_subject=self.settings.delivery.placeholder_subject
        )
        return sealed, outer_headers(sealed)

    async def append(
        self,
        principal: Principal,
        mailbox: str,
        folder: str,
        raw: bytes,
        flags: Iterable[str] = (),
        internaldate: datetime | None = None,
    ) -> StoredRef:
        """IMAP APPEND (RFC 9051 6.3.12): encrypted to the mailbox, then stored."""
        self.check_access(principal, mailbox)
        sealed, headers = await self.seal(mailbox, raw)
        refs = await self.store.write(
            [
                NewMessage(
                    mailbox=mailbox,
                    folder=folder,
                    content=sealed,
                    headers=headers,
                    flags=frozenset(flags),
                    internaldate=internaldate or datetime.now(timezone.utc),
                )
            ]
        )
        return refs[0]

