"""Store tables: folders and messages. `mss.store` is the only writer of these rows."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Metadata of the store's tables."""


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
    special_use: Mapped[str | None] = mapped_column(String(32))
    subscribed: Mapped[bool] = mapped_column(default=True)

    __table_args__ = (UniqueConstraint("mailbox", "name", name="uq_folder_mailbox_name"),)


class Message(Base):
    """One stored message: its ciphertext (an S/MIME message) and the clear outer headers.

    The outer header columns hold only what routing and threading need (DESIGN.md,
    header protection) so that IMAP SEARCH and ENVELOPE work without a private key.
    """

    __tablename__ = "message"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("folder.id", ondelete="CASCADE"))
    uid: Mapped[int] = mapped_column(BigInteger)
    modseq: Mapped[int] = mapped_column(BigInteger)
    flags: Mapped[str] = mapped_column(Text, default="")
    internaldate: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    hdr_from: Mapped[str] = mapped_column(Text, default="")
    hdr_to: Mapped[str] = mapped_column(Text, default="")
    hdr_cc: Mapped[str] = mapped_column(Text, default="")
    hdr_subject: Mapped[str] = mapped_column(Text, default="")
    hdr_date: Mapped[str] = mapped_column(Text, default="")
    hdr_message_id: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (
        UniqueConstraint("folder_id", "uid", name="uq_message_folder_uid"),
        Index("ix_message_folder_modseq", "folder_id", "modseq"),
    )


class MailEvent(Base):
    """A change in a folder, for IDLE sessions on other nodes (polled or NOTIFY-woken)."""

    __tablename__ = "mail_event"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    folder_id: Mapped[int] = mapped_column(Integer, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
