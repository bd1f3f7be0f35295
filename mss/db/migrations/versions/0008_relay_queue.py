"""Relay queue: `queue_message` (one message for one remote domain) and `queue_recipient`;
`remote_certificate`: encryption certificates of other operators' mailboxes (end to end
across operators).

Mail for another operator of the trust space is written here in the transaction that
answers `250` (mss.queue); the relay worker leases due rows (`next_attempt_at`, hence its
index) and removes them once no recipient is pending.

Idempotent like 0004, 0006 and 0007: SQLite runs DDL outside the migration's transaction,
so a run that failed half-way may have left some of this behind; each step checks first.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _indexes(bind, table: str) -> set[str]:
    return {i["name"] for i in sa.inspect(bind).get_indexes(table)}


def upgrade() -> None:
    bind = op.get_bind()
    tables = set(sa.inspect(bind).get_table_names())
    if "queue_message" not in tables:
        op.create_table(
            "queue_message",
            sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
            sa.Column("created_at", _TS, nullable=False),
            sa.Column("mail_from", sa.String(320), nullable=False),
            sa.Column("domain", sa.String(255), nullable=False),
            sa.Column("envid", sa.Text()),
            sa.Column("ret", sa.String(4)),
            sa.Column("content", sa.LargeBinary(), nullable=False),
            sa.Column("end_to_end", sa.Boolean(), nullable=False, server_default=sa.false()),
            sa.Column("size", sa.BigInteger(), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
            sa.Column("next_attempt_at", _TS, nullable=False),
            sa.Column("lease_owner", sa.String(200)),
            sa.Column("lease_token", sa.String(64)),
            sa.Column("lease_until", _TS),
            sa.Column("last_error", sa.Text()),
            sa.Column("delay_notified", sa.Boolean(), nullable=False, server_default=sa.false()),
            sa.Column("arrival", _TS),
        )
    if "ix_queue_message_next_attempt_at" not in _indexes(bind, "queue_message"):
        op.create_index("ix_queue_message_next_attempt_at", "queue_message", ["next_attempt_at"])
    if "queue_recipient" not in tables:
        op.create_table(
            "queue_recipient",
            sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
            sa.Column(
                "message_id",
                _BIGID,
                sa.ForeignKey("queue_message.id", ondelete="CASCADE"),
                nullable=False,
            ),
            sa.Column("address", sa.String(320), nullable=False),
            sa.Column("orcpt", sa.Text()),
            sa.Column("notify", sa.String(32)),
            sa.Column("state", sa.String(8), nullable=False, server_default="pending"),
            sa.Column("last_reply", sa.Text()),
        )
    if "ix_queue_recipient_message_id" not in _indexes(bind, "queue_recipient"):
        op.create_index("ix_queue_recipient_message_id", "queue_recipient", ["message_id"])
    if "remote_certificate" not in tables:
        op.create_table(
            "remote_certificate",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("address", sa.String(320), nullable=False),
            sa.Column("cert_der", sa.LargeBinary(), nullable=False),
            sa.Column("sha256", sa.String(64), nullable=False, unique=True),
            sa.Column("not_before", _TS, nullable=False),
            sa.Column("not_after", _TS, nullable=False),
            sa.Column("created_at", _TS, nullable=False),
        )
    if "ix_remote_certificate_address" not in _indexes(bind, "remote_certificate"):
        op.create_index("ix_remote_certificate_address", "remote_certificate", ["address"])


def downgrade() -> None:
    tables = set(sa.inspect(op.get_bind()).get_table_names())
    for table in ("remote_certificate", "queue_recipient", "queue_message"):
        if table in tables:
            op.drop_table(table)  # its indexes go with it
