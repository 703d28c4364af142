"""runs: when the ended run's outcomes were recorded (``outcomes_settled_at``)

Revision ID: runs_outcomes_settled_0001
Revises: query_indexes_0001
Create Date: 2026-11-28 12:00:00

A run's end is written before its outcomes are verified and recorded, so a client that
saw ``succeeded`` could read no outcomes yet. ``outcomes_settled_at`` says when that
recording finished (``outcomes_error``: why it failed); a partial index keeps the few
unsettled runs at hand for the sweep that settles runs left behind by a crash. Runs that
ended before this revision count as settled at their end: the code before recorded their
outcomes then, or never will. After ``query_indexes_0001``, the last change to ``runs``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "runs_outcomes_settled_0001"
down_revision = "query_indexes_0001"
branch_labels = None
depends_on = None

_UNSETTLED = sa.text("outcomes_settled_at IS NULL")


def upgrade() -> None:
    # Nullable columns: a plain ADD COLUMN, no table rebuild on SQLite.
    op.add_column("runs", sa.Column("outcomes_settled_at", sa.DateTime(timezone=True)))
    op.add_column("runs", sa.Column("outcomes_error", sa.Text()))
    op.execute("UPDATE runs SET outcomes_settled_at = ended_at WHERE ended_at IS NOT NULL")
    op.create_index(
        "ix_runs_outcomes_unsettled",
        "runs",
        ["ended_at"],
        sqlite_where=_UNSETTLED,
        postgresql_where=_UNSETTLED,
    )


def downgrade() -> None:
    op.drop_index("ix_runs_outcomes_unsettled", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("outcomes_error")
        batch.drop_column("outcomes_settled_at")
