"""audit log: the witness outbox (checkpoints sent to syslog and HTTP witnesses)

Revision ID: audit_witness_0001
Revises: audit_0001
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "audit_witness_0001"
down_revision = "audit_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_witness_sends",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("checkpoint_size", sa.BigInteger(), nullable=False),
        sa.Column("target", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("cosignature", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_witness_sends")),
        sa.UniqueConstraint(
            "checkpoint_size",
            "target",
            name=op.f("uq_audit_witness_sends_checkpoint_size"),
        ),
    )
    op.create_index(
        "ix_audit_witness_sends_status_due",
        "audit_witness_sends",
        ["status", "due_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_audit_witness_sends_status_due", table_name="audit_witness_sends")
    op.drop_table("audit_witness_sends")
