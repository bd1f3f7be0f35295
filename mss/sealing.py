"""Sealing: a message becomes ciphertext for a mailbox before the store ever sees it.

Delivery (SMTP) and APPEND (IMAP) both come here, so nothing is stored in clear, whatever
the path: a mailbox without a valid encryption certificate receives nothing.

DESIGN.md: "the protected payload is built once and encrypted once per target key".
`prepare` does the per-message work once (header protection, or the as-is decision for a
message that came encrypted) and `Sealer.seal` then only encrypts, per mailbox.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from annuaire.local import LocalDirectory
from crypto import patient as patient_crypto
from crypto.rfc5322 import scan, to_crlf
from crypto.smime import OUTER_HEADERS, Protected, encrypt, is_enveloped, protect, replace_subject
from mss.config import Settings
from mss.message import PARSE_IN_THREAD_THRESHOLD, ParsedMessage, outer_headers
from mss.records import OuterHeaders
from mss.refusals import Reason, Refusal

__all__ = ["AS_IS_OUTER_FIELDS", "Sealable", "Sealer", "prepare", "prepare_async"]

#: The S/MIME structure fields of an outer message: the patient encryption writes its own.
_MIME_FIELDS = frozenset({"mime-version", "content-type", "content-transfer-encoding", "content-disposition"})

#: What stays in clear on a message that came already encrypted (its outer header section is
#: all its sender's client left outside the envelope, e.g. `X-Diagnosis:`): the fields the
#: server's own header protection keeps outside (`crypto.smime.OUTER_HEADERS`, DESIGN.md
#: "Header protection"), the Subject (replaced when the operator hides it), the addressing
#: fields a reader needs to answer or acknowledge when its client protects no header (Sender,
#: Reply-To, Disposition-Notification-To for MDN, RFC 8098), and the MIME fields of the
#: enveloped part itself, without which the CMS object cannot be read. Every other field goes.
AS_IS_OUTER_FIELDS = frozenset(
    {name.lower() for name in OUTER_HEADERS}
    | {"subject", "sender", "reply-to", "disposition-notification-to"}
    | _MIME_FIELDS
)


@dataclass(frozen=True)
class Sealable:
    """What every mailbox of one delivery stores, up to the encryption.

    Exactly one of ``as_is`` (a message that came S/MIME-encrypted: stored as it came, its
    Subject hidden if the operator says so) and ``protected`` (to encrypt per mailbox) is set.
    ``headers`` are the clear values of the stored message; the ciphertext differs per
    mailbox, its outer header section does not, so they are computed once too.
    """

    headers: OuterHeaders
    as_is: bytes | None = None
    protected: Protected | None = None


def prepare(message: bytes | ParsedMessage, *, placeholder_subject: str, hide_subject_of_encrypted: bool) -> Sealable:
    """The per-message half of sealing. ``message`` is a `ParsedMessage` on the submission
    path (already scanned, nothing is split again) or raw bytes from IMAP APPEND, which is
    scanned here once (its line ends made CRLF, the canonical form of RFC 8551 §3.1.1)."""
    if isinstance(message, ParsedMessage):
        raw, fields, body, encrypted = message.raw, message.fields, message.body, message.encrypted
    else:
        raw = message
        section = scan(to_crlf(raw))
        fields, body = section.fields, section.body
        encrypted = is_enveloped(fields, body)
    if encrypted:  # DESIGN.md: stored as it came, its clear header cut to AS_IS_OUTER_FIELDS
        kept = [f for f in fields if f.key in AS_IS_OUTER_FIELDS]
        if hide_subject_of_encrypted:
            stored = replace_subject(kept, body, placeholder_subject=placeholder_subject)
            return Sealable(headers=outer_headers(stored), as_is=stored)
        if len(kept) == len(fields):  # nothing to remove: the bytes as they came
            headers = message.outer if isinstance(message, ParsedMessage) else outer_headers(raw)
            return Sealable(headers=headers, as_is=raw)
        stored = b"".join(f.terminated for f in kept) + b"\r\n" + body
        return Sealable(headers=outer_headers(stored), as_is=stored)
    protected = protect(fields, body, placeholder_subject)
    return Sealable(headers=outer_headers(protected.outer_head), protected=protected)


async def prepare_async(
    message: bytes | ParsedMessage, *, placeholder_subject: str, hide_subject_of_encrypted: bool
) -> Sealable:
    """`prepare`, in a worker thread for a large message (it copies the whole message once)."""
    size = len(message.raw) if isinstance(message, ParsedMessage) else len(message)
    if size > PARSE_IN_THREAD_THRESHOLD:
        return await asyncio.to_thread(
            prepare,
            message,
            placeholder_subject=placeholder_subject,
            hide_subject_of_encrypted=hide_subject_of_encrypted,
        )
    return prepare(
        message, placeholder_subject=placeholder_subject, hide_subject_of_encrypted=hide_subject_of_encrypted
    )


class Sealer:
    """Seals messages for this node's mailboxes: their certificates come from the local
    directory, the placeholder Subject and the as-is policy from the settings."""

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.sessions = sessions

    async def encryption_certificates(self, mailbox: str) -> list[x509.Certificate]:
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
                Reason.NO_ENCRYPTION_KEY,
                f"Mailbox <{mailbox}> has no valid encryption certificate; nothing is stored in clear",
            )
        assert sealable.protected is not None
        sealed = await asyncio.to_thread(encrypt, sealable.protected, certs)
        return sealed, sealable.headers

    async def seal_for_patient(self, sealable: Sealable, certificate: x509.Certificate) -> tuple[bytes, OuterHeaders]:
        """Ciphertext for a patient space: the same protected payload, encrypted as a CMS
        object the patient's browser opens with WebCrypto (RSA-OAEP and AES-256-GCM,
        `crypto.patient`), to the patient's key only."""
        if sealable.protected is None:  # pragma: no cover - delivery refuses as-is messages to patients
            raise Refusal(Reason.CANNOT, "This message cannot be encrypted for a patient")
        protected = sealable.protected
        outer = [(f.name, f.value) for f in scan(protected.outer_head + b"\r\n").fields if f.key not in _MIME_FIELDS]
        sealed = await asyncio.to_thread(
            patient_crypto.encrypt_for_patient, protected.payload, certificate, outer_headers=outer
        )
        return sealed, sealable.headers
