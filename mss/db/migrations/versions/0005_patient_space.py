"""Patient space: registry, blocks, access journal, conversations, pending notifications.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "patient_space",
        sa.Column("ins", sa.String(15), primary_key=True),
        sa.Column("address", sa.String(320), nullable=False, unique=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("notify", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("activated_at", _TS),
        sa.Column("closed_at", _TS),
        sa.Column("certificate", sa.LargeBinary()),
        sa.Column("key_record", sa.Text()),
        sa.Column("auth_hash", sa.String(255)),
        sa.Column("activation_hash", sa.String(255)),
        sa.Column("activation_expires_at", _TS),
    )
    op.create_table(
        "patient_block",
        sa.Column("ins", sa.String(15), sa.ForeignKey("patient_space.ins", ondelete="CASCADE"), primary_key=True),
        sa.Column("professional", sa.String(320), primary_key=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "patient_journal",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("ins", sa.String(15), sa.ForeignKey("patient_space.ins", ondelete="CASCADE"), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("actor_kind", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(320), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_index("ix_patient_journal_ins", "patient_journal", ["ins"])
    op.create_table(
        "conversation",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("ins", sa.String(15), sa.ForeignKey("patient_space.ins", ondelete="CASCADE"), nullable=False),
        sa.Column("professional", sa.String(320), nullable=False),
        sa.Column("professional_name", sa.String(200), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("last_at", _TS, nullable=False),
        sa.Column("closed_at", _TS),
    )
    op.create_index("ix_conversation_ins", "conversation", ["ins"])
    op.create_table(
        "conversation_message",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("conversation_id", _BIGID, sa.ForeignKey("conversation.id", ondelete="CASCADE"), nullable=False),
        sa.Column("message_id", sa.String(998), nullable=False),
        sa.Column("direction", sa.String(3), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("folder_id", sa.Integer()),
        sa.Column("uid", sa.BigInteger()),
        sa.Column("closes", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_conversation_message_conversation_id", "conversation_message", ["conversation_id"])
    op.create_index("ix_conversation_message_message_id", "conversation_message", ["message_id"])
    op.create_table(
        "patient_notification",
        sa.Column("ins", sa.String(15), sa.ForeignKey("patient_space.ins", ondelete="CASCADE"), primary_key=True),
        sa.Column("due_at", _TS),
        sa.Column("last_sent_at", _TS),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=False, server_default=""),
    )


def downgrade() -> None:
    for table in (
        "patient_notification",
        "conversation_message",
        "conversation",
        "patient_journal",
        "patient_block",
        "patient_space",
    ):
        op.drop_table(table)
