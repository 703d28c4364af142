"""outcomes: outcome records, beneficiary feedback, outcome type weights

Revision ID: outcomes_0001
Revises: 0001
Create Date: 2026-11-27 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "outcomes_0001"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outcomes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("team_id", sa.String(length=40), nullable=True),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("agent_id", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("step_id", sa.String(length=40), nullable=True),
        sa.Column("tool", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=63), nullable=False),
        sa.Column("ref", sa.String(length=500), nullable=False),
        sa.Column("beneficiaries", sa.JSON(), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("verification", sa.JSON(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("durability_due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("durability_checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("silence_accepts_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_outcomes_org_id_orgs")),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], name=op.f("fk_outcomes_team_id_teams")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_outcomes_user_id_users")),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_outcomes_agent_id_agents")
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_outcomes_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outcomes")),
        sa.UniqueConstraint("step_id", "type", name=op.f("uq_outcomes_step_id")),
    )
    op.create_index("ix_outcomes_org_created", "outcomes", ["org_id", "created_at"])
    for column in ("team_id", "user_id", "agent_id", "run_id", "state", "durability_due_at"):
        op.create_index(op.f(f"ix_outcomes_{column}"), "outcomes", [column], unique=False)
    op.create_table(
        "outcome_feedback",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("outcome_id", sa.String(length=40), nullable=False),
        sa.Column("by", sa.String(length=200), nullable=False),
        sa.Column("verdict", sa.String(length=20), nullable=False),
        sa.Column("via", sa.String(length=10), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_outcome_feedback_org_id_orgs")
        ),
        sa.ForeignKeyConstraint(
            ["outcome_id"], ["outcomes.id"], name=op.f("fk_outcome_feedback_outcome_id_outcomes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outcome_feedback")),
    )
    for column in ("org_id", "outcome_id"):
        op.create_index(
            op.f(f"ix_outcome_feedback_{column}"), "outcome_feedback", [column], unique=False
        )
    op.create_table(
        "outcome_type_weights",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=63), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("updated_by", sa.String(length=40), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_outcome_type_weights_org_id_orgs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outcome_type_weights")),
        sa.UniqueConstraint("org_id", "type", name=op.f("uq_outcome_type_weights_org_id")),
    )


def downgrade() -> None:
    op.drop_table("outcome_type_weights")
    op.drop_table("outcome_feedback")
    op.drop_table("outcomes")
