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
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Metadata of the store's tables."""


_BIGID = BigInteger().with_variant(Integer, "sqlite")


class StoreCounter(Base):
    """Store-wide counters. `uidvalidity`: the last UIDVALIDITY given to a folder, so a
    folder created later (a name reused included) always gets a greater one (RFC 9051
    2.3.1.1) whatever the clock does."""

    __tablename__ = "store_counter"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
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

    __table_args__ = (
        UniqueConstraint("folder_id", "uid", name="uq_message_folder_uid"),
        Index("ix_message_folder_modseq", "folder_id", "modseq"),
    )


class MessageKeyword(Base):
    """A keyword (RFC 9051 2.3.2: `$Forwarded`, `$MDNSent`, user labels) set on a message."""

    __tablename__ = "message_keyword"

    message_id: Mapped[int] = mapped_column(_BIGID, ForeignKey("message.id", ondelete="CASCADE"), primary_key=True)
    keyword: Mapped[str] = mapped_column(String(255), primary_key=True)
