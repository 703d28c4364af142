"""audit log: leaf hashes, head row and signed checkpoints

Revision ID: audit_0001
Revises: 0001
Create Date: 2026-11-27 12:30:00

Existing ``audit_events`` rows (written before the log was hashed) are renumbered densely
in their original order and hashed, so the log is one tree from its first record.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "audit_0001"
down_revision = "0001"
branch_labels = None
depends_on = None


def _backfill() -> None:
    from meshclaw.audit.canonical import Body, Header, body_hash, format_ts, new_salt
    from meshclaw.audit.merkle import Frontier
    from meshclaw.clock import as_utc, utcnow

    bind = op.get_bind()
    events = sa.table(
        "audit_events",
        sa.column("seq", sa.Integer),
        sa.column("id", sa.String),
        sa.column("ts", sa.DateTime(timezone=True)),
        sa.column("org_id", sa.String),
        sa.column("actor_user_id", sa.String),
        sa.column("actor_agent_id", sa.String),
        sa.column("action", sa.String),
        sa.column("resource", sa.String),
        sa.column("outcome", sa.String),
        sa.column("details", sa.JSON),
        sa.column("salt", sa.String),
        sa.column("body_sha256", sa.String),
        sa.column("leaf_hash", sa.String),
    )
    head = sa.table(
        "audit_head",
        sa.column("id", sa.Integer),
        sa.column("size", sa.BigInteger),
        sa.column("frontier", sa.JSON),
        sa.column("root", sa.String),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    rows: list[Any] = list(bind.execute(sa.select(events).order_by(events.c.seq)))
    frontier = Frontier()
    for new_seq, row in enumerate(rows, start=1):
        salt = new_salt()
        body = Body(
            actor_user_id=row.actor_user_id,
            actor_agent_id=row.actor_agent_id,
            resource=row.resource,
            details=row.details or {},
            salt=salt,
        )
        digest = body_hash(body)
        header = Header(
            seq=new_seq,
            id=row.id,
            ts=format_ts(as_utc(row.ts)),
            org_id=row.org_id,
            action=row.action,
            outcome=row.outcome,
            body_sha256=digest,
        )
        leaf = header.leaf_hash()
        frontier.append(leaf)
        # Dense renumbering only ever moves a row down, onto a free number.
        bind.execute(
            events.update()
            .where(events.c.seq == row.seq)
            .values(seq=new_seq, salt=salt, body_sha256=digest, leaf_hash=leaf.hex())
        )
    bind.execute(
        head.insert().values(
            id=1,
            size=frontier.size,
            frontier=frontier.to_hex(),
            root=frontier.root().hex(),
            updated_at=utcnow(),
        )
    )


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("salt", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("body_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("leaf_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("redacted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_audit_events_actor_user_id"), ["actor_user_id"], unique=False
        )

    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("frontier", sa.JSON(), nullable=False),
        sa.Column("root", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.String(length=64), nullable=False),
        sa.Column("origin", sa.String(length=200), nullable=False),
        sa.Column("key_id", sa.String(length=8), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
        sa.UniqueConstraint("size", name=op.f("uq_audit_checkpoints_size")),
    )

    _backfill()

    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.alter_column("body_sha256", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("leaf_hash", existing_type=sa.String(length=64), nullable=False)


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_head")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_actor_user_id"))
        batch_op.drop_column("redacted_at")
        batch_op.drop_column("leaf_hash")
        batch_op.drop_column("body_sha256")
        batch_op.drop_column("salt")
