"""triggers: the Matrix application-service transactions processed, by id

Revision ID: triggers_matrix_txn_0001
Revises: 0001
Create Date: 2026-11-29 10:00:00

A homeserver retries a transaction with the same ``txnId`` until it is answered 200; a row
here answers it at once. Its own branch off the base: the table refers to nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "triggers_matrix_txn_0001"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "matrix_transactions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("connector", sa.String(length=63), nullable=False),
        sa.Column("txn_id", sa.String(length=200), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("resends", sa.Integer(), server_default="0", nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_matrix_transactions")),
        sa.UniqueConstraint(
            "org_id", "connector", "txn_id", name=op.f("uq_matrix_transactions_org_id")
        ),
    )
    op.create_index(
        op.f("ix_matrix_transactions_received_at"), "matrix_transactions", ["received_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_matrix_transactions_received_at"), table_name="matrix_transactions")
    op.drop_table("matrix_transactions")
