"""National directory: mailbox and activity extractions, trust-space whitelist, import log.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Byte ordering on PostgreSQL so that prefix searches on the folded name are range scans
# whatever the database locale; SQLite compares bytes already.
_NAME_KEY = sa.String(200).with_variant(sa.String(200, collation="C"), "postgresql")
_ADDRESS_KEY = sa.String(320).with_variant(sa.String(320, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "national_mailbox",
        sa.Column("address", _ADDRESS_KEY, primary_key=True),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("pp_type", sa.String(4), nullable=False),
        sa.Column("pp_id", sa.String(32), nullable=False),
        sa.Column("idnat", sa.String(32), nullable=False),
        sa.Column("structure_type", sa.String(4), nullable=False),
        sa.Column("structure_id", sa.String(32), nullable=False),
        sa.Column("service", sa.Text(), nullable=False),
        sa.Column("civility", sa.String(16), nullable=False),
        sa.Column("last_name", sa.Text(), nullable=False),
        sa.Column("first_name", sa.Text(), nullable=False),
        sa.Column("category_code", sa.String(8), nullable=False),
        sa.Column("category_label", sa.Text(), nullable=False),
        sa.Column("profession_code", sa.String(8), nullable=False),
        sa.Column("profession_label", sa.Text(), nullable=False),
        sa.Column("specialty_code", sa.String(16), nullable=False),
        sa.Column("specialty_label", sa.Text(), nullable=False),
        sa.Column("dematerialisation", sa.Boolean(), nullable=False),
        sa.Column("org_name", sa.Text(), nullable=False),
        sa.Column("org_trade_name", sa.Text(), nullable=False),
        sa.Column("addr_l2", sa.Text(), nullable=False),
        sa.Column("addr_l3", sa.Text(), nullable=False),
        sa.Column("addr_l4_number", sa.Text(), nullable=False),
        sa.Column("addr_l4_repeat", sa.Text(), nullable=False),
        sa.Column("addr_l4_street_type", sa.Text(), nullable=False),
        sa.Column("addr_l4_street", sa.Text(), nullable=False),
        sa.Column("addr_l5", sa.Text(), nullable=False),
        sa.Column("addr_l6", sa.Text(), nullable=False),
        sa.Column("postcode", sa.String(16), nullable=False),
        sa.Column("department", sa.String(8), nullable=False),
        sa.Column("country", sa.Text(), nullable=False),
        sa.Column("red_list", sa.Boolean(), nullable=False),
        sa.Column("name_key", _NAME_KEY, nullable=False),
        sa.Column("row_hash", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_national_mailbox_department", "national_mailbox", ["department"])
    op.create_index("ix_national_mailbox_idnat", "national_mailbox", ["idnat"])
    op.create_index("ix_national_mailbox_name_key", "national_mailbox", ["name_key"])
    op.create_index("ix_national_mailbox_postcode", "national_mailbox", ["postcode"])
    op.create_index("ix_national_mailbox_profession", "national_mailbox", ["profession_code"])
    op.create_index("ix_national_mailbox_specialty", "national_mailbox", ["specialty_code"])
    op.create_index("ix_national_mailbox_structure_id", "national_mailbox", ["structure_id"])
    op.create_index("ix_national_mailbox_type", "national_mailbox", ["type"])
    op.create_table(
        "national_activity",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("pp_type", sa.String(4), nullable=False),
        sa.Column("pp_id", sa.String(32), nullable=False),
        sa.Column("idnat", sa.String(32), nullable=False),
        sa.Column("civility_code", sa.String(16), nullable=False),
        sa.Column("civility_label", sa.Text(), nullable=False),
        sa.Column("last_name", sa.Text(), nullable=False),
        sa.Column("first_name", sa.Text(), nullable=False),
        sa.Column("profession_code", sa.String(8), nullable=False),
        sa.Column("profession_label", sa.Text(), nullable=False),
        sa.Column("category_code", sa.String(8), nullable=False),
        sa.Column("specialty_code", sa.String(16), nullable=False),
        sa.Column("specialty_label", sa.Text(), nullable=False),
        sa.Column("mode_code", sa.String(8), nullable=False),
        sa.Column("siret", sa.String(32), nullable=False),
        sa.Column("finess", sa.String(32), nullable=False),
        sa.Column("structure_tech_id", sa.String(64), nullable=False),
        sa.Column("org_name", sa.Text(), nullable=False),
        sa.Column("postcode", sa.String(16), nullable=False),
        sa.Column("commune_code", sa.String(16), nullable=False),
        sa.Column("commune_label", sa.Text(), nullable=False),
        sa.Column("phone", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("department", sa.String(8), nullable=False),
        sa.Column("authority", sa.Text(), nullable=False),
        sa.Column("extra", sa.Text(), nullable=False),
        sa.Column("name_key", _NAME_KEY, nullable=False),
        sa.Column("row_hash", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_national_activity_idnat", "national_activity", ["idnat"])
    op.create_index("ix_national_activity_name_key", "national_activity", ["name_key"])
    op.create_index("ix_national_activity_structure", "national_activity", ["structure_tech_id"])
    op.create_table(
        "trust_domain",
        sa.Column("domain", sa.String(253), primary_key=True),
        sa.Column("label", sa.Text(), nullable=False),
    )
    op.create_table(
        "directory_import",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows_read", sa.Integer(), nullable=False),
        sa.Column("added", sa.Integer(), nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False),
        sa.Column("removed", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    for t in ("directory_import", "trust_domain", "national_activity", "national_mailbox"):
        op.drop_table(t)
