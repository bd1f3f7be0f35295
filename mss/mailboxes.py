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
from crypto.smime import encrypt
from mss.config import Settings
from mss.refusals import Reason, Refusal
from mss.message import ParsedMessage
from mss.sealing import Sealable, prepare_async
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

    async def prepare(self, message: bytes | ParsedMessage) -> Sealable:
        """The per-message half of `seal` (header protection, or the as-is decision), done
        once for a delivery to many mailboxes (DESIGN.md: protected once, encrypted per key)."""
        return await prepare_async(
            message,
            placeholder_subject=self.settings.delivery.placeholder_subject,
            hide_subject_of_encrypted=self.settings.delivery.hide_subject_of_encrypted,
        )

    async def seal(
        self, mailbox: str, message: bytes | ParsedMessage | Sealable, certs: Sequence[x509.Certificate] | None = None
    ) -> tuple[bytes, OuterHeaders]:
        """Ciphertext for `mailbox` and its outer headers; refuses if it has no key.

        `certs` may be given by a caller that already looked them up (delivery does), and
        `message` already prepared (`prepare`) when it goes to several mailboxes.
        """
        sealable = message if isinstance(message, Sealable) else await self.prepare(message)
        if sealable.as_is is not None:  # DESIGN.md: stored as it came
            return sealable.as_is, sealable.headers
        if certs is None:
            certs = await self.encryption_certificates(mailbox)
        if not certs:
            raise Refusal(
                Reason.NO_ENCRYPTION_KEY, f"Mailbox <{mailbox}> has no valid encryption certificate; nothing is stored in clear"
            )
        assert sealable.protected is not None
        sealed = await asyncio.to_thread(encrypt, sealable.protected, certs)
        return sealed, sealable.headers

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

