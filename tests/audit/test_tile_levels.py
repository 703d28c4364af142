"""Tiles above level 0 on a real store: a log past ``TILE ** 2`` records keeps the
level-1 tile as the append that completes it commits, the migration fills it for an
existing log, proofs over it equal the all-leaves proofs, and ``audit verify`` (API and
CLI) reports a level-1 tile changed or deleted behind the log's back."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from alembic import command
from sqlalchemy import delete, insert, select, update
from typer.testing import CliRunner

from meshclaw.audit.canonical import body_digest, format_ts, header_json, new_salt
from meshclaw.audit.merkle import (
    TILE,
    consistency_proof,
    hash_leaf,
    inclusion_proof,
    root_hash,
    verify_inclusion,
)
from meshclaw.audit.models import HEAD_ID, AuditHead, AuditTile
from meshclaw.audit.sink import lock_head
from meshclaw.cli.main import app
from meshclaw.clock import utcnow
from meshclaw.platform import Platform
from meshclaw.store.db import alembic_config
from meshclaw.store.models import AuditEvent
from tests.audit.conftest import AuditWorld, append_many

LEVEL_1 = TILE**2


def _synthesise(platform: Platform, until: int) -> None:
    """Records up to seq ``until`` hashed exactly as the sink hashes them, bulk-inserted
    without tiles (sharing one body, so only the headers are hashed one by one)."""
    salt = new_salt()
    digest = body_digest("usr_bulk", None, "run:bulk", {}, salt)
    base = utcnow() - timedelta(hours=1)
    with platform.db.session() as session:
        frontier = lock_head(session)
        rows = []
        for seq in range(frontier.size + 1, until + 1):
            ts = base + timedelta(microseconds=seq)
            event_id = f"aud_bulk{seq:020d}"
            header = header_json(seq, event_id, format_ts(ts), None, "run.finish", "ok", digest)
            leaf = hash_leaf(header)
            frontier.append(leaf)
            rows.append(
                {
                    "seq": seq,
                    "id": event_id,
                    "ts": ts,
                    "org_id": None,
                    "actor_user_id": "usr_bulk",
                    "actor_agent_id": None,
                    "action": "run.finish",
                    "resource": "run:bulk",
                    "outcome": "ok",
                    "details": {},
                    "salt": salt,
                    "body_sha256": digest,
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


def _migrate_from(world: AuditWorld, revision: str) -> None:
    """Downgrade to ``revision`` and upgrade again, as on an existing store."""
    with world.platform.db.engine.begin() as conn:
        cfg = alembic_config(world.platform.db.url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
        command.upgrade(cfg, "heads")


def _leaves(world: AuditWorld) -> list[bytes]:
    with world.platform.db.session() as session:
        return [
            bytes.fromhex(h)
            for h in session.scalars(select(AuditEvent.leaf_hash).order_by(AuditEvent.seq))
        ]


def _stored(world: AuditWorld) -> dict[int, list[str]]:
    tiles: dict[int, list[str]] = {}
    with world.platform.db.session() as session:
        for level, root in session.execute(
            select(AuditTile.level, AuditTile.root).order_by(AuditTile.level, AuditTile.tile)
        ):
            tiles.setdefault(level, []).append(root)
    return tiles


def _expected(leaves: list[bytes]) -> dict[int, list[str]]:
    """Every complete tile of every level, straight from the leaves."""
    tiles: dict[int, list[str]] = {}
    level, span = 0, TILE
    while span <= len(leaves):
        whole = len(leaves) // span * span
        tiles[level] = [root_hash(leaves[i : i + span]).hex() for i in range(0, whole, span)]
        level, span = level + 1, span * TILE
    return tiles


def _cli_verify(world: AuditWorld, home: Path) -> tuple[int, dict[str, object]]:
    token = world.platform.accounts.issue_token(world.auditor.user_id, "tile-test")
    env = {
        "MESHCLAW_HOME": str(home),
        "MESHCLAW_DATABASE_URL": world.platform.db.url,
        "MESHCLAW_EMBEDDED_MODEL_SERVER": "false",
        "MESHCLAW_CONFIG": None,
        "MESHCLAW_TOKEN": token,
        "MESHCLAW_AUDIT__CHECKPOINT_EVERY": "0",
    }
    done = CliRunner().invoke(app, ["audit", "verify", "--json", "--workers", "1"], env=env)
    return done.exit_code, json.loads(done.stdout)


def test_a_log_past_a_level_one_tile_keeps_proves_with_and_verifies_it(
    audit_world: Callable[..., AuditWorld], database_url: str, tmp_path: Path
) -> None:
    world = audit_world(database_url, checkpoint_every=0)
    _synthesise(world.platform, LEVEL_1 - 5)
    _migrate_from(world, "audit_witness_0001")  # level-0 tiles of the synthesised records
    before = world.log.checkpoint(world.admin)
    assert set(_stored(world)) == {0}

    # Real appends cross TILE ** 2: the one completing it stores the level-1 tile too.
    append_many(world.platform, TILE + 60, batch=97)
    leaves = _leaves(world)
    assert len(leaves) > LEVEL_1 + TILE
    stored = _stored(world)
    assert stored == _expected(leaves) and len(stored[1]) == 1
    assert world.log.verify(world.auditor, workers=1).ok

    # Proofs through the level-1 tile are the all-leaves proofs.
    after = world.log.checkpoint(world.admin)
    leaves = _leaves(world)
    for seq in (1, LEVEL_1 - 1, LEVEL_1, LEVEL_1 + 1, after.size):
        proof = world.log.inclusion_proof(world.auditor, seq, after.size)
        want = inclusion_proof(seq - 1, leaves[: after.size])
        assert proof["proof"] == [p.hex() for p in want], seq
    consistency = world.log.consistency_proof(world.auditor, before.size, after.size)
    want = consistency_proof(before.size, leaves[: after.size])
    assert consistency["proof"] == [p.hex() for p in want]

    # The migration fills the same tiles for an existing log, from level 0 or from none.
    for revision in ("audit_tiles_0001", "audit_witness_0001"):
        _migrate_from(world, revision)
        assert _stored(world) == _expected(_leaves(world)), revision

    # Someone with database access changes the level-1 tile: verify (API and CLI) says
    # so, and a proof through it fails against the signed checkpoint.
    with world.platform.db.session() as session:
        session.execute(
            update(AuditTile).where(AuditTile.level == 1).values(root="00" * 32)
        )  # fmt: skip
    code, report = _cli_verify(world, tmp_path / "var")
    assert code != 0 and report["ok"] is False
    problem = report["problem"]
    assert isinstance(problem, dict) and (problem["kind"], problem["seq"]) == ("tiles", 1)
    assert f"level-1 tile 0 (records 1..{LEVEL_1}) differs" in problem["message"]
    seq = LEVEL_1 + 3
    proof = world.log.inclusion_proof(world.auditor, seq, after.size)
    assert not verify_inclusion(
        seq - 1,
        after.size,
        leaves[seq - 1],
        [bytes.fromhex(p) for p in proof["proof"]],
        bytes.fromhex(after.root_hash),
    )

    # Deleted instead: reported as missing, and proofs rebuild it from the level below.
    with world.platform.db.session() as session:
        session.execute(delete(AuditTile).where(AuditTile.level == 1))
    missing = world.log.verify(world.auditor, workers=1).problem
    assert missing is not None and (missing.kind, missing.seq) == ("tiles", 1)
    assert "level-1 tile 0" in missing.message and "missing" in missing.message
    proof = world.log.inclusion_proof(world.auditor, seq, after.size)
    assert proof["proof"] == [p.hex() for p in inclusion_proof(seq - 1, leaves[: after.size])]
