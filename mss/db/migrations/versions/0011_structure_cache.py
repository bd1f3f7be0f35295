"""`message.structure`: what a front end derived once from a stored message's clear outer
structure (IMAP's ENVELOPE and BODYSTRUCTURE), kept so it is not derived again.

The value is opaque to the core and a pure function of the stored bytes, which never change
for a (folder, UID): it is filled by the first FETCH that needs it, copied with the message
(COPY, MOVE), and may be dropped at any time (NULL: derive it again). Like Dovecot's
`dovecot.index.cache`, it is an index, not data: nothing the operator could not read already
(the outer headers are clear), and never anything from inside the ciphertext.

Idempotent like 0004 to 0010: SQLite runs DDL outside the migration's transaction.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "structure" not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("message")}:
        op.add_column("message", sa.Column("structure", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    # Not batch mode (see 0009): SQLite has DROP COLUMN since 3.35.
    if "structure" in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("message")}:
        op.execute("ALTER TABLE message DROP COLUMN structure")
