"""audit log: drop the index on ``audit_events.actor_user_id``, which no query uses

Revision ID: audit_actor_index_0001
Revises: audit_tile_levels_0001
Create Date: 2026-11-29 05:00:00

The log's one query by actor asks for ``actor_user_id = :a OR actor_agent_id = :a``
within an org, which neither engine answers from an index on one side of the ``OR``: it
walks the org's index in seq order (``EXPLAIN QUERY PLAN``). The index was pure write
cost on every append (an entry at a random place, a page more per commit).
"""

from __future__ import annotations

from alembic import op

revision = "audit_actor_index_0001"
down_revision = "audit_tile_levels_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_actor_user_id"))


def downgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_events_actor_user_id"), ["actor_user_id"], unique=False
        )
