"""triggers: chat and mail watermarks and deliveries

Revision ID: triggers_inbound_0001
Revises: triggers_0001
Create Date: 2026-11-28 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "triggers_inbound_0001"
down_revision = "triggers_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbound_watermarks",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("agent_id", sa.String(length=40), nullable=False),
        sa.Column("trigger_key", sa.String(length=300), nullable=False),
        sa.Column("epoch", sa.String(length=64), nullable=False),
        sa.Column("position", sa.String(length=64), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_inbound_watermarks_agent_id_agents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_watermarks")),
        sa.UniqueConstraint("agent_id", "trigger_key", name=op.f("uq_inbound_watermarks_agent_id")),
    )
    op.create_index(op.f("ix_inbound_watermarks_agent_id"), "inbound_watermarks", ["agent_id"])
    op.create_table(
        "inbound_deliveries",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("agent_id", sa.String(length=40), nullable=False),
        sa.Column("trigger_key", sa.String(length=300), nullable=False),
        sa.Column("message_key", sa.String(length=200), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_inbound_deliveries_agent_id_agents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_deliveries")),
        sa.UniqueConstraint(
            "agent_id",
            "trigger_key",
            "message_key",
            name=op.f("uq_inbound_deliveries_agent_id"),
        ),
    )
    op.create_index(op.f("ix_inbound_deliveries_agent_id"), "inbound_deliveries", ["agent_id"])


def downgrade() -> None:
    op.drop_table("inbound_deliveries")
    op.drop_table("inbound_watermarks")
