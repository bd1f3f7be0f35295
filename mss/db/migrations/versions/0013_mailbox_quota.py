"""`mailbox_usage`: what each mailbox stores (octets of ciphertext, messages) and its quota.

One row per mailbox, kept by `mss.store` in the transaction of every write that adds or
removes messages (deliveries, APPEND, COPY, EXPUNGE, DELETE, a closed patient space), so the
quota check of a write (IMAP QUOTA, RFC 9208; SMTP 552 5.2.2) reads one row, not a SUM over
the mailbox. `limit_bytes` / `limit_messages` are the operator's override for this mailbox
(`mss mailbox quota`); NULL means the configured default (`[limits] mailbox_quota`,
`mailbox_quota_messages`), 0 unlimited.

The usage of the messages already stored is counted here from their `size` column (the
stored ciphertext). Counted again, not added, when this runs a second time: idempotent like
0004 to 0012 (SQLite runs DDL outside the migration's transaction).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if "mailbox_usage" not in set(sa.inspect(bind).get_table_names()):
        op.create_table(
            "mailbox_usage",
            sa.Column("mailbox", sa.String(320), primary_key=True),
            sa.Column("storage_bytes", sa.BigInteger(), nullable=False, server_default="0"),
            sa.Column("messages", sa.BigInteger(), nullable=False, server_default="0"),
            sa.Column("limit_bytes", sa.BigInteger()),
            sa.Column("limit_messages", sa.BigInteger()),
        )
    # `WHERE true`: SQLite's upsert after a SELECT needs it (else ON reads as a join constraint).
    op.execute(
        "INSERT INTO mailbox_usage (mailbox, storage_bytes, messages) "
        "SELECT f.mailbox, SUM(m.size), COUNT(m.id) FROM message m JOIN folder f ON f.id = m.folder_id "
        "WHERE true GROUP BY f.mailbox "
        "ON CONFLICT (mailbox) DO UPDATE SET storage_bytes = excluded.storage_bytes, messages = excluded.messages"
    )


def downgrade() -> None:
    if "mailbox_usage" in set(sa.inspect(op.get_bind()).get_table_names()):
        op.drop_table("mailbox_usage")
