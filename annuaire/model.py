"""Directory tables. Local (this operator's) mailboxes take precedence over national rows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

MAILBOX_TYPES = ("PER", "ORG", "APP", "CAB")


class Base(DeclarativeBase):
    """Metadata of the directory's tables (kept apart from the store's)."""


class LocalMailbox(Base):
    """A BAL hosted by this operator.

    PER mailboxes carry the owner's national id (`idnat`); ORG and APP mailboxes the
    structure id. ORG mailboxes are read by their members (see `LocalMailboxMember`).
    `sent_copy` keeps an encrypted copy of what the mailbox sends in its Sent folder:
    on by default for practice software (APP), which has no client to keep one.
    """

    __tablename__ = "local_mailbox"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    type: Mapped[str] = mapped_column(String(3))
    idnat: Mapped[str | None] = mapped_column(String(32), index=True)
    structure_id: Mapped[str | None] = mapped_column(String(32), index=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    sent_copy: Mapped[bool] = mapped_column(Boolean, default=False)
    red_list: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LocalMailboxMember(Base):
    """Membership of an ORG mailbox: `member` is the address of a PER mailbox; `rights` its
    RFC 4314 rights letters on the mailbox (`mss.rights`; `mss mailbox grant`)."""

    __tablename__ = "local_mailbox_member"

    mailbox: Mapped[str] = mapped_column(
        String(320), ForeignKey("local_mailbox.address", ondelete="CASCADE"), primary_key=True
    )
    member: Mapped[str] = mapped_column(String(320), primary_key=True, index=True)
    rights: Mapped[str] = mapped_column(String(32), default="lrswikxte", server_default="lrswikxte")


class MailboxCertificate(Base):
    """An encryption certificate of a mailbox (DER). Only public material is stored.

    Several rows per mailbox keep the history across key rollover; new messages are
    encrypted to the `active` ones.
    """

    __tablename__ = "mailbox_certificate"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(320), ForeignKey("local_mailbox.address", ondelete="CASCADE"))
    cert_der: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    not_before: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    not_after: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_mailbox_certificate_address", "address"),)


class RemoteCertificate(Base):
    """An encryption certificate of another operator's mailbox (DER, public material only),
    as the national directory publishes it: mail relayed to that address is sealed to it
    (end to end across operators, docs/relay.md). No local mailbox row: the address is not
    ours, so it cannot be one of `mailbox_certificate`'s."""

    __tablename__ = "remote_certificate"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(320))
    cert_der: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    not_before: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    not_after: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_remote_certificate_address", "address"),)


class AppPassword(Base):
    """A per-mailbox application password (PLAIN/LOGIN for clients without EXTERNAL).

    Only an Argon2id hash (PHC string) is stored. It is accepted only together with a valid
    client certificate whose principal is entitled to `address` (see `mss.credentials`).
    """

    __tablename__ = "app_password"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(
        String(320), ForeignKey("local_mailbox.address", ondelete="CASCADE"), index=True
    )
    label: Mapped[str] = mapped_column(String(200), default="")
    hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
