"""Core refusals as SMTP replies: RFC 5321 4.2 codes with RFC 3463 enhanced status codes.

One table, so the same decision always gets the same reply whichever hook met it.
"""

from __future__ import annotations

from mss.refusals import Reason, Refusal

#: Reason -> (reply code, enhanced status code).
SMTP_REPLY: dict[Reason, tuple[int, str]] = {
    Reason.UNKNOWN_RECIPIENT: (550, "5.1.1"),  # RFC 3463 3.2: bad destination mailbox address
    Reason.BAD_ADDRESS: (553, "5.1.3"),  # bad destination mailbox address syntax
    Reason.NOT_ALLOWED: (550, "5.7.1"),  # delivery not authorized
    Reason.OUTSIDE_TRUST_SPACE: (550, "5.7.1"),
    Reason.RELAY_NOT_ENABLED: (550, "5.7.1"),
    Reason.RELAY_DENIED: (550, "5.7.1"),  # RFC 3463 3.8: delivery not authorized
    Reason.MAIL_LOOP: (554, "5.4.6"),  # RFC 3463 3.5: routing loop detected
    Reason.DKIM_FAILED: (550, "5.7.20"),  # RFC 7372 3.1: no passing DKIM signature found
    Reason.NO_ENCRYPTION_KEY: (550, "5.7.1"),
    Reason.MAILBOX_DISABLED: (550, "5.2.1"),  # mailbox disabled, not accepting messages
    Reason.TOO_BIG: (552, "5.3.4"),  # message too big for system
    Reason.OVER_QUOTA: (552, "5.2.2"),  # mailbox full
    Reason.TOO_MANY_RECIPIENTS: (452, "4.5.3"),  # RFC 5321 4.5.3.1.10
    Reason.MALFORMED_MESSAGE: (550, "5.6.0"),  # other or undefined media error
    Reason.NO_SUCH_FOLDER: (550, "5.1.1"),
    Reason.FOLDER_EXISTS: (550, "5.0.0"),
    Reason.CANNOT: (550, "5.0.0"),
    Reason.TEMPORARILY_UNAVAILABLE: (451, "4.3.0"),  # other or undefined mail system status
    Reason.STORAGE_FULL: (452, "4.3.1"),  # RFC 3463 3.4: mail system full (RFC 5321 4.2.2: 452)
}


def smtp_reply(refusal: Refusal) -> str:
    """The reply line for a refusal: code, enhanced code, the public text."""
    code, status = SMTP_REPLY[refusal.reason]
    return f"{code} {status} {refusal.public}"
