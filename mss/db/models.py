"""Store tables: folders, messages, their keywords, and the store's counters.

`mss.store` is the only writer of these rows.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Metadata of the store's tables."""


_BIGID = BigInteger().with_variant(Integer, "sqlite")


class StoreCounter(Base):
    """The store's counters. `uidvalidity:<mailbox>`: the last UIDVALIDITY given to a folder
    of that mailbox, so a folder created later (a name reused included) always gets a greater
    one (RFC 9051 2.3.1.1) whatever the clock does; `uidvalidity-floor`: where a mailbox's
    first counter starts (above the time-based values of stores older than migration 0004)."""

    __tablename__ = "store_counter"

    name: Mapped[str] = mapped_column(String(340), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class Folder(Base):
    """An IMAP mailbox of a BAL (INBOX, Sent, ...).

    `uidnext` and `highestmodseq` are the per-folder counters (RFC 9051 2.3.1.1, RFC 7162
    3.1.1); they are bumped in the same transaction that writes the message rows.
    """

    __tablename__ = "folder"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    mailbox: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(512))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uidnext: Mapped[int] = mapped_column(BigInteger, default=1)
    highestmodseq: Mapped[int] = mapped_column(BigInteger, default=1)
    #: The first UID no session has seen as \\Recent yet (RFC 3501 2.3.2, mss.store.claim_recent).
    recent_uid: Mapped[int] = mapped_column(BigInteger, default=1, server_default="1")
    special_use: Mapped[str | None] = mapped_column(String(32))
    subscribed: Mapped[bool] = mapped_column(default=True)

    __table_args__ = (UniqueConstraint("mailbox", "name", name="uq_folder_mailbox_name"),)


class Message(Base):
    """One stored message: its ciphertext (an S/MIME message) and the clear outer headers.

    The outer header columns hold only what routing and threading need (DESIGN.md,
    header protection) so that IMAP SEARCH and ENVELOPE work without a private key. The
    system flags (RFC 9051 2.3.2) are columns, so "unseen" and "deleted" are plain
    predicates; keywords live in `message_keyword`.
    """

    __tablename__ = "message"

    id: Mapped[int] = mapped_column(_BIGID, primary_key=True, autoincrement=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("folder.id", ondelete="CASCADE"))
    uid: Mapped[int] = mapped_column(BigInteger)
    modseq: Mapped[int] = mapped_column(BigInteger)
    seen: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    answered: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    flagged: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    deleted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    draft: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    internaldate: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    hdr_from: Mapped[str] = mapped_column(Text, default="")
    hdr_to: Mapped[str] = mapped_column(Text, default="")
    hdr_cc: Mapped[str] = mapped_column(Text, default="")
    hdr_subject: Mapped[str] = mapped_column(Text, default="")
    hdr_date: Mapped[str] = mapped_column(Text, default="")
    hdr_message_id: Mapped[str] = mapped_column(Text, default="")
    #: What a front end derived from the clear outer structure (IMAP ENVELOPE and
    #: BODYSTRUCTURE), opaque here; NULL until first needed (migration 0011).
    structure: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)

    __table_args__ = (
        UniqueConstraint("folder_id", "uid", name="uq_message_folder_uid"),
        Index("ix_message_folder_modseq", "folder_id", "modseq"),
    )


class Vanished(Base):
    """A UID expunged from a folder, with the MODSEQ of its expunge: what QRESYNC's
    `VANISHED (EARLIER)` reports to a client coming back (RFC 7162 3.2.5, 3.2.6)."""

    __tablename__ = "vanished"

    folder_id: Mapped[int] = mapped_column(Integer, ForeignKey("folder.id", ondelete="CASCADE"), primary_key=True)
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    modseq: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_vanished_folder_modseq", "folder_id", "modseq"),)


class MessageKeyword(Base):
    """A keyword (RFC 9051 2.3.2: `$Forwarded`, `$MDNSent`, user labels) set on a message."""

    __tablename__ = "message_keyword"

    message_id: Mapped[int] = mapped_column(_BIGID, ForeignKey("message.id", ondelete="CASCADE"), primary_key=True)
    keyword: Mapped[str] = mapped_column(String(255), primary_key=True)


class MessageSeen(Base):
    """\\Seen of one member of a shared (ORG) mailbox on one message (RFC 4314 4, the "s"
    right: \\Seen is per user). `member` is the professional's national id (idNat_PS), the
    same whichever PER mailbox of theirs the membership names. A row means "seen by that
    member"; the message's `seen` column stays the mailbox-wide \\Seen that the ORG identity
    (a structure certificate) sees. Rows go with their message (`mss.store` deletes them in
    the expunge, move and folder delete that remove it)."""

    __tablename__ = "message_seen"

    folder_id: Mapped[int] = mapped_column(Integer, ForeignKey("folder.id", ondelete="CASCADE"), primary_key=True)
    member: Mapped[str] = mapped_column(String(32), primary_key=True)
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True)

    __table_args__ = (Index("ix_message_seen_folder_uid", "folder_id", "uid"),)


class MemberSubscription(Base):
    """A member's own subscription to a folder of a shared (ORG) mailbox (RFC 9051 6.3.7:
    subscriptions are per user). No row: subscribed, as every folder is once created."""

    __tablename__ = "member_subscription"

    folder_id: Mapped[int] = mapped_column(Integer, ForeignKey("folder.id", ondelete="CASCADE"), primary_key=True)
    member: Mapped[str] = mapped_column(String(32), primary_key=True)
    subscribed: Mapped[bool] = mapped_column(Boolean, default=False)


class MailboxUsage(Base):
    """What one mailbox stores and may store (IMAP QUOTA, RFC 9208: one quota root per
    mailbox). `storage_bytes` is the sum of its messages' `size` (the stored ciphertext) and
    `messages` their number, both changed in the transaction of the write that changes them
    (`mss.store`). `limit_*`: the operator's override (`mss mailbox quota`); NULL means the
    configured default, 0 unlimited."""

    __tablename__ = "mailbox_usage"

    mailbox: Mapped[str] = mapped_column(String(320), primary_key=True)
    storage_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    messages: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    limit_bytes: Mapped[int | None] = mapped_column(BigInteger)
    limit_messages: Mapped[int | None] = mapped_column(BigInteger)


# -- the patient space (mss.patients is the only writer) --------------------------------------


class PatientSpace(Base):
    """A patient's space, keyed by INS (MSSANTE.md "Identifiers"); its address is
    `<INS>@<patient domain>`. `state`: pending (registered, not yet activated: mail is kept,
    encrypted), active, opposed, closed.

    The server keeps the public certificate mail is encrypted to, the private key only
    wrapped (`key_record`, JSON: wrapped under a key derived in the browser from the
    activation code, then from the password), and Argon2id hashes of the authentication keys
    the browser derives from those secrets. Closing the space deletes the wrapped key and
    the hashes in the same transaction as the state change: crypto-shredding.
    """

    __tablename__ = "patient_space"

    ins: Mapped[str] = mapped_column(String(15), primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str] = mapped_column(String(320), default="")
    state: Mapped[str] = mapped_column(String(8))
    notify: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    certificate: Mapped[bytes | None] = mapped_column(LargeBinary)
    key_record: Mapped[str | None] = mapped_column(Text)
    auth_hash: Mapped[str | None] = mapped_column(String(255))
    activation_hash: Mapped[str | None] = mapped_column(String(255))
    activation_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Two-step verification (RFC 6238): the base32 secret once confirmed, the one being set
    # up, the last time step accepted (a code is never accepted twice) and the Argon2id
    # hashes of the unused recovery codes (JSON list). Shredded with the keys on close.
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    totp_pending: Mapped[str | None] = mapped_column(String(64))
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    totp_recovery: Mapped[str | None] = mapped_column(Text)


class PatientBlock(Base):
    """A professional (mailbox address) the patient refuses mail from (project choice)."""

    __tablename__ = "patient_block"

    ins: Mapped[str] = mapped_column(String(15), ForeignKey("patient_space.ins", ondelete="CASCADE"), primary_key=True)
    professional: Mapped[str] = mapped_column(String(320), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PatientJournal(Base):
    """The patient's access journal (PORTAL.md 6.9): who did what, when. No health content."""

    __tablename__ = "patient_journal"

    id: Mapped[int] = mapped_column(_BIGID, primary_key=True, autoincrement=True)
    ins: Mapped[str] = mapped_column(String(15), ForeignKey("patient_space.ins", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor_kind: Mapped[str] = mapped_column(String(16))  # patient, professional, operator, system
    actor: Mapped[str] = mapped_column(String(320), default="")
    action: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")


class Conversation(Base):
    """An exchange a professional started with a patient (MSSANTE.md "Patients"). Only
    metadata: the subject stays inside the encrypted messages."""

    __tablename__ = "conversation"

    id: Mapped[int] = mapped_column(_BIGID, primary_key=True, autoincrement=True)
    ins: Mapped[str] = mapped_column(String(15), ForeignKey("patient_space.ins", ondelete="CASCADE"), index=True)
    professional: Mapped[str] = mapped_column(String(320))
    professional_name: Mapped[str] = mapped_column(String(200), default="")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ConversationMessage(Base):
    """One message of a conversation: its Message-ID (to thread answers), its direction and
    the stored copy in the patient's mailbox."""

    __tablename__ = "conversation_message"

    id: Mapped[int] = mapped_column(_BIGID, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int] = mapped_column(_BIGID, ForeignKey("conversation.id", ondelete="CASCADE"), index=True)
    message_id: Mapped[str] = mapped_column(String(998))
    direction: Mapped[str] = mapped_column(String(3))  # "in" (from the professional) or "out"
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    folder_id: Mapped[int | None] = mapped_column(Integer)
    uid: Mapped[int | None] = mapped_column(BigInteger)
    closes: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    __table_args__ = (Index("ix_conversation_message_message_id", "message_id"),)


class PatientNotification(Base):
    """The pending arrival notification of a space (at most one row per patient): written in
    the delivery's transaction, sent later by the notifier, never blocking delivery."""

    __tablename__ = "patient_notification"

    ins: Mapped[str] = mapped_column(String(15), ForeignKey("patient_space.ins", ondelete="CASCADE"), primary_key=True)
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")


class PortalSessionRow(Base):
    """A patient portal session (mss.portal_sessions). The cookie carries a random id; only
    its SHA-256 is kept, so a copy of this table opens no session."""

    __tablename__ = "portal_session"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    ins: Mapped[str] = mapped_column(String(15), ForeignKey("patient_space.ins", ondelete="CASCADE"), index=True)
    pending_totp: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    idle_expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    client: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(256), default="")
    #: The session key K_s (32 random bytes, docs/patient-keys.md 4): the browser keeps the
    #: session's private key in IndexedDB wrapped under it, so the copy dies with this row.
    local_key: Mapped[bytes | None] = mapped_column(LargeBinary)


class PortalSecret(Base):
    """Deployment-wide random secrets of the portal (CSRF key, decoy salts), shared by every
    node: created once, by whichever node needs one first."""

    __tablename__ = "portal_secret"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)


class ThrottleCounter(Base):
    """Failed attempts under one key ("account:<INS>", "address:<ip>"...) and until when
    the next attempt must wait (mss.throttle)."""

    __tablename__ = "portal_throttle"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    blocked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# -- the audit trail (mss.audit is the only writer) -------------------------------------------


class AuditEvent(Base):
    """One security event of the tamper-evident audit trail (docs/operations.md, "Audit
    trail"). Append-only (triggers refuse UPDATE and DELETE) and hash-chained: `hash` is the
    SHA-256 of the row's canonical serialisation (`mss.audit.canonical`), which includes
    `prev_hash`, the hash of row `seq - 1`. `at` is kept as the canonical UTC text that the
    hash covers (sortable, so `--since` is a string comparison); `fields` is canonical JSON.
    Never message content, never a secret."""

    __tablename__ = "audit_event"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(32), index=True)
    type: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(400))
    subject: Mapped[str] = mapped_column(String(400))
    outcome: Mapped[str] = mapped_column(String(16))
    fields: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The one row (id 1) every writer locks before appending: the last seq and hash. It
    serialises appends across processes and nodes (a row lock on PostgreSQL, the write lock
    on SQLite) and lets `mss audit verify` notice a chain cut short behind its back."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


# -- the relay queue (mss.queue is the only writer) -------------------------------------------


class QueueMessage(Base):
    """One message waiting to be relayed to another operator's domain (one row per remote
    domain of a delivery), written in the transaction that answered `250` (mss.queue).

    `content` is exactly what will be sent: S/MIME to the remote recipients' certificates
    when `end_to_end`, else the clear message encrypted at rest with the queue key
    (mss.queue_key), so a dump of the database shows no message text. `size` is the size of
    the bytes to send. A node works on an entry only while it holds its lease
    (`lease_owner` until `lease_until`); `arrival` is when this operator accepted it (the
    DSN's Arrival-Date)."""

    __tablename__ = "queue_message"

    id: Mapped[int] = mapped_column(_BIGID, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    mail_from: Mapped[str] = mapped_column(String(320))  # "" for the null reverse-path
    domain: Mapped[str] = mapped_column(String(255))
    envid: Mapped[str | None] = mapped_column(Text)  # RFC 3461 4.4, decoded from xtext
    ret: Mapped[str | None] = mapped_column(String(4))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    end_to_end: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    size: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    #: A new random value for each lease: only the attempt holding it may record its outcome
    #: (a stale attempt of the same node, whose lease ran out, cannot).
    lease_token: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    delay_notified: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    arrival: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_queue_message_next_attempt_at", "next_attempt_at"),)


class QueueRecipient(Base):
    """A recipient of a queued message and where it stands: `pending` (to try again),
    `sent` (the peer accepted it), `failed` (refused for good or expired). `notify` keeps
    RFC 3461 NOTIFY: NULL when not given, "NEVER", or a comma list (SUCCESS,FAILURE,DELAY);
    `orcpt` the decoded ORCPT ("rfc822;addr"); `last_reply` the peer's last answer."""

    __tablename__ = "queue_recipient"

    id: Mapped[int] = mapped_column(_BIGID, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(_BIGID, ForeignKey("queue_message.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(320))
    orcpt: Mapped[str | None] = mapped_column(Text)
    notify: Mapped[str | None] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(8), default="pending")
    last_reply: Mapped[str | None] = mapped_column(Text)
