"""The log's tiles in the store: written as appends complete them, read by proofs, checked
by ``verify``.

A level-0 tile is the perfect subtree of ``TILE`` consecutive leaves, a level-1 tile that
of ``TILE`` consecutive level-0 tiles (``TILE ** 2`` leaves), and so on (``audit.merkle``).
The append that completes a tile writes its root in the same transaction
(``store_tile``), and with it the root of every higher-level tile it completes. An
inclusion or consistency proof, a witness's consistency proof or a bundle's frontier then
reads fewer than ``2 * TILE`` tile roots per level plus as many leaf hashes at the edges
(``tree``): O(TILE * log_TILE n) rows instead of every leaf hash of the log, all of them in
one query (``TiledTree.run`` plans the ranges first; ``_Stored.fetch``). Tiles are a
cache of what the leaves already fix: a wrong tile yields proofs that fail against the
signed checkpoints (never one that passes), and ``verify`` recomputes every tile of every
level from the leaves and reports the first that differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from sqlalchemy import Integer, Select, Table, and_, literal_column, or_, select, union_all
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from meshclaw.audit.merkle import LEAVES, TILE, Read, TiledTree, root_hash
from meshclaw.audit.models import AuditTile
from meshclaw.audit.verify import Problem
from meshclaw.errors import ConflictError
from meshclaw.store.db import Prepared
from meshclaw.store.models import AuditEvent

_WRITE_TILE = Prepared(cast(Table, AuditTile.__table__).insert(), ("level", "tile", "root"))


def store_tile(conn: Connection, size: int, root: bytes) -> None:
    """Keep the root of the level-0 tile that the append making the log ``size`` long
    completed, and of each higher-level tile that append completes too."""
    stored = _Stored(conn)
    level, span = 0, TILE
    while True:
        tile = size // span - 1
        _WRITE_TILE.execute(conn, {"level": level, "tile": tile, "root": root.hex()})
        if size % (span * TILE):
            return
        # The tile one level up is complete as well: its root is the root over this one
        # and the TILE - 1 before it, which earlier appends stored (one read per TILE ** 2
        # appends at most).
        root = root_hash([*stored.tiles(level, tile + 1 - TILE, tile), root])
        level, span = level + 1, span * TILE


def tree(session: Session) -> TiledTree:
    """Subtree roots of the stored log from its tiles and leaves (``run``: in one query)."""
    stored = _Stored(session.connection())
    return TiledTree(stored.tiles, stored.leaves, fetch=stored.fetch)


class _Stored:
    """Tile roots and leaf hashes as the store holds them."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def tiles(self, level: int, first: int, last: int) -> list[bytes]:
        """Roots of the level-``level`` tiles ``first..last - 1``."""
        rows = self._conn.execute(
            select(AuditTile.tile, AuditTile.root).where(
                AuditTile.level == level, AuditTile.tile >= first, AuditTile.tile < last
            )
        )
        roots = {int(tile): root for tile, root in rows}
        # A tile missing (the table was changed outside the log) is rebuilt from the
        # level below, so proofs stay right; `verify` reports the missing tile.
        return [
            bytes.fromhex(roots[t]) if t in roots else self._rebuild(level, t)
            for t in range(first, last)
        ]

    def fetch(self, reads: Sequence[Read]) -> dict[tuple[int, int], bytes]:
        """Every tile root and leaf hash of ``reads``, in one statement: the tiles' and
        the leaves' ranges as one OR each (index range scans on both engines), joined
        with UNION ALL."""
        tile_ranges = [
            and_(AuditTile.level == level, AuditTile.tile >= first, AuditTile.tile < last)
            for level, first, last in reads
            if level != LEAVES
        ]
        leaf_ranges = [
            and_(AuditEvent.seq > first, AuditEvent.seq <= last)
            for level, first, last in reads
            if level == LEAVES
        ]
        parts: list[Select[int, int, str]] = []
        if tile_ranges:
            parts.append(
                select(AuditTile.level, AuditTile.tile, AuditTile.root).where(or_(*tile_ranges))
            )
        if leaf_ranges:
            parts.append(
                select(
                    literal_column(str(LEAVES), Integer), AuditEvent.seq - 1, AuditEvent.leaf_hash
                ).where(or_(*leaf_ranges))
            )
        if not parts:
            return {}
        stmt = parts[0] if len(parts) == 1 else union_all(*parts)
        got = {(int(level), int(i)): bytes.fromhex(h) for level, i, h in self._conn.execute(stmt)}
        for level, first, last in reads:
            missing = [i for i in range(first, last) if (level, i) not in got]
            if missing and level == LEAVES:
                raise _short(first, last, last - first - len(missing))
            for t in missing:  # as in `tiles`: rebuilt, and `verify` reports it
                got[level, t] = self._rebuild(level, t)
        return got

    def _rebuild(self, level: int, tile: int) -> bytes:
        first, last = tile * TILE, (tile + 1) * TILE
        below = self.tiles(level - 1, first, last) if level else self.leaves(first, last)
        return root_hash(below)

    def leaves(self, lo: int, hi: int) -> list[bytes]:
        """Hashes of the leaves ``[lo, hi)`` (records ``lo + 1..hi``)."""
        hashes = self._conn.scalars(
            select(AuditEvent.leaf_hash)
            .where(AuditEvent.seq > lo, AuditEvent.seq <= hi)
            .order_by(AuditEvent.seq)
        ).all()
        if len(hashes) != hi - lo:
            raise _short(lo, hi, len(hashes))
        return [bytes.fromhex(h) for h in hashes]


def _short(lo: int, hi: int, found: int) -> ConflictError:
    return ConflictError(f"the store holds {found} of records {lo + 1}..{hi}: run `audit verify`")


def check(session: Session, size: int) -> Problem | None:
    """Recompute every complete tile of every level of the first ``size`` leaves and
    compare it with the stored ones: the first tile missing or different (lowest level
    first) is a problem."""
    computed: list[bytes] = []
    batch: list[bytes] = []
    for leaf in session.scalars(
        select(AuditEvent.leaf_hash).where(AuditEvent.seq <= size).order_by(AuditEvent.seq)
    ):
        batch.append(bytes.fromhex(leaf))
        if len(batch) == TILE:
            computed.append(root_hash(batch))
            batch = []
    level = 0
    while computed:
        if problem := _compare(session, level, computed):
            return problem
        # The level above from the recomputed tiles, never from the stored ones.
        whole = len(computed) // TILE * TILE
        computed = [root_hash(computed[i : i + TILE]) for i in range(0, whole, TILE)]
        level += 1
    return None


def _compare(session: Session, level: int, computed: list[bytes]) -> Problem | None:
    # Only tiles inside ``size``: appends after it may have completed more meanwhile.
    stored = session.execute(
        select(AuditTile.tile, AuditTile.root)
        .where(AuditTile.level == level, AuditTile.tile < len(computed))
        .order_by(AuditTile.tile)
    )
    count = 0
    for tile, root in stored:
        if tile != count:
            return _problem(level, count, "is missing")
        if root != computed[tile].hex():
            return _problem(level, tile, "differs from the root its records make")
        count += 1
    if count < len(computed):
        return _problem(level, count, "is missing")
    return None


def _problem(level: int, tile: int, what: str) -> Problem:
    span = TILE ** (level + 1)
    first, last = tile * span + 1, (tile + 1) * span
    return Problem(
        kind="tiles",
        seq=first,
        message=f"the stored root of level-{level} tile {tile} (records {first}..{last}) "
        f"{what}: the audit_tiles table was changed outside the log, and proofs built on "
        "it fail",
    )
