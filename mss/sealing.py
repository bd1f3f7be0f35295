"""One message made ready to be sealed for any number of mailboxes: protected once.

DESIGN.md: "the protected payload is built once and encrypted once per target key". A
delivery to ten mailboxes used to split, protect and rebuild the same message ten times;
`prepare` does the per-message work once (header protection, or the as-is decision for a
message that came encrypted) and `Mailboxes.seal` then only encrypts, per mailbox.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from crypto.rfc5322 import scan, to_crlf
from crypto.smime import Protected, is_enveloped, protect, replace_subject
from mss.message import PARSE_IN_THREAD_THRESHOLD, ParsedMessage, outer_headers
from mss.records import OuterHeaders

__all__ = ["Sealable", "prepare", "prepare_async"]


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


def prepare(
    message: bytes | ParsedMessage, *, placeholder_subject: str, hide_subject_of_encrypted: bool
) -> Sealable:
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
    if encrypted:  # DESIGN.md: stored as it came (the operator may hide its Subject)
        if hide_subject_of_encrypted:
            stored = replace_subject(fields, body, placeholder_subject=placeholder_subject)
            return Sealable(headers=outer_headers(stored), as_is=stored)
        headers = message.outer if isinstance(message, ParsedMessage) else outer_headers(raw)
        return Sealable(headers=headers, as_is=raw)
    protected = protect(fields, body, placeholder_subject)
    return Sealable(headers=outer_headers(protected.outer_head), protected=protected)


async def prepare_async(
    message: bytes | ParsedMessage, *, placeholder_subject: str, hide_subject_of_encrypted: bool
) -> Sealable:
    """`prepare`, in a worker thread for a large message (it copies the whole message once)."""
    size = len(message.raw) if isinstance(message, ParsedMessage) else len(message)
    if size > PARSE_IN_THREAD_THRESHOLD:
        return await asyncio.to_thread(
            prepare, message, placeholder_subject=placeholder_subject, hide_subject_of_encrypted=hide_subject_of_encrypted
        )
    return prepare(message, placeholder_subject=placeholder_subject, hide_subject_of_encrypted=hide_subject_of_encrypted)
