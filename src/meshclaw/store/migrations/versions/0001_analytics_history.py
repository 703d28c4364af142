"""analytics history: feedback of an org in time order, for incremental board reads

Revision ID: analytics_history_0001
Revises: outcomes_0001
Create Date: 2026-11-27 18:30:00

``analytics._history`` asks, on every board view, how many feedback rows an org has and
when the newest was written (``count(*), max(created_at) WHERE org_id = ?``); with only
the single-column ``org_id`` index every row of the org was fetched to find the newest.
Outcomes already have ``ix_outcomes_org_created``.
"""

from __future__ import annotations

from alembic import op

revision = "analytics_history_0001"
down_revision = "outcomes_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_outcome_feedback_org_created", "outcome_feedback", ["org_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_outcome_feedback_org_created", table_name="outcome_feedback")
