"""Patient portal: sessions, shared secrets, throttle counters, two-step verification.

Idempotent like 0004: SQLite runs DDL outside the migration's transaction, so a run that
failed half-way may have left some of these behind; each step checks before it acts.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_TOTP_COLUMNS = (
    ("totp_secret", sa.String(64)),
    ("totp_pending", sa.String(64)),
    ("totp_last_step", sa.BigInteger()),
    ("totp_recovery", sa.Text()),
)


def upgrade() -> None:
    bind = op.get_bind()
    tables = set(sa.inspect(bind).get_table_names())
    have = {c["name"] for c in sa.inspect(bind).get_columns("patient_space")}
    for name, type_ in _TOTP_COLUMNS:
        if name not in have:
            # Plain ADD COLUMN (no batch copy of the table: other tables refer to it).
            op.add_column("patient_space", sa.Column(name, type_))
    if "portal_session" not in tables:
        op.create_table(
            "portal_session",
            sa.Column("id_hash", sa.String(64), primary_key=True),
            sa.Column("ins", sa.String(15), sa.ForeignKey("patient_space.ins", ondelete="CASCADE"), nullable=False),
            sa.Column("pending_totp", sa.Boolean(), nullable=False, server_default=sa.false()),
            sa.Column("created_at", _TS, nullable=False),
            sa.Column("last_seen_at", _TS, nullable=False),
            sa.Column("idle_expires_at", _TS, nullable=False),
            sa.Column("expires_at", _TS, nullable=False),
            sa.Column("client", sa.String(64), nullable=False, server_default=""),
            sa.Column("user_agent", sa.String(256), nullable=False, server_default=""),
            sa.Column("local_key", sa.LargeBinary()),
        )
    elif "local_key" not in {c["name"] for c in sa.inspect(bind).get_columns("portal_session")}:
        # A database migrated by an earlier build of this (unreleased) revision.
        op.add_column("portal_session", sa.Column("local_key", sa.LargeBinary()))
    indexes = {i["name"] for i in sa.inspect(bind).get_indexes("portal_session")}
    if "ix_portal_session_ins" not in indexes:
        op.create_index("ix_portal_session_ins", "portal_session", ["ins"])
    if "ix_portal_session_idle_expires_at" not in indexes:
        op.create_index("ix_portal_session_idle_expires_at", "portal_session", ["idle_expires_at"])
    if "portal_secret" not in tables:
        op.create_table(
            "portal_secret",
            sa.Column("name", sa.String(32), primary_key=True),
            sa.Column("value", sa.LargeBinary(), nullable=False),
        )
    if "portal_throttle" not in tables:
        op.create_table(
            "portal_throttle",
            sa.Column("key", sa.String(255), primary_key=True),
            sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
            sa.Column("last_failure_at", _TS, nullable=False),
            sa.Column("blocked_until", _TS),
        )
    if "ix_portal_throttle_last_failure_at" not in {i["name"] for i in sa.inspect(bind).get_indexes("portal_throttle")}:
        op.create_index("ix_portal_throttle_last_failure_at", "portal_throttle", ["last_failure_at"])


def downgrade() -> None:
    bind = op.get_bind()
    tables = set(sa.inspect(bind).get_table_names())
    for table in ("portal_throttle", "portal_secret", "portal_session"):
        if table in tables:
            op.drop_table(table)
    have = {c["name"] for c in sa.inspect(bind).get_columns("patient_space")}
    for name, _ in _TOTP_COLUMNS:
        if name in have:
            # ALTER TABLE ... DROP COLUMN (SQLite 3.35+): never a batch copy of patient_space,
            # whose re-creation would cascade to the rows that refer to it.
            op.execute(sa.text(f"ALTER TABLE patient_space DROP COLUMN {name}"))
