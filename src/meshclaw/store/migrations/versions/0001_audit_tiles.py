"""audit log: tile roots (perfect subtrees of 256 leaves), filled from the existing log

Revision ID: audit_tiles_0001
Revises: audit_witness_0001
Create Date: 2026-11-28 02:00:00
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "audit_tiles_0001"
down_revision = "audit_witness_0001"
branch_labels = None
depends_on = None

TILE = 256  # audit.merkle.TILE when this migration was written; the schema fixes it


def _tile_root(leaves: list[bytes]) -> bytes:
    """The root of a perfect subtree over ``TILE`` leaf hashes (RFC 9162 interior nodes)."""
    level = leaves
    while len(level) > 1:
        level = [
            hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
            for i in range(0, len(level), 2)
        ]
    return level[0]


def upgrade() -> None:
    op.create_table(
        "audit_tiles",
        sa.Column("tile", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("tile", name=op.f("pk_audit_tiles")),
    )
    conn = op.get_bind()
    leaves = sa.table("audit_events", sa.column("seq", sa.BigInteger), sa.column("leaf_hash"))
    tiles = sa.table("audit_tiles", sa.column("tile", sa.BigInteger), sa.column("root"))
    rows = conn.execute(
        sa.select(leaves.c.leaf_hash).order_by(leaves.c.seq).execution_options(yield_per=10_000)
    )
    batch: list[bytes] = []
    done: list[dict[str, object]] = []
    for (leaf_hash,) in rows:
        batch.append(bytes.fromhex(leaf_hash))
        if len(batch) == TILE:
            done.append({"tile": len(done), "root": _tile_root(batch).hex()})
            batch = []
    rows.close()
    for start in range(0, len(done), 1000):
        conn.execute(tiles.insert(), done[start : start + 1000])


def downgrade() -> None:
    op.drop_table("audit_tiles")
