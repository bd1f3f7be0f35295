"""Sealing: a message becomes ciphertext for one mailbox before the store ever sees it.

Delivery (SMTP) and APPEND (IMAP) both come here, so nothing is stored in clear, whatever
the path: a mailbox without a valid encryption certificate receives nothing.
"""
from __future__ import annotations

import asyncio
from typing import Sequence

from cryptography import x509

from sqlalchemy.ext.asyncio import async_sessionmaker

from annuaire.local import LocalDirectory
from crypto.smime import is_encrypted, protect_and_encrypt, replace_outer_subject
from mss.config import Settings
from mss.refusals import Reason, Refusal
from mss.message import outer_headers
from mss.records import OuterHeaders


class Mailboxes:
    def __init__(self, settings: Settings, sessions: async_sessionmaker) -> None:
        self.settings = settings
        self.sessions = sessions

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
