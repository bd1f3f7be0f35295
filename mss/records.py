"""The plain records the store hands out and takes in: no database, no SQLAlchemy here,
so front ends can name them (through `mss.services`) without importing the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

FlagMode = Literal["add", "remove", "replace"]

#: The hierarchy delimiter of folder names (RFC 9051 5.1.1), the same for every front end.
DELIMITER = "/"


def canonical_folder_name(name: str) -> str:
    """INBOX is case-insensitive (RFC 9051 5.1); other names are kept as given."""
    return "INBOX" if name.upper() == "INBOX" else name


@dataclass(frozen=True)
class FolderInfo:
    id: int
    mailbox: str
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    special_use: str | None
    subscribed: bool
    exists: int = 0
    unseen: int = 0
    #: Messages no session has seen as \\Recent yet, and the first UID of them (RFC 3501 2.3.2).
    recent: int = 0
    recent_uid: int = 1


@dataclass(frozen=True)
class QuotaLimits:
    """The default limits of every mailbox (`[limits] mailbox_quota`, `mailbox_quota_messages`):
    octets of stored ciphertext and messages; 0 is no limit."""

    storage: int = 0
    messages: int = 0


@dataclass(frozen=True)
class Quota:
    """One mailbox's usage and limits (its IMAP quota root, RFC 9208). A limit of 0 is
    none; `*_override` is the operator's setting for this mailbox (None: the default)."""

    mailbox: str
    storage_used: int
    messages_used: int
    storage_limit: int
    messages_limit: int
    storage_override: int | None = None
    messages_override: int | None = None

    def fits(self, octets: int, messages: int = 1) -> bool:
        """Whether `messages` more messages of `octets` in all stay within both limits."""
        return (not self.storage_limit or self.storage_used + octets <= self.storage_limit) and (
            not self.messages_limit or self.messages_used + messages <= self.messages_limit
        )

    @property
    def full(self) -> bool:
        """No message, however small, fits any more (the RCPT check)."""
        return not self.fits(1, 1)

    def plus(self, octets: int, messages: int) -> Quota:
        return replace(self, storage_used=self.storage_used + octets, messages_used=self.messages_used + messages)


@dataclass(frozen=True)
class MessageMeta:
    uid: int
    modseq: int
    flags: frozenset[str]
    internaldate: datetime
    size: int


@dataclass(frozen=True)
class OuterHeaders:
    """The clear header fields of a stored message (what routing and threading need)."""

    from_: str = ""
    to: str = ""
    cc: str = ""
    subject: str = ""
    date: str = ""
    message_id: str = ""


@dataclass
class NewMessage:
    """A ciphertext message to store in `mailbox`/`folder`."""

    mailbox: str
    folder: str
    content: bytes
    headers: OuterHeaders
    flags: frozenset[str] = frozenset()
    internaldate: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class StoredRef:
    mailbox: str
    folder_id: int
    uidvalidity: int
    uid: int


# -- delivery status notifications (RFC 3461) and trace information ---------------------------

#: RFC 3461 4.1 NOTIFY values (NEVER is the empty set).
DsnNotify = Literal["SUCCESS", "FAILURE", "DELAY"]


@dataclass(frozen=True)
class MailDsn:
    """The DSN parameters of MAIL (RFC 3461 4.3 RET, 4.4 ENVID), as the client sent them.

    `envid` is decoded from xtext (RFC 3461 4), kept with its case."""

    ret: Literal["FULL", "HDRS"] | None = None
    envid: str | None = None


@dataclass(frozen=True)
class RcptDsn:
    """The DSN parameters of one RCPT (RFC 3461 4.1 NOTIFY, 4.2 ORCPT).

    `notify` is None when NOTIFY was not given (the server's default: failures and, when
    configured, delays), the empty set for NOTIFY=NEVER. `orcpt` is ``addr-type;address``
    decoded from xtext, e.g. ``rfc822;Claire.Martin@example.org``."""

    notify: frozenset[str] | None = None
    orcpt: str | None = None


@dataclass(frozen=True)
class TraceInfo:
    """What a front end knows of the hop a message came by, for its `Received:` field
    (RFC 5321 4.4): the client's EHLO name, its address, the protocol (RFC 3848:
    ESMTPS, ESMTPSA, UTF8SMTPS, ...) and the TLS version and cipher."""

    helo: str
    peer: str
    protocol: str
    tls: str | None = None
