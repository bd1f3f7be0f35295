"""Store model: system flags as columns, keywords in their own table, UIDVALIDITY from a
counter; the unused `mail_event` table goes.

Existing data is converted: each message's space-joined `flags` text becomes its five
booleans and its keyword rows (keywords cut to 255 characters, duplicates merged). Each
mailbox gets its own UIDVALIDITY counter, starting above every value the old time-based
scheme (milliseconds modulo 4,000,000,000) can have handed out, deleted folders included, so
no folder created from now on can get a smaller one (RFC 9051 2.3.1.1).

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
_SYSTEM = {
    "\\Seen": "seen",
    "\\Answered": "answered",
    "\\Flagged": "flagged",
    "\\Deleted": "deleted",
    "\\Draft": "draft",
}
_CHUNK = 2000
_OLD_MODULUS = 4_000_000_000  # 0001-0003: uidvalidity = milliseconds % 4e9


def upgrade() -> None:
    bind = op.get_bind()
    # SQLite runs DDL outside the migration's transaction: a run that failed half-way may have
    # left this table behind; start again from it rather than fail for ever.
    if "store_counter" not in sa.inspect(bind).get_table_names():
        op.create_table(
            "store_counter",
            sa.Column("name", sa.String(340), primary_key=True),
            sa.Column("value", sa.BigInteger(), nullable=False),
        )
    bind.execute(sa.text("DELETE FROM store_counter"))
    used = bind.execute(sa.text("SELECT COUNT(*) FROM folder")).scalar_one()
    floor = _OLD_MODULUS if used else 0
    bind.execute(sa.text("INSERT INTO store_counter (name, value) VALUES ('uidvalidity-floor', :v)"), {"v": floor})

    have = {c["name"] for c in sa.inspect(bind).get_columns("message")}
    for column in _SYSTEM.values():
        if column not in have:
            op.add_column("message", sa.Column(column, sa.Boolean(), nullable=False, server_default=sa.false()))
    if "message_keyword" in sa.inspect(bind).get_table_names():
        bind.execute(sa.text("DELETE FROM message_keyword"))  # a half-done earlier run
    else:
        op.create_table(
            "message_keyword",
            sa.Column("message_id", _BIGID, sa.ForeignKey("message.id", ondelete="CASCADE"), primary_key=True),
            sa.Column("keyword", sa.String(255), primary_key=True),
        )

    message = sa.table(
        "message",
        sa.column("id", sa.Integer),
        sa.column("flags", sa.Text),
        *(sa.column(c, sa.Boolean) for c in _SYSTEM.values()),
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
            words = {f[:255] for f in flags if f not in _SYSTEM and not f.startswith("\\")}
            keywords += [{"message_id": row_id, "keyword": w} for w in sorted(words)]
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
    rows = bind.execute(sa.text(f"SELECT id, {cols} FROM message")).all()  # noqa: S608 - fixed column names
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
