"""integrity: findings and their review state

Revision ID: integrity_0001
Revises: 0001
Create Date: 2026-11-27 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "integrity_0001"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "integrity_findings",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("detector", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("strength", sa.Float(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("reviewed_by", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_integrity_findings_org_id_orgs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integrity_findings")),
    )
    op.create_index(
        "ix_integrity_findings_org_status",
        "integrity_findings",
        ["org_id", "status"],
        unique=False,
    )
    op.create_index(
        "ix_integrity_findings_org_subject",
        "integrity_findings",
        ["org_id", "subject", "detector"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_table("integrity_findings")
