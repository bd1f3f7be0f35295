"""Audit trail: the hash-chained, append-only `audit_event` table and its `audit_head` row.

Triggers refuse UPDATE and DELETE of `audit_event` (and TRUNCATE on PostgreSQL): the
application never does either, so a change must come from someone who drops the triggers
first, which `mss audit verify` then detects from the chain.

Idempotent like 0004 and 0006: SQLite runs DDL outside the migration's transaction, so a run
that failed half-way may have left some of this behind; each step checks before it acts.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

#: `prev_hash` of seq 1 (mss.audit.GENESIS).
_GENESIS = "0" * 64

_SQLITE_TRIGGERS = {
    "audit_event_no_update": "BEFORE UPDATE ON audit_event",
    "audit_event_no_delete": "BEFORE DELETE ON audit_event",
}


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    tables = set(inspector.get_table_names())
    if "audit_event" not in tables:
        op.create_table(
            "audit_event",
            sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
            sa.Column("at", sa.String(32), nullable=False),
            sa.Column("type", sa.String(64), nullable=False),
            sa.Column("actor", sa.String(400), nullable=False),
            sa.Column("subject", sa.String(400), nullable=False),
            sa.Column("outcome", sa.String(16), nullable=False),
            sa.Column("fields", sa.Text(), nullable=False),
            sa.Column("prev_hash", sa.String(64), nullable=False),
            sa.Column("hash", sa.String(64), nullable=False),
        )
    if "ix_audit_event_at" not in {i["name"] for i in sa.inspect(bind).get_indexes("audit_event")}:
        op.create_index("ix_audit_event_at", "audit_event", ["at"])
    if "audit_head" not in tables:
        op.create_table(
            "audit_head",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
            sa.Column("seq", sa.BigInteger(), nullable=False),
            sa.Column("hash", sa.String(64), nullable=False),
        )
    if bind.execute(sa.text("SELECT count(*) FROM audit_head WHERE id = 1")).scalar_one() == 0:
        bind.execute(sa.text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :g)"), {"g": _GENESIS})
    if bind.dialect.name == "sqlite":
        have = set(
            bind.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_event'"))
            .scalars()
            .all()
        )
        for name, when in _SQLITE_TRIGGERS.items():
            if name not in have:
                op.execute(
                    sa.text(
                        f"CREATE TRIGGER {name} {when} BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END"
                    )
                )
    else:
        op.execute(
            sa.text(
                "CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'audit_event is append-only'; END $$"
            )
        )
        op.execute(sa.text("DROP TRIGGER IF EXISTS audit_event_no_change ON audit_event"))
        op.execute(
            sa.text(
                "CREATE TRIGGER audit_event_no_change BEFORE UPDATE OR DELETE ON audit_event "
                "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()"
            )
        )
        op.execute(sa.text("DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_event"))
        op.execute(
            sa.text(
                "CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event "
                "FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only()"
            )
        )


def downgrade() -> None:
    bind = op.get_bind()
    tables = set(sa.inspect(bind).get_table_names())
    if bind.dialect.name != "sqlite" and "audit_event" in tables:
        op.execute(sa.text("DROP TRIGGER IF EXISTS audit_event_no_change ON audit_event"))
        op.execute(sa.text("DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_event"))
    for table in ("audit_head", "audit_event"):
        if table in tables:
            op.drop_table(table)  # SQLite drops a table's triggers with it
    if bind.dialect.name != "sqlite":
        op.execute(sa.text("DROP FUNCTION IF EXISTS audit_event_append_only()"))
