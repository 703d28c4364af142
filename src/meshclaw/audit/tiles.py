"""The log's tiles in the store: written as appends complete them, read by proofs, checked
by ``verify``.

A tile is the perfect subtree of ``TILE`` consecutive leaves (``audit.merkle``). The
append that completes one writes its root in the same transaction (``store_tile``), so
an inclusion or consistency proof, or a witness's consistency proof, reads about
``n / TILE`` tile roots and at most a few tiles' worth of leaf hashes (``tree``) instead
of every leaf hash of the log. Tiles are a cache of what the leaves already fix: a wrong
tile yields proofs that fail against the signed checkpoints (never one that passes), and
``verify`` recomputes every tile from the leaves and reports the first that differs.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from meshclaw.audit.merkle import TILE, TiledTree, root_hash
from meshclaw.audit.models import AuditTile
from meshclaw.audit.verify import Problem
from meshclaw.errors import ConflictError
from meshclaw.store.db import Prepared
from meshclaw.store.models import AuditEvent

_WRITE_TILE = Prepared(cast(Table, AuditTile.__table__).insert(), ("tile", "root"))


def store_tile(conn: Connection, size: int, root: bytes) -> None:
    """Keep the root of the tile that the append making the log ``size`` long completed."""
    _WRITE_TILE.execute(conn, {"tile": size // TILE - 1, "root": root.hex()})


def tree(session: Session) -> TiledTree:
    """Subtree roots of the stored log, read lazily from its tiles and leaves."""

    def tiles(first: int, last: int) -> list[bytes]:
        roots = session.scalars(
            select(AuditTile.root)
            .where(AuditTile.tile >= first, AuditTile.tile < last)
            .order_by(AuditTile.tile)
        ).all()
        if len(roots) != last - first:
            # Tiles missing (the table was changed outside the log): rebuild them from the
            # leaves, so proofs stay right; `verify` reports the missing tiles.
            return _from_leaves(first * TILE, last * TILE)
        return [bytes.fromhex(r) for r in roots]

    def _from_leaves(lo: int, hi: int) -> list[bytes]:
        hashes = leaves(lo, hi)
        return [root_hash(hashes[i : i + TILE]) for i in range(0, len(hashes), TILE)]

    def leaves(lo: int, hi: int) -> list[bytes]:
        hashes = session.scalars(
            select(AuditEvent.leaf_hash)
            .where(AuditEvent.seq > lo, AuditEvent.seq <= hi)
            .order_by(AuditEvent.seq)
        ).all()
        if len(hashes) != hi - lo:
            raise ConflictError(
                f"the store holds {len(hashes)} of records {lo + 1}..{hi}: run `audit verify`"
            )
        return [bytes.fromhex(h) for h in hashes]

    return TiledTree(tiles, leaves)


def check(session: Session, size: int) -> Problem | None:
    """Recompute every complete tile of the first ``size`` leaves and compare it with the
    stored ones: the first tile missing or different is a problem."""
    computed: list[str] = []
    batch: list[bytes] = []
    for leaf in session.scalars(
        select(AuditEvent.leaf_hash).where(AuditEvent.seq <= size).order_by(AuditEvent.seq)
    ):
        batch.append(bytes.fromhex(leaf))
        if len(batch) == TILE:
            computed.append(root_hash(batch).hex())
            batch = []
    # Only tiles inside ``size``: appends after it may have completed more meanwhile.
    stored = session.execute(
        select(AuditTile.tile, AuditTile.root)
        .where(AuditTile.tile < len(computed))
        .order_by(AuditTile.tile)
    )
    count = 0
    for tile, root in stored:
        if tile != count:
            return _problem(count, "is missing")
        if root != computed[tile]:
            return _problem(tile, "differs from the root its records make")
        count += 1
    if count < len(computed):
        return _problem(count, "is missing")
    return None


def _problem(tile: int, what: str) -> Problem:
    first, last = tile * TILE + 1, (tile + 1) * TILE
    return Problem(
        kind="tiles",
        seq=first,
        message=f"the stored root of tile {tile} (records {first}..{last}) {what}: the "
        "audit_tiles table was changed outside the log, and proofs built on it fail",
    )
