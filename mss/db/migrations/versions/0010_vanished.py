"""`vanished`: the UIDs expunged from each folder and the MODSEQ of their expunge.

QRESYNC (RFC 7162 3.2.5, 3.2.6) tells a client that comes back which of the messages it
knew are gone since the mod-sequence it last saw (`VANISHED (EARLIER)`). Expunged rows are
deleted from `message`, so the store keeps one small row per expunged UID instead (a
tombstone); they go with their folder (ON DELETE CASCADE).

Idempotent like 0004 to 0009: SQLite runs DDL outside the migration's transaction.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "vanished" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "vanished",
        sa.Column("folder_id", sa.Integer(), sa.ForeignKey("folder.id", ondelete="CASCADE"), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("modseq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("folder_id", "uid"),
    )
    op.create_index("ix_vanished_folder_modseq", "vanished", ["folder_id", "modseq"])


def downgrade() -> None:
    if "vanished" in sa.inspect(op.get_bind()).get_table_names():
        op.drop_index("ix_vanished_folder_modseq", table_name="vanished")
        op.drop_table("vanished")
