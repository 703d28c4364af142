"""org prices: effective-dated prices a platform admin adds to the org's price table

Revision ID: org_prices_0001
Revises: metering_0001
Create Date: 2026-11-28 21:40:00

Append-only: a price change is a new row with a later ``effective_from``; rows are never
updated or deleted, so re-pricing history always finds the price of the day.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "org_prices_0001"
down_revision = "metering_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "org_prices",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("input", sa.String(length=40), nullable=False),
        sa.Column("output", sa.String(length=40), nullable=False),
        sa.Column("cached_input", sa.String(length=40), nullable=True),
        sa.Column("cache_write", sa.String(length=40), nullable=True),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_org_prices_org_id_orgs")),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_org_prices_created_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_org_prices")),
    )
    op.create_index(
        "ix_org_prices_org_created", "org_prices", ["org_id", "created_at", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_org_prices_org_created", table_name="org_prices")
    op.drop_table("org_prices")
