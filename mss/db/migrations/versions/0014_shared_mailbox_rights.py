"""Shared ORG mailboxes: RFC 4314 rights per member, \\Seen and subscriptions per member.

- `local_mailbox_member.rights`: the member's RFC 4314 rights letters on the ORG mailbox
  (`mss.rights`, `mss mailbox grant`). Existing members get "lrswikxte" (the `write` grant:
  every right but "a"): until now every member had full access through a SASL
  authorization identity, folder management included.
- `message_seen (folder_id, member, uid)`: \\Seen of one member (their idNat_PS) on one
  message of a shared mailbox (RFC 4314 4, the "s" right); the `message.seen` column stays
  the mailbox-wide \\Seen the ORG identity itself sees.
- `member_subscription (folder_id, member, subscribed)`: a member's own subscription to a
  shared folder (no row: subscribed).

Idempotent like 0004 to 0013 (SQLite runs DDL outside the migration's transaction).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    columns = {c["name"] for c in inspector.get_columns("local_mailbox_member")}
    if "rights" not in columns:
        with op.batch_alter_table("local_mailbox_member") as batch:
            batch.add_column(sa.Column("rights", sa.String(32), nullable=False, server_default="lrswikxte"))
    tables = set(inspector.get_table_names())
    if "message_seen" not in tables:
        op.create_table(
            "message_seen",
            sa.Column("folder_id", sa.Integer(), sa.ForeignKey("folder.id", ondelete="CASCADE"), primary_key=True),
            sa.Column("member", sa.String(32), primary_key=True),
            sa.Column("uid", sa.BigInteger(), primary_key=True),
        )
        op.create_index("ix_message_seen_folder_uid", "message_seen", ["folder_id", "uid"])
    if "member_subscription" not in tables:
        op.create_table(
            "member_subscription",
            sa.Column("folder_id", sa.Integer(), sa.ForeignKey("folder.id", ondelete="CASCADE"), primary_key=True),
            sa.Column("member", sa.String(32), primary_key=True),
            sa.Column("subscribed", sa.Boolean(), nullable=False, server_default=sa.false()),
        )


def downgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    tables = set(inspector.get_table_names())
    for table in ("member_subscription", "message_seen"):
        if table in tables:
            op.drop_table(table)
    if "rights" in {c["name"] for c in inspector.get_columns("local_mailbox_member")}:
        with op.batch_alter_table("local_mailbox_member") as batch:
            batch.drop_column("rights")
