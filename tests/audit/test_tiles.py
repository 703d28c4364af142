"""Tiles: proofs built from tile roots of every level (tile heights 1, 2, 3 and the log's
8) equal the proofs built from every leaf and read fewer than 2 * fan hashes per level,
the log keeps each level-0 tile as an append completes it (and the migration fills them
for an existing log), and ``verify`` catches a tile changed behind its back. Level 1 on a
real store: ``test_tile_levels``."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from alembic import command
from sqlalchemy import delete, select, update

from meshclaw.audit.merkle import (
    TILE,
    TILE_HEIGHT,
    Frontier,
    TiledTree,
    consistency_path,
    consistency_proof,
    inclusion_path,
    inclusion_proof,
    root_hash,
)
from meshclaw.audit.models import AuditTile
from meshclaw.store.db import alembic_config
from meshclaw.store.models import AuditEvent
from tests.audit.conftest import AuditWorld, append_many


def _leaves(n: int) -> list[bytes]:
    return [bytes([i % 251, i // 251 % 251, i // 63001 % 251]) * 10 + b"xy" for i in range(n)]


def _tiled(leaves: list[bytes], reads: list[tuple[str, int]], height: int) -> TiledTree:
    """A tree over ``leaves`` whose tiles of every level are computed from the leaves
    directly (not as TiledTree would), recording each read as (what, how many)."""
    fan = 1 << height
    levels: list[list[bytes]] = []
    span = fan
    while span <= len(leaves):
        whole = len(leaves) // span * span
        levels.append([root_hash(leaves[i : i + span]) for i in range(0, whole, span)])
        span *= fan

    def read_tiles(level: int, first: int, last: int) -> list[bytes]:
        assert 0 <= first < last <= len(levels[level])  # only complete tiles exist
        reads.append((f"tiles at level {level}", last - first))
        return levels[level][first:last]

    def read_leaves(lo: int, hi: int) -> list[bytes]:
        reads.append(("leaves", hi - lo))
        return leaves[lo:hi]

    return TiledTree(read_tiles, read_leaves, height=height)


def _boundaries(fan: int, most: int) -> list[int]:
    """Sizes just around each level's tile size (and multiples), up to ``most``."""
    sizes = {1, 2, 3, most}
    span = fan
    while span <= most:
        for n in (span - 1, span, span + 1, 2 * span, 2 * span + fan + 1, span + span // fan):
            sizes.add(n)
        span *= fan
    return sorted(n for n in sizes if 1 <= n <= most)


def _take_reads(reads: list[tuple[str, int]], fan: int, what: object) -> set[str]:
    """Check what one proof read, forget it, and return the kinds read."""
    per_kind: dict[str, int] = {}
    for kind, count in reads:
        per_kind[kind] = per_kind.get(kind, 0) + count
    # Fewer than 2 * fan hashes of each kind (tiles of one level, or leaves), so
    # O(fan * log_fan n) in all.
    assert all(count < 2 * fan for count in per_kind.values()), (what, per_kind)
    reads.clear()
    return set(per_kind)


@pytest.mark.parametrize(
    ("height", "most", "extra"),
    [(2, 4**5 + 77, 12), (3, 8**4 + 8**3 + 9, 6), (TILE_HEIGHT, TILE**2 + TILE + 2, 0)],
)
def test_tiled_proofs_equal_proofs_from_every_leaf_and_read_little_per_level(
    height: int, most: int, extra: int
) -> None:
    fan = 1 << height
    leaves = _leaves(most)
    rng = random.Random(height)
    sizes = _boundaries(fan, most) + rng.sample(range(1, most + 1), extra)
    levels_seen: set[str] = set()
    reads: list[tuple[str, int]] = []
    for n in sizes:
        tree = _tiled(leaves[:n], reads, height)
        for index in sorted({0, n - 1, n // 2, rng.randrange(n)}):
            want = inclusion_proof(index, leaves[:n])
            assert inclusion_path(index, n, tree.subtree) == want, (index, n)
            levels_seen |= _take_reads(reads, fan, ("inclusion", index, n))
        for old in sorted({0, 1, n // 3, n - 1, n, rng.randrange(n + 1)}):
            want = consistency_proof(old, leaves[:n])
            assert consistency_path(old, n, tree.subtree) == want, (old, n)
            levels_seen |= _take_reads(reads, fan, ("consistency", old, n))
        assert tree.frontier(n).root() == root_hash(leaves[:n])
        levels_seen |= _take_reads(reads, fan, ("frontier", n))
    # The sizes reach tiles of several levels, so each level's tiles were used.
    top = (most.bit_length() - 1) // height - 1
    assert {f"tiles at level {level}" for level in range(top + 1)} <= levels_seen


def test_every_proof_of_small_trees_with_two_leaf_tiles_equals_the_all_leaves_proof() -> None:
    """Height 1: every node is a tile, so every level meets every size and position."""
    leaves = _leaves(70)
    reads: list[tuple[str, int]] = []
    for n in range(1, len(leaves) + 1):
        tree = _tiled(leaves[:n], reads, 1)
        for index in range(n):
            assert inclusion_path(index, n, tree.subtree) == inclusion_proof(index, leaves[:n])
            _take_reads(reads, 2, ("inclusion", index, n))
        for old in range(n + 1):
            want = consistency_proof(old, leaves[:n])
            assert consistency_path(old, n, tree.subtree) == want, (old, n)
            _take_reads(reads, 2, ("consistency", old, n))
        built = Frontier()
        built.extend(leaves[:n])
        assert tree.frontier(n) == built
        _take_reads(reads, 2, ("frontier", n))


def test_a_log_of_ten_million_reads_a_few_hundred_hashes_per_proof() -> None:
    """With the log's height, hashes read per proof grow with the number of levels,
    not with n: reads are counted on a tree that only pretends to hold its hashes."""
    n = 10_000_000
    reads: list[tuple[str, int]] = []

    def tiles(level: int, first: int, last: int) -> list[bytes]:
        reads.append((f"tiles at level {level}", last - first))
        return [bytes(32)] * (last - first)

    def leaves(lo: int, hi: int) -> list[bytes]:
        reads.append(("leaves", hi - lo))
        return [bytes(32)] * (hi - lo)

    tree = TiledTree(tiles, leaves)
    worst = 0
    for index in (0, 1, n // 2, n - TILE - 1, n - 1):
        inclusion_path(index, n, tree.subtree)
        worst = max(worst, sum(count for _, count in reads))
        reads.clear()
    for old in (1, 65_537, n // 3, n - 1):
        consistency_path(old, n, tree.subtree)
        worst = max(worst, sum(count for _, count in reads))
        reads.clear()
    # 10 M = 0x989680: three tile levels plus leaves; one level-0 tile per 256 would be 39,062.
    assert worst < 4 * 2 * TILE


def test_tile_height_must_be_positive() -> None:
    with pytest.raises(ValueError, match="height"):
        TiledTree(lambda level, first, last: [], lambda lo, hi: [], height=0)


def _tile_roots(world: AuditWorld) -> list[str]:
    with world.platform.db.session() as session:
        return list(
            session.scalars(
                select(AuditTile.root).where(AuditTile.level == 0).order_by(AuditTile.tile)
            )
        )


def _expected_roots(world: AuditWorld) -> list[str]:
    with world.platform.db.session() as session:
        leaves = [
            bytes.fromhex(h)
            for h in session.scalars(select(AuditEvent.leaf_hash).order_by(AuditEvent.seq))
        ]
    whole = len(leaves) // TILE * TILE
    return [root_hash(leaves[i : i + TILE]).hex() for i in range(0, whole, TILE)]


def test_the_log_keeps_tiles_proves_with_them_and_verify_catches_a_changed_one(
    audit_world: Callable[..., AuditWorld], database_url: str
) -> None:
    world = audit_world(database_url, checkpoint_every=0)
    append_many(world.platform, 2 * TILE + 60, batch=97)
    assert _tile_roots(world) == _expected_roots(world) and len(_tile_roots(world)) == 2
    cp = world.log.checkpoint(world.admin)
    proof = world.log.inclusion_proof(world.auditor, TILE + 3)
    with world.platform.db.session() as session:
        leaves = [
            bytes.fromhex(h)
            for h in session.scalars(
                select(AuditEvent.leaf_hash).where(AuditEvent.seq <= cp.size)
                .order_by(AuditEvent.seq)
            )
        ]  # fmt: skip
    assert proof["proof"] == [p.hex() for p in inclusion_proof(TILE + 2, leaves)]
    assert proof["leaf_hash"] == leaves[TILE + 2].hex()
    assert world.log.verify(world.auditor).ok

    with world.platform.db.session() as session:  # someone with database access
        session.execute(
            update(AuditTile)
            .where(AuditTile.level == 0, AuditTile.tile == 1)
            .values(root="00" * 32)
        )
    report = world.log.verify(world.auditor)
    assert not report.ok and report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("tiles", TILE + 1)
    assert "differs" in report.problem.message

    with world.platform.db.session() as session:
        session.execute(delete(AuditTile).where(AuditTile.tile == 0))
    report = world.log.verify(world.auditor)
    assert report.problem is not None and (report.problem.kind, report.problem.seq) == (
        "tiles",
        1,
    )


def test_the_migration_fills_the_tiles_of_an_existing_log(
    audit_world: Callable[..., AuditWorld], database_url: str
) -> None:
    world = audit_world(database_url, checkpoint_every=0)
    append_many(world.platform, 3 * TILE + 1)
    expected = _expected_roots(world)
    assert len(expected) == 3
    with world.platform.db.engine.begin() as conn:
        cfg = alembic_config(world.platform.db.url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "audit_witness_0001")
        command.upgrade(cfg, "heads")
    assert _tile_roots(world) == expected
    assert world.log.verify(world.auditor).ok


@pytest.mark.parametrize("size", [TILE - 1, TILE, TILE + 1])
def test_appends_complete_a_tile_exactly_at_each_multiple(
    audit_world: Callable[..., AuditWorld], size: int
) -> None:
    world = audit_world(checkpoint_every=0)
    append_many(world.platform, size, batch=1 + size // 3)
    assert len(_tile_roots(world)) == size // TILE
    assert _tile_roots(world) == _expected_roots(world)
