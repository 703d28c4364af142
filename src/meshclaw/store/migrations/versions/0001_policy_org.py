"""each org's own Cedar policies, versioned: org_policy_versions

Before this, one install-wide text (``settings.policy_file``) applied to every org; it
stays, as the operator's install-wide policies. An org's own policies start empty
(version 0) until its platform admin saves some.

Revision ID: policy_org_0001
Revises: policy_0001
Create Date: 2026-12-05 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "policy_org_0001"
down_revision = "policy_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "org_policy_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_org_policy_versions_org_id_orgs")
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_org_policy_versions_created_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_org_policy_versions")),
        sa.UniqueConstraint("org_id", "version", name=op.f("uq_org_policy_versions_org_id")),
    )


def downgrade() -> None:
    op.drop_table("org_policy_versions")
