"""`folder.recent_uid`: the first UID no session has yet seen as \\Recent (RFC 3501 2.3.2).

A message is recent to the first session that selects its folder read-write after the
message arrived (or that has the folder selected when it arrives); that session claims every
UID from `recent_uid` up, moving `recent_uid` to `uidnext` in one write (mss.store
`claim_recent`). Folders that exist when this migration runs start with nothing recent.

Idempotent like 0004 to 0008: SQLite runs DDL outside the migration's transaction.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if "recent_uid" not in {c["name"] for c in sa.inspect(bind).get_columns("folder")}:
        op.add_column("folder", sa.Column("recent_uid", sa.BigInteger(), nullable=False, server_default="1"))
        op.execute("UPDATE folder SET recent_uid = uidnext")


def downgrade() -> None:
    # Not batch mode: on SQLite it would re-create `folder`, and the messages' ON DELETE
    # CASCADE would empty every folder. SQLite has DROP COLUMN since 3.35.
    if "recent_uid" in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("folder")}:
        op.execute("ALTER TABLE folder DROP COLUMN recent_uid")
