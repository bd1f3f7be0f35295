"""SASL mechanisms offered by the SMTP front end (RFC 4954 AUTH).

Only EXTERNAL for now (RFC 4422 Appendix A): the credentials are the TLS client certificate
the connection already presented; the client's message is an optional authorization
identity (authzid) that narrows the certificate's principal to one of its mailboxes.
PLAIN and LOGIN come with a later issue (e-CPS tokens, OAUTHBEARER).

The functions here are pure: they turn the client's bytes and an already-authenticated
principal into a result or a refusal; the protocol layer does the reading and writing.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from mss.principal import Principal

#: Mechanisms advertised in the EHLO "AUTH" line, in order.
MECHANISMS: tuple[str, ...] = ("EXTERNAL",)

#: RFC 4954 4: the reply for a refused authentication. The text stays generic on purpose.
INVALID = "535 5.7.8 Authentication credentials invalid"


class SaslError(Exception):
    """A refusal with the exact SMTP reply to send."""

    def __init__(self, reply: str, log_reason: str) -> None:
        super().__init__(log_reason)
        self.reply = reply
        self.log_reason = log_reason


@dataclass(frozen=True)
class ExternalResult:
    principal: Principal
    authzid: str | None


def decode_response(blob: str) -> bytes:
    """A client response in RFC 4954 form: base64, with "=" meaning "empty"."""
    blob = blob.strip()
    if blob in ("", "="):
        return b""
    try:
        return base64.b64decode(blob.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise SaslError("501 5.5.2 Cannot decode base64 response", "bad base64") from exc


def external(message: bytes, principal: Principal) -> ExternalResult:
    """RFC 4422 Appendix A: `message` is the authzid (UTF-8), empty for "act as myself".

    The principal was computed from the client certificate when TLS came up; an authzid
    it is not entitled to is refused with 535 5.7.8 (RFC 4954 6: authorization failure
    answers as an authentication failure, so nothing is learnt about other mailboxes).
    """
    if not message:
        return ExternalResult(principal, None)
    try:
        authzid = message.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SaslError("501 5.5.2 Authorization identity is not UTF-8", "authzid not utf-8") from exc
    if "\x00" in authzid or not authzid.strip():
        raise SaslError("501 5.5.2 Invalid authorization identity", "authzid malformed")
    try:
        narrowed = principal.restricted_to(authzid.strip())
    except PermissionError as exc:
        raise SaslError(
            f"{INVALID}: not authorized to act as this mailbox",
            f"authzid {authzid!r} not entitled for {principal.kind}:{principal.identifier}",
        ) from exc
    return ExternalResult(narrowed, narrowed.acting_as)
