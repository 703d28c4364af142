"""Tiles: proofs built from the roots of complete 256-leaf subtrees equal the proofs built
from every leaf, the log keeps each tile as an append completes it (and the migration
fills them for an existing log), and ``verify`` catches a tile changed behind its back."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from alembic import command
from sqlalchemy import delete, select, update

from meshclaw.audit.merkle import (
    TILE,
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
    return [bytes([i % 251, i // 251 % 251]) * 16 for i in range(n)]


def _tiled(leaves: list[bytes], reads: list[tuple[str, int]]) -> TiledTree:
    tiles = [root_hash(leaves[i : i + TILE]) for i in range(0, len(leaves) - TILE + 1, TILE)]

    def read_tiles(first: int, last: int) -> list[bytes]:
        reads.append(("tiles", last - first))
        return tiles[first:last]

    def read_leaves(lo: int, hi: int) -> list[bytes]:
        reads.append(("leaves", hi - lo))
        return leaves[lo:hi]

    return TiledTree(read_tiles, read_leaves)


def test_tiled_proofs_equal_proofs_from_every_leaf_and_read_little() -> None:
    leaves = _leaves(5 * TILE + 37)
    rng = random.Random(4)
    sizes = [1, 2, TILE - 1, TILE, TILE + 1, 2 * TILE, 3 * TILE + 5, len(leaves)]
    sizes += rng.sample(range(1, len(leaves) + 1), 12)
    for n in sizes:
        reads: list[tuple[str, int]] = []
        tree = _tiled(leaves[:n], reads)
        for index in {0, n - 1, n // 2, rng.randrange(n)}:
            want = inclusion_proof(index, leaves[:n])
            assert inclusion_path(index, n, tree.subtree) == want, (index, n)
        for old in {0, 1, n // 3, n - 1, n, rng.randrange(n + 1)}:
            assert consistency_path(old, n, tree.subtree) == consistency_proof(old, leaves[:n])
        assert tree.frontier(n).root() == root_hash(leaves[:n])
        # What a proof reads: tile roots for whole tiles, leaves only near the edges.
        assert all(count <= TILE for kind, count in reads if kind == "leaves")


def _tile_roots(world: AuditWorld) -> list[str]:
    with world.platform.db.session() as session:
        return list(session.scalars(select(AuditTile.root).order_by(AuditTile.tile)))


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
        session.execute(update(AuditTile).where(AuditTile.tile == 1).values(root="00" * 32))
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
