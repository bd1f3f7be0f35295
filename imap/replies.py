"""Core refusals as IMAP tagged NO replies with their response codes (RFC 5530, RFC 9051 7.1)."""

from __future__ import annotations

from imap.protocol.response import Status, no
from mss.refusals import Reason, Refusal

#: Reason -> response code (RFC 5530 unless noted).
IMAP_CODE: dict[Reason, str] = {
    Reason.UNKNOWN_RECIPIENT: "NONEXISTENT",
    Reason.BAD_ADDRESS: "CANNOT",
    Reason.NOT_ALLOWED: "NOPERM",
    Reason.OUTSIDE_TRUST_SPACE: "NOPERM",
    Reason.RELAY_NOT_ENABLED: "NOPERM",
    Reason.RELAY_DENIED: "NOPERM",
    Reason.MAIL_LOOP: "CANNOT",
    Reason.DKIM_FAILED: "CANNOT",
    Reason.NO_ENCRYPTION_KEY: "CANNOT",
    Reason.MAILBOX_DISABLED: "CANNOT",
    Reason.TOO_BIG: "TOOBIG",  # RFC 7889 4
    Reason.OVER_QUOTA: "OVERQUOTA",
    Reason.TOO_MANY_RECIPIENTS: "LIMIT",
    Reason.MALFORMED_MESSAGE: "CANNOT",
    Reason.NO_SUCH_FOLDER: "NONEXISTENT",
    Reason.FOLDER_EXISTS: "ALREADYEXISTS",
    Reason.CANNOT: "CANNOT",
    Reason.TEMPORARILY_UNAVAILABLE: "UNAVAILABLE",
    Reason.STORAGE_FULL: "UNAVAILABLE",  # RFC 5530 3: temporary, "try again later"
}


def refused(tag: str | None, refusal: Refusal, code: str | None = None) -> Status:
    """`tag NO [CODE] text`; `code` overrides the table where a command has its own
    (APPEND and COPY to a missing folder answer TRYCREATE, RFC 9051 6.3.12)."""
    return no(tag, refusal.public, code or IMAP_CODE[refusal.reason])
