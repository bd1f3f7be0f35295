"""Identity: per-mailbox application passwords (Argon2id hashes only).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "app_password",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "address", sa.String(320), sa.ForeignKey("local_mailbox.address", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_app_password_address", "app_password", ["address"])


def downgrade() -> None:
    op.drop_index("ix_app_password_address", table_name="app_password")
    op.drop_table("app_password")
