"""analytics: individual leaderboard opt-ins and the drill-down trail

Revision ID: analytics_0001
Revises: 0001
Create Date: 2026-11-27 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "analytics_0001"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "analytics_optins",
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_analytics_optins_user_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_analytics_optins_org_id_orgs")
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_analytics_optins")),
    )
    op.create_index(
        op.f("ix_analytics_optins_org_id"), "analytics_optins", ["org_id"], unique=False
    )
    op.create_table(
        "analytics_views",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("viewer_id", sa.String(length=40), nullable=False),
        sa.Column("subject_id", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_analytics_views_org_id_orgs")
        ),
        sa.ForeignKeyConstraint(
            ["viewer_id"], ["users.id"], name=op.f("fk_analytics_views_viewer_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["users.id"], name=op.f("fk_analytics_views_subject_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analytics_views")),
    )
    for column in ("org_id", "viewer_id", "subject_id"):
        op.create_index(
            op.f(f"ix_analytics_views_{column}"), "analytics_views", [column], unique=False
        )


def downgrade() -> None:
    op.drop_table("analytics_views")
    op.drop_table("analytics_optins")
