"""Initial schema: folders, messages, mail events, local mailboxes and their certificates.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "folder",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uidnext", sa.BigInteger(), nullable=False),
        sa.Column("highestmodseq", sa.BigInteger(), nullable=False),
        sa.Column("special_use", sa.String(32)),
        sa.Column("subscribed", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("mailbox", "name", name="uq_folder_mailbox_name"),
    )
    op.create_table(
        "message",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("folder_id", sa.Integer(), sa.ForeignKey("folder.id", ondelete="CASCADE"), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("modseq", sa.BigInteger(), nullable=False),
        sa.Column("flags", sa.Text(), nullable=False),
        sa.Column("internaldate", sa.DateTime(timezone=True), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("hdr_from", sa.Text(), nullable=False),
        sa.Column("hdr_to", sa.Text(), nullable=False),
        sa.Column("hdr_cc", sa.Text(), nullable=False),
        sa.Column("hdr_subject", sa.Text(), nullable=False),
        sa.Column("hdr_date", sa.Text(), nullable=False),
        sa.Column("hdr_message_id", sa.Text(), nullable=False),
        sa.UniqueConstraint("folder_id", "uid", name="uq_message_folder_uid"),
    )
    op.create_index("ix_message_folder_modseq", "message", ["folder_id", "modseq"])
    op.create_table(
        "mail_event",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("folder_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_mail_event_folder_id", "mail_event", ["folder_id"])
    op.create_table(
        "local_mailbox",
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column("type", sa.String(3), nullable=False),
        sa.Column("idnat", sa.String(32)),
        sa.Column("structure_id", sa.String(32)),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("sent_copy", sa.Boolean(), nullable=False),
        sa.Column("red_list", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_local_mailbox_idnat", "local_mailbox", ["idnat"])
    op.create_index("ix_local_mailbox_structure_id", "local_mailbox", ["structure_id"])
    op.create_table(
        "local_mailbox_member",
        sa.Column(
            "mailbox", sa.String(320), sa.ForeignKey("local_mailbox.address", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("member", sa.String(320), primary_key=True),
    )
    op.create_index("ix_local_mailbox_member_member", "local_mailbox_member", ["member"])
    op.create_table(
        "mailbox_certificate",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "address", sa.String(320), sa.ForeignKey("local_mailbox.address", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("cert_der", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_mailbox_certificate_address", "mailbox_certificate", ["address"])


def downgrade() -> None:
    for t in ("mailbox_certificate", "local_mailbox_member", "local_mailbox", "mail_event", "message", "folder"):
        op.drop_table(t)
