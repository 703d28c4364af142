"""triggers: scheduler leader leases, cron firings, webhook nonces

Revision ID: triggers_0001
Revises: 0001
Create Date: 2026-11-27 12:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "triggers_0001"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scheduler_leases",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("watermark", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scheduler_leases")),
    )
    op.create_table(
        "cron_firings",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("agent_id", sa.String(length=40), nullable=False),
        sa.Column("trigger_key", sa.String(length=200), nullable=False),
        sa.Column("fire_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_cron_firings_agent_id_agents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cron_firings")),
        sa.UniqueConstraint(
            "agent_id", "trigger_key", "fire_at", name=op.f("uq_cron_firings_agent_id")
        ),
    )
    op.create_index(op.f("ix_cron_firings_agent_id"), "cron_firings", ["agent_id"])
    op.create_table(
        "webhook_nonces",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("agent_id", sa.String(length=40), nullable=False),
        sa.Column("nonce", sa.String(length=200), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_webhook_nonces_agent_id_agents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_nonces")),
        sa.UniqueConstraint("agent_id", "nonce", name=op.f("uq_webhook_nonces_agent_id")),
    )
    op.create_index(op.f("ix_webhook_nonces_agent_id"), "webhook_nonces", ["agent_id"])
    op.create_index(op.f("ix_webhook_nonces_seen_at"), "webhook_nonces", ["seen_at"])


def downgrade() -> None:
    op.drop_table("webhook_nonces")
    op.drop_table("cron_firings")
    op.drop_table("scheduler_leases")
