"""Why the core refuses something, in domain words: one small enum, no protocol in it.

The core raises `Refusal(reason, public, log)`; every front end maps the `Reason` to its own
reply (SMTP code and enhanced status in `smtp.replies`, IMAP response code in
`imap.replies`, HTTP status in the web front end). The core never formats a wire reply.

`public` is safe to show the client (it may name the address the client itself sent);
`log` is for the operator only and may say more (which check failed, which certificate).
Log lines escape control characters whatever they contain (`mss.logging_setup`).
"""

from __future__ import annotations

import enum


class Reason(enum.Enum):
    """Each way the core can say no. Add a member only for a new decision a client can act on."""

    #: The recipient is in one of our domains but no such mailbox exists.
    UNKNOWN_RECIPIENT = "unknown_recipient"
    #: The address itself is malformed for its kind (e.g. a patient address with a bad INS key).
    BAD_ADDRESS = "bad_address"
    #: The authenticated principal may not do this (send as that address, open that mailbox).
    NOT_ALLOWED = "not_allowed"
    #: The recipient's domain is not on the trust-space whitelist.
    OUTSIDE_TRUST_SPACE = "outside_trust_space"
    #: Another operator of the trust space, but relaying to it is not enabled here.
    RELAY_NOT_ENABLED = "relay_not_enabled"
    #: Another operator asked this one to pass mail on to a third domain: never relayed onwards.
    RELAY_DENIED = "relay_denied"
    #: The message went round too many hops (`[relay] max_hops` Received fields): a mail loop.
    MAIL_LOOP = "mail_loop"
    #: The message's DKIM signature failed and the operator refuses such mail.
    DKIM_FAILED = "dkim_failed"
    #: The mailbox has no valid encryption certificate: nothing may be stored for it in clear.
    NO_ENCRYPTION_KEY = "no_encryption_key"
    #: The recipient exists but does not receive mail now (opposed, closed, disabled).
    MAILBOX_DISABLED = "mailbox_disabled"
    #: More than the message size limit.
    TOO_BIG = "too_big"
    #: The mailbox is over its quota.
    OVER_QUOTA = "over_quota"
    #: Too many recipients for one message.
    TOO_MANY_RECIPIENTS = "too_many_recipients"
    #: The message breaks the syntax rules the core enforces (bare CR/LF, no From, ...).
    MALFORMED_MESSAGE = "malformed_message"
    #: The folder named does not exist.
    NO_SUCH_FOLDER = "no_such_folder"
    #: A folder of that name exists already.
    FOLDER_EXISTS = "folder_exists"
    #: A valid request the store cannot carry out (delete INBOX, move into the same folder, ...).
    CANNOT = "cannot"
    #: Not the client's fault: the database or a dependency failed; try again later.
    TEMPORARILY_UNAVAILABLE = "temporarily_unavailable"
    #: The server's storage is full (disk, database size): nothing was stored; try again later.
    STORAGE_FULL = "storage_full"

    @property
    def permanent(self) -> bool:
        """False for the reasons a client should retry (SMTP 4xx)."""
        return self not in (Reason.TEMPORARILY_UNAVAILABLE, Reason.TOO_MANY_RECIPIENTS, Reason.STORAGE_FULL)


class Refusal(Exception):
    """A decision of the core: nothing was changed. Front ends turn it into a reply."""

    def __init__(self, reason: Reason, public: str, log: str | None = None) -> None:
        super().__init__(f"{reason.value}: {log or public}")
        self.reason = reason
        self.public = public
        self.log = log or public

    def __repr__(self) -> str:
        return f"Refusal({self.reason.name}, {self.public!r})"


def storage_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be reached (server down, connection reset
    or refused, pool timeout): a temporary condition a client retries (SMTP 451, IMAP
    `NO [UNAVAILABLE]`, RFC 5530 3), not a bug. Front ends cannot name SQLAlchemy's
    exceptions (they never import it): they ask here."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, ConnectionError, TimeoutError)
    )
