"""A proof reads the store in one query, whatever the log's size.

``TiledTree.run`` works out every tile and leaf range a proof needs, then reads them in
one fetch: in memory (tile heights 1 to 3, several levels) the proofs equal the
all-leaves proofs and each makes exactly one fetch; on SQLite and PostgreSQL a log
grown past a level-1 tile (``TILE ** 2`` records) answers every inclusion proof,
consistency proof and frontier with one statement, equal to the all-leaves proofs, and
``AuditLog``'s proof calls make as many statements at 66,000 records as at 300.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from functools import partial

import pytest
from sqlalchemy import event, insert, select, update
from sqlalchemy.engine import Engine

from meshclaw.audit import tiles
from meshclaw.audit.merkle import (
    LEAVES,
    TILE,
    Fetched,
    Frontier,
    Read,
    SubtreeRoot,
    TiledTree,
    consistency_path,
    consistency_proof,
    frontier_path,
    inclusion_path,
    inclusion_proof,
    root_hash,
)
from meshclaw.audit.models import HEAD_ID, AuditHead
from meshclaw.audit.sink import lock_head
from meshclaw.clock import utcnow
from meshclaw.platform import Platform
from meshclaw.store.models import AuditEvent
from tests.audit.conftest import AuditWorld

LEVEL_1 = TILE**2


def _leaf(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(8, "big")).digest()


def _memory_tree(leaves: list[bytes], height: int, fetches: list[Sequence[Read]]) -> TiledTree:
    """A tree over ``leaves`` whose one-range readers must never be used: only ``fetch``."""
    fan = 1 << height
    levels: list[list[bytes]] = []
    span = fan
    while span <= len(leaves):
        whole = len(leaves) // span * span
        levels.append([root_hash(leaves[i : i + span]) for i in range(0, whole, span)])
        span *= fan

    def fetch(reads: Sequence[Read]) -> Fetched:
        fetches.append(reads)
        got: dict[tuple[int, int], bytes] = {}
        for level, first, last in reads:
            source = leaves if level == LEAVES else levels[level]
            assert 0 <= first < last <= len(source)  # only what exists is asked for
            got.update({(level, i): source[i] for i in range(first, last)})
        return got

    def never(*args: int) -> list[bytes]:
        raise AssertionError(f"read one range at a time: {args}")

    return TiledTree(never, never, height=height, fetch=fetch)


def _proof_and_leaf(index: int, n: int, subtree: SubtreeRoot) -> tuple[list[bytes], bytes]:
    """What ``AuditLog.inclusion_proof`` asks of one ``run``: the path and the leaf."""
    return inclusion_path(index, n, subtree), subtree(index, index + 1)


@pytest.mark.parametrize(("height", "most"), [(1, 300), (2, 4**4 + 37), (3, 8**3 * 2 + 11)])
def test_every_proof_is_one_fetch_and_equals_the_all_leaves_proof(height: int, most: int) -> None:
    leaves = [_leaf(i) for i in range(most)]
    rng = random.Random(height)
    fetches: list[Sequence[Read]] = []
    for n in sorted({1, 2, 3, most, *rng.sample(range(1, most + 1), 25)}):
        tree = _memory_tree(leaves[:n], height, fetches)
        for index in sorted({0, n - 1, n // 2, rng.randrange(n)}):
            got = tree.run(partial(_proof_and_leaf, index, n))
            assert got == (inclusion_proof(index, leaves[:n]), leaves[index]), (index, n)
            assert len(fetches) == 1
            fetches.clear()
        for old in sorted({0, 1, n // 3, n - 1, n, rng.randrange(n + 1)}):
            want = consistency_proof(old, leaves[:n])
            assert tree.run(partial(consistency_path, old, n)) == want, (old, n)
            assert len(fetches) <= 1  # none when the proof is empty
            fetches.clear()
        built = Frontier()
        built.extend(leaves[:n])
        assert tree.frontier(n) == built
        assert len(fetches) == 1
        fetches.clear()


def _grow(platform: Platform, until: int) -> None:
    """Leaves up to seq ``until`` (made-up leaf hashes: proofs only read those) with the
    tiles and head the sink would have written for them."""
    base = utcnow() - timedelta(hours=1)
    with platform.db.session() as session:
        frontier = lock_head(session)
        conn = session.connection()
        rows = []
        for seq in range(frontier.size + 1, until + 1):
            leaf = _leaf(seq)
            if (tile := frontier.append(leaf)) is not None:
                tiles.store_tile(conn, seq, tile)
            rows.append(
                {
                    "seq": seq,
                    "id": f"aud_fake{seq:020d}",
                    "ts": base + timedelta(microseconds=seq),
                    "org_id": None,
                    "actor_user_id": None,
                    "actor_agent_id": None,
                    "action": "run.finish",
                    "resource": "run:fake",
                    "outcome": "ok",
                    "details": {},
                    "salt": None,
                    "body_sha256": "00" * 32,
                    "leaf_hash": leaf.hex(),
                }
            )
        for start in range(0, len(rows), 5000):
            session.execute(insert(AuditEvent), rows[start : start + 5000])
        session.execute(
            update(AuditHead)
            .where(AuditHead.id == HEAD_ID)
            .values(size=frontier.size, frontier=frontier.to_hex(), root=frontier.root().hex())
        )


@contextmanager
def _counted(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def _all_leaves(platform: Platform) -> list[bytes]:
    with platform.db.session() as session:
        return [
            bytes.fromhex(h)
            for h in session.scalars(select(AuditEvent.leaf_hash).order_by(AuditEvent.seq))
        ]


def test_store_proofs_are_one_statement_at_every_size(
    audit_world: Callable[..., AuditWorld], database_url: str
) -> None:
    world = audit_world(database_url, checkpoint_every=0)
    platform = world.platform
    _grow(platform, LEVEL_1 + 3 * TILE + 17)
    leaves = _all_leaves(platform)
    n = len(leaves)
    rng = random.Random(6)
    sizes = sorted({1, 300, TILE, LEVEL_1 - 1, LEVEL_1, LEVEL_1 + 1, n, rng.randrange(1, n)})
    with platform.db.session() as session, _counted(platform.db.engine) as statements:
        tree = tiles.tree(session)
        session.connection()  # the session's own setup is not a proof's
        statements.clear()
        for size in sizes:
            for index in sorted({0, size - 1, size // 2, rng.randrange(size)}):
                proof = tree.run(partial(inclusion_path, index, size))
                assert proof == inclusion_proof(index, leaves[:size]), (index, size)
                assert len(statements) == (1 if proof else 0), statements  # size 1: none
                statements.clear()
            for old in sorted({1, TILE + 1, size // 3, size - 1}):
                if not 0 < old < size:
                    continue
                proof = tree.run(partial(consistency_path, old, size))
                assert proof == consistency_proof(old, leaves[:size]), (old, size)
                assert len(statements) == 1, statements
                statements.clear()
            assert tree.run(partial(frontier_path, size)).root() == root_hash(leaves[:size])
            assert len(statements) == 1
            statements.clear()


def test_audit_log_proofs_make_as_many_statements_on_a_big_log_as_on_a_small_one(
    audit_world: Callable[..., AuditWorld], database_url: str
) -> None:
    world = audit_world(database_url, checkpoint_every=0)
    log, platform = world.log, world.platform
    _grow(platform, 150)
    first = log.checkpoint(world.admin).size
    _grow(platform, 300)
    small = log.checkpoint(world.admin).size

    def counts(seq: int, old: int, size: int) -> tuple[int, int]:
        # Each proof call appends its own audit record; keep those appends off tile
        # boundaries, where the append also writes a tile (a statement not the proof's).
        assert all((log.head()[0] + k) % TILE for k in (1, 2))
        with _counted(platform.db.engine) as statements:
            log.inclusion_proof(world.auditor, seq, size)
            inclusion = len(statements)
            statements.clear()
            log.consistency_proof(world.auditor, old, size)
            return inclusion, len(statements)

    counts(5, first, small)  # warm-up: the sink learns the head it did not write itself
    before = counts(5, first, small)
    _grow(platform, LEVEL_1 + 3 * TILE + 17)
    big = log.checkpoint(world.admin).size
    counts(LEVEL_1 + 3, small, big)  # warm-up again, after the bulk growth
    after = counts(LEVEL_1 + 3, small, big)
    assert after == before, (before, after)
    print(f"statements per inclusion, consistency proof call: {before}")
    leaves = _all_leaves(platform)
    proof = log.inclusion_proof(world.auditor, LEVEL_1 + 3, big)
    assert proof["proof"] == [p.hex() for p in inclusion_proof(LEVEL_1 + 2, leaves[:big])]
    consistency = log.consistency_proof(world.auditor, small, big)
    assert consistency["proof"] == [p.hex() for p in consistency_proof(small, leaves[:big])]
