"""query indexes: the newest runs of an org or of one person, in index order

Revision ID: query_indexes_0001
Revises: workers_0001
Create Date: 2026-11-27 16:00:00

``RunService.find`` (``GET /v1/runs``, the dashboard's run lists) asks for the newest runs
of the org, or of one owner in it, ``ORDER BY created_at DESC, id DESC LIMIT n``. With only
single-column indexes every matching run was read and sorted first (about 100 ms per
page at 100 k runs); these let the database walk the newest entries and stop at the limit.
After ``workers_0001``, which rebuilds ``runs`` on SQLite.
"""

from __future__ import annotations

from alembic import op

revision = "query_indexes_0001"
down_revision = "workers_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_org_user_created", "runs", ["org_id", "user_id", "created_at", "id"])
    op.create_index("ix_runs_org_created", "runs", ["org_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_runs_org_created", table_name="runs")
    op.drop_index("ix_runs_org_user_created", table_name="runs")
