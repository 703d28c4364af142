"""triggers: chat and mail messages whose run could not be created are retried

Revision ID: triggers_retries_0001
Revises: triggers_inbound_0001
Create Date: 2026-11-28 02:00:00

A message whose run could not be created is kept as a ``pending`` delivery row (with the
run's input) and retried with back-off, so it no longer holds its trigger's later
messages back; it ends ``started`` or ``abandoned``. Rows from before are runs started,
or refusals (no run).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "triggers_retries_0001"
down_revision = "triggers_inbound_0001"
branch_labels = None
depends_on = None

COLUMNS = ("status", "attempts", "next_attempt_at", "error", "run_input", "details")


def upgrade() -> None:
    op.add_column(
        "inbound_deliveries",
        sa.Column("status", sa.String(length=16), server_default="started", nullable=False),
    )
    op.add_column(
        "inbound_deliveries",
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column(
        "inbound_deliveries",
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column("inbound_deliveries", sa.Column("error", sa.String(length=300), nullable=True))
    op.add_column("inbound_deliveries", sa.Column("run_input", sa.Text(), nullable=True))
    op.add_column("inbound_deliveries", sa.Column("details", sa.JSON(), nullable=True))
    op.create_index(
        op.f("ix_inbound_deliveries_next_attempt_at"), "inbound_deliveries", ["next_attempt_at"]
    )
    op.execute("UPDATE inbound_deliveries SET status = 'refused' WHERE run_id IS NULL")


def downgrade() -> None:
    # Pending rows stay as rows without a run: the code before never reads them again.
    op.drop_index(op.f("ix_inbound_deliveries_next_attempt_at"), table_name="inbound_deliveries")
    with op.batch_alter_table("inbound_deliveries") as batch:
        for column in COLUMNS:
            batch.drop_column(column)
