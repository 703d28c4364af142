"""audit log: tiles of every level (level 1 = 256 level-0 tiles, ...), filled for an
existing log

Revision ID: audit_tile_levels_0001
Revises: audit_tiles_0001
Create Date: 2026-11-28 05:00:00

The existing rows become level 0 unchanged. Higher levels are computed in one pass over
the leaf hashes (as ``audit_tiles_0001`` computed level 0), not from the stored level-0
roots, so a level-0 row changed outside the log does not spread upwards.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "audit_tile_levels_0001"
down_revision = "audit_tiles_0001"
branch_labels = None
depends_on = None

TILE = 256  # audit.merkle.TILE when this migration was written; the schema fixes it


def _root(hashes: list[bytes]) -> bytes:
    """The root of a perfect subtree over ``TILE`` hashes (RFC 9162 interior nodes)."""
    level = hashes
    while len(level) > 1:
        level = [
            hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
            for i in range(0, len(level), 2)
        ]
    return level[0]


def _level_zero(conn: sa.Connection) -> list[bytes]:
    leaves = sa.table("audit_events", sa.column("seq", sa.BigInteger), sa.column("leaf_hash"))
    rows = conn.execute(
        sa.select(leaves.c.leaf_hash).order_by(leaves.c.seq).execution_options(yield_per=10_000)
    )
    roots: list[bytes] = []
    batch: list[bytes] = []
    for (leaf_hash,) in rows:
        batch.append(bytes.fromhex(leaf_hash))
        if len(batch) == TILE:
            roots.append(_root(batch))
            batch = []
    rows.close()
    return roots


def upgrade() -> None:
    with op.batch_alter_table("audit_tiles") as batch:
        batch.add_column(sa.Column("level", sa.Integer(), nullable=False, server_default="0"))
        batch.drop_constraint("pk_audit_tiles", type_="primary")
        batch.create_primary_key("pk_audit_tiles", ["level", "tile"])
    with op.batch_alter_table("audit_tiles") as batch:
        batch.alter_column("level", existing_type=sa.Integer(), server_default=None)
    conn = op.get_bind()
    tiles = sa.table(
        "audit_tiles",
        sa.column("level", sa.Integer),
        sa.column("tile", sa.BigInteger),
        sa.column("root"),
    )
    below = _level_zero(conn)
    level = 1
    while len(below) >= TILE:
        whole = len(below) // TILE * TILE
        below = [_root(below[i : i + TILE]) for i in range(0, whole, TILE)]
        rows = [{"level": level, "tile": t, "root": r.hex()} for t, r in enumerate(below)]
        for start in range(0, len(rows), 1000):
            conn.execute(tiles.insert(), rows[start : start + 1000])
        level += 1


def downgrade() -> None:
    tiles = sa.table("audit_tiles", sa.column("level", sa.Integer))
    op.execute(tiles.delete().where(tiles.c.level > 0))
    with op.batch_alter_table("audit_tiles") as batch:
        batch.drop_constraint("pk_audit_tiles", type_="primary")
        batch.create_primary_key("pk_audit_tiles", ["tile"])
        batch.drop_column("level")
