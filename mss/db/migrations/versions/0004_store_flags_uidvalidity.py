"""Store model: system flags as columns, keywords in their own table, UIDVALIDITY from a
counter; the unused `mail_event` table goes.

Existing data is converted: each message's space-joined `flags` text becomes its five
booleans and its keyword rows; the counter starts above every UIDVALIDITY already handed
out, so no folder created from now on can get a smaller one (RFC 9051 2.3.1.1).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_SYSTEM = {"\\Seen": "seen", "\\Answered": "answered", "\\Flagged": "flagged", "\\Deleted": "deleted", "\\Draft": "draft"}
_CHUNK = 2000


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "store_counter",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    highest = bind.execute(sa.text("SELECT COALESCE(MAX(uidvalidity), 0) FROM folder")).scalar_one()
    bind.execute(sa.text("INSERT INTO store_counter (name, value) VALUES ('uidvalidity', :v)"), {"v": int(highest)})

    for column in _SYSTEM.values():
        op.add_column("message", sa.Column(column, sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "message_keyword",
        sa.Column("message_id", _BIGID, sa.ForeignKey("message.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("keyword", sa.String(255), primary_key=True),
    )

    message = sa.table(
        "message", sa.column("id", sa.Integer), sa.column("flags", sa.Text), *(sa.column(c, sa.Boolean) for c in _SYSTEM.values())
    )
    keyword = sa.table("message_keyword", sa.column("message_id", sa.Integer), sa.column("keyword", sa.String))
    last = 0
    while True:
        rows = bind.execute(
            sa.select(message.c.id, message.c.flags)
            .where(message.c.id > last, message.c.flags != "")
            .order_by(message.c.id)
            .limit(_CHUNK)
        ).all()
        if not rows:
            break
        last = rows[-1][0]
        updates, keywords = [], []
        for row_id, text in rows:
            flags = set(text.split())
            values = {column: name in flags for name, column in _SYSTEM.items()}
            if any(values.values()):
                updates.append({"row_id": row_id, **values})
            keywords += [
                {"message_id": row_id, "keyword": f[:255]}
                for f in sorted(flags)
                if f not in _SYSTEM and not f.startswith("\\")
            ]
        if updates:
            bind.execute(
                message.update()
                .where(message.c.id == sa.bindparam("row_id"))
                .values({c: sa.bindparam(c) for c in _SYSTEM.values()}),
                updates,
            )
        if keywords:
            bind.execute(keyword.insert(), keywords)
    # SQLite 3.35+ and PostgreSQL both drop a plain column in place (no table copy, which on
    # SQLite would cascade-delete the keyword rows through the new foreign key).
    op.execute("ALTER TABLE message DROP COLUMN flags")
    op.drop_index("ix_mail_event_folder_id", table_name="mail_event")
    op.drop_table("mail_event")


def downgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "mail_event",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("folder_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_mail_event_folder_id", "mail_event", ["folder_id"])
    op.add_column("message", sa.Column("flags", sa.Text(), nullable=False, server_default=""))
    cols = ", ".join(_SYSTEM.values())
    rows = bind.execute(sa.text(f"SELECT id, {cols} FROM message")).all()
    kw: dict[int, list[str]] = {}
    for mid, word in bind.execute(sa.text("SELECT message_id, keyword FROM message_keyword")).all():
        kw.setdefault(mid, []).append(word)
    names = list(_SYSTEM)
    for row in rows:
        flags = [names[i] for i, on in enumerate(row[1:]) if on] + kw.get(row[0], [])
        if flags:
            bind.execute(
                sa.text("UPDATE message SET flags = :f WHERE id = :i"), {"f": " ".join(sorted(flags)), "i": row[0]}
            )
    op.drop_table("message_keyword")
    for column in _SYSTEM.values():
        op.execute(f"ALTER TABLE message DROP COLUMN {column}")
    op.drop_table("store_counter")
