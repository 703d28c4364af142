"""metering: budgets and rate limits with their live counters

Revision ID: metering_0001
Revises: 0001
Create Date: 2026-11-27 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "metering_0001"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column("scope_id", sa.String(length=40), nullable=False),
        sa.Column("metric", sa.String(length=10), nullable=False),
        sa.Column("period", sa.String(length=10), nullable=False),
        sa.Column("hard_cap", sa.BigInteger(), nullable=True),
        sa.Column("soft_cap", sa.BigInteger(), nullable=True),
        sa.Column("created_by", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_budgets_org_id_orgs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budgets")),
        sa.UniqueConstraint(
            "org_id", "scope", "scope_id", "metric", "period", name=op.f("uq_budgets_org_id")
        ),
    )
    op.create_index(op.f("ix_budgets_org_id"), "budgets", ["org_id"], unique=False)
    op.create_table(
        "budget_counters",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("budget_id", sa.String(length=40), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("spent", sa.BigInteger(), nullable=False),
        sa.Column("reserved", sa.BigInteger(), nullable=False),
        sa.Column("soft_alerted", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["budget_id"],
            ["budgets.id"],
            name=op.f("fk_budget_counters_budget_id_budgets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_counters")),
        sa.UniqueConstraint("budget_id", "window_start", name=op.f("uq_budget_counters_budget_id")),
    )
    op.create_index("ix_budget_counters_window", "budget_counters", ["window_start"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_budget_counters_window", table_name="budget_counters")
    op.drop_table("budget_counters")
    op.drop_index(op.f("ix_budgets_org_id"), table_name="budgets")
    op.drop_table("budgets")
