"""The audit log on SQLite and PostgreSQL: hashing, checkpoints, proofs, queries, retention."""

from __future__ import annotations

import stat
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import select, text

from meshclaw.audit.canonical import CanonicalError
from meshclaw.audit.checkpoint import Verifier
from meshclaw.audit.merkle import verify_consistency, verify_inclusion
from meshclaw.audit.models import AuditCheckpoint, AuditHead
from meshclaw.audit.signing import Checkpointer
from meshclaw.audit.sink import AuditRecord
from meshclaw.clock import utcnow
from meshclaw.config import Settings
from meshclaw.errors import PermissionDenied, UserError
from meshclaw.platform import Platform
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.store.db import alembic_config, make_engine
from meshclaw.store.models import AuditEvent, Note
from tests.audit.conftest import AuditWorld, append_many
from tests.conftest import World, agent_yaml


def test_appends_are_dense_hashed_checkpointed_and_verify(
    database_url: str, audit_world: Callable[..., AuditWorld]
) -> None:
    world = audit_world(database_url, checkpoint_every=10)
    append_many(world.platform, 35, batch=7)
    with world.platform.db.session() as session:
        seqs = session.scalars(select(AuditEvent.seq).order_by(AuditEvent.seq)).all()
        sizes = session.scalars(select(AuditCheckpoint.size).order_by(AuditCheckpoint.size)).all()
        head = session.get(AuditHead, 1)
        assert head is not None
        assert head.size == len(seqs)
    assert seqs == list(range(1, len(seqs) + 1))
    assert sizes == [10, 20, 30]
    report = world.log.verify(world.auditor)
    assert report.ok, report.problem
    assert report.records == 35 and report.checkpoints == 3
    assert report.notes and "36" not in report.notes[0]  # records 31..35 not yet signed
    info = world.log.checkpoint(world.admin)
    assert info.size == 37  # the verify and the checkpoint request were themselves recorded
    assert world.log.head() == (37, info.root_hash)


def test_signing_key_is_created_once_owner_only_and_public_key_verifies(
    audit_world: Callable[..., AuditWorld],
) -> None:
    world = audit_world()
    info = world.log.checkpoint(world.admin)
    key_file = world.platform.settings.home / "audit-signing.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    verifier = Verifier.from_vkey(world.log.public_key())
    cp = verifier.open(info.note)
    assert cp.size == info.size and cp.root.hex() == info.root_hash
    assert info.note.startswith("meshclaw/audit\n")
    key_file.chmod(0o644)
    with pytest.raises(UserError, match="readable by others"):
        _ = Checkpointer(key_path=key_file, origin="meshclaw/audit").signer


def test_inclusion_and_consistency_proofs_verify_against_signed_checkpoints(
    audit_world: Callable[..., AuditWorld],
) -> None:
    world = audit_world(checkpoint_every=0)
    append_many(world.platform, 20)
    first = world.log.checkpoint(world.admin)
    append_many(world.platform, 13)
    second = world.log.checkpoint(world.admin)
    verifier = Verifier.from_vkey(world.log.public_key())
    for seq in (1, 7, first.size, second.size):
        proof = world.log.inclusion_proof(world.auditor, seq)
        cp = verifier.open(proof["checkpoint"])
        assert verify_inclusion(
            seq - 1,
            cp.size,
            bytes.fromhex(proof["leaf_hash"]),
            [bytes.fromhex(p) for p in proof["proof"]],
            cp.root,
        )
    cons = world.log.consistency_proof(world.auditor, first.size, second.size)
    old, new = verifier.open(cons["old_checkpoint"]), verifier.open(cons["new_checkpoint"])
    path = [bytes.fromhex(p) for p in cons["proof"]]
    assert verify_consistency(old.size, new.size, old.root, new.root, path)
    assert not verify_consistency(old.size, new.size, new.root, old.root, path)
    with pytest.raises(UserError, match="no audit record seq 10000"):
        world.log.inclusion_proof(world.auditor, 10_000)
    append_many(world.platform, 1)  # not yet under a signed checkpoint
    with pytest.raises(UserError, match="no signed checkpoint"):
        world.log.inclusion_proof(world.auditor, second.size + 1)


def test_a_failed_audit_write_fails_the_action(audit_world: Callable[..., AuditWorld]) -> None:
    world = audit_world()
    platform = world.platform
    with pytest.raises(CanonicalError), platform.db.session() as session:
        session.add(
            Note(id="note_1", org_id=world.org_id, user_id=world.alice.user_id, title="t", body="b")
        )
        platform.audit.append(
            session,
            AuditRecord(
                action="tool.write",
                resource="notes:1",
                outcome="ok",
                details={"cost": float("nan")},
            ),
        )
    with platform.db.session() as session:
        assert session.get(Note, "note_1") is None
        assert session.get(AuditHead, 1).size == 0  # type: ignore[union-attr]
    assert world.log.verify().ok


def test_query_filters_pages_and_is_for_auditors_only(
    database_url: str, audit_world: Callable[..., AuditWorld]
) -> None:
    world = audit_world(database_url)
    with world.platform.db.session() as session:
        for i in range(12):
            world.platform.audit.append(
                session,
                AuditRecord(
                    action="metrics.view" if i % 3 == 0 else "tool.write",
                    resource=f"metrics:user/{world.alice.user_id}" if i % 3 == 0 else f"notes:{i}",
                    outcome="ok",
                    org_id=world.org_id,
                    actor_user_id=world.admin.user_id if i % 2 else world.alice.user_id,
                    details={"i": i},
                ),
            )
        world.platform.audit.append(
            session,
            AuditRecord(action="tool.write", resource="x", outcome="ok", org_id="org_other"),
        )
    for who in (world.alice, world.admin):
        with pytest.raises(PermissionDenied, match="auditor"):
            world.log.query(who)
    views = world.log.query(world.auditor, action="metrics.view", actor="root")
    assert [e.details["i"] for e in views.entries] == [3, 9]
    assert all(e.resource.startswith("metrics:user/") for e in views.entries)
    assert [
        e.details["i"] for e in world.log.query(world.auditor, resource="notes:1*").entries
    ] == [
        1,
        10,
        11,
    ]
    # paging by seq cursor; other orgs' records are never shown
    seen: list[int] = []
    after = 0
    while True:
        page = world.log.query(world.auditor, action="tool.*", after=after, limit=3)
        seen.extend(e.details["i"] for e in page.entries)
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == [1, 2, 4, 5, 7, 8, 10, 11]
    future = utcnow() + timedelta(hours=1)
    assert world.log.query(world.auditor, since=future).entries == []
    with pytest.raises(UserError, match="no user"):
        world.log.query(world.auditor, actor="nobody")
    with pytest.raises(UserError, match="limit"):
        world.log.query(world.auditor, limit=0)
    # every query was itself recorded
    reads = world.log.query(world.auditor, action="audit.query", limit=100).entries
    assert len(reads) >= 5 and all(e.actor_user_id == world.auditor.user_id for e in reads)


def test_retention_redacts_bodies_keeps_hashes_and_still_verifies(
    database_url: str, audit_world: Callable[..., AuditWorld]
) -> None:
    world = audit_world(database_url, checkpoint_every=5)
    start = world.log.head()[0]  # the accounts setup's records
    append_many(world.platform, 8, org_id=world.org_id)
    append_many(world.platform, 4, org_id="org_other")
    append_many(world.platform, 4, org_id=world.org_id)
    old_seqs = range(start + 1, start + 13)  # 8 of ours, then 4 of another org's
    # age them by 90 days (the test's stand-in for time passing)
    with world.platform.db.session() as session:
        for e in session.scalars(select(AuditEvent).where(AuditEvent.seq.in_(old_seqs))):
            e.ts = e.ts - timedelta(days=90)
        # the hash covers the time, so re-hash as the writer would have: rebuild the log
    _rehash_all(world)
    cutoff = utcnow() - timedelta(days=60)
    with pytest.raises(PermissionDenied):
        world.log.redact(world.auditor, cutoff)
    with pytest.raises(UserError, match="minimum retention"):
        world.log.redact(world.admin, utcnow() - timedelta(days=1))
    assert world.log.redact(world.admin, cutoff) == 8
    with world.platform.db.session() as session:
        old = session.scalars(select(AuditEvent).where(AuditEvent.seq.in_(old_seqs))).all()
        ours = [e for e in old if e.org_id == world.org_id]
        assert len(ours) == 8 and all(
            e.details == {} and e.actor_user_id is None and e.salt is None and e.redacted_at
            for e in ours
        )
        assert all(e.salt is not None and e.redacted_at is None for e in old if e not in ours)
    report = world.log.verify(world.auditor)
    assert report.ok, report.problem
    assert report.redacted == 8
    # org acme's cutoff does not cover another org's body removed by hand...
    other = start + 9
    saved = _strip_body(world, other)
    report = world.log.verify(world.auditor)
    assert not report.ok and report.problem is not None
    assert report.problem.seq == other and "authorisation" in report.problem.message
    # ...nor a recent body of its own
    _strip_body(world, other, saved)
    _strip_body(world, start + 14)
    report = world.log.verify(world.auditor)
    assert not report.ok and report.problem is not None
    assert report.problem.seq == start + 14 and "authorisation" in report.problem.message


def _strip_body(
    world: AuditWorld, seq: int, restore: tuple[str | None, dict[str, Any]] | None = None
) -> tuple[str | None, dict[str, Any]]:
    """Remove a record's body behind the log's back (or put ``restore`` back); the old one."""
    with world.platform.db.session() as session:
        event = session.get(AuditEvent, seq)
        assert event is not None
        old = (event.salt, dict(event.details))
        event.salt, event.details = restore or (None, {})
        return old


def _rehash_all(world: AuditWorld) -> None:
    """Recompute every hash, the head and the checkpoints (what a legitimate writer does)."""
    from meshclaw.audit.canonical import Body, Header, body_hash, format_ts
    from meshclaw.audit.merkle import Frontier

    with world.platform.db.session() as session:
        frontier = Frontier()
        for e in session.scalars(select(AuditEvent).order_by(AuditEvent.seq)):
            assert e.salt is not None
            e.body_sha256 = body_hash(
                Body(
                    actor_user_id=e.actor_user_id,
                    actor_agent_id=e.actor_agent_id,
                    resource=e.resource,
                    details=e.details,
                    salt=e.salt,
                )
            )
            leaf = Header(
                seq=e.seq,
                id=e.id,
                ts=format_ts(e.ts),
                org_id=e.org_id,
                action=e.action,
                outcome=e.outcome,
                body_sha256=e.body_sha256,
            ).leaf_hash()
            e.leaf_hash = leaf.hex()
            frontier.append(leaf)
        head = session.get(AuditHead, 1)
        assert head is not None
        head.size, head.frontier = frontier.size, frontier.to_hex()
        head.root = frontier.root().hex()
        session.execute(text("DELETE FROM audit_checkpoints"))
    world.log.checkpoint()


def test_migration_hashes_records_written_before_the_log_was_hashed(
    database_url: str, tmp_path: Path
) -> None:
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(database_url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")
            for seq in (3, 7, 8):  # gaps, as a rolled-back autoincrement leaves them
                conn.execute(
                    text(
                        "INSERT INTO audit_events (seq, id, ts, org_id, actor_user_id, "
                        "actor_agent_id, action, resource, outcome, details) VALUES "
                        "(:seq, :id, :ts, NULL, 'usr_1', NULL, 'token.create', 'token:t', "
                        "'ok', :details)"
                    ),
                    {"seq": seq, "id": f"aud_{seq}", "ts": utcnow(), "details": '{"n": 1}'},
                )
    finally:
        engine.dispose()
    settings = Settings(
        home=tmp_path / "var", database_url=database_url, embedded_model_server=False
    )
    platform = Platform(settings)
    try:
        with platform.db.session() as session:
            rows = session.execute(
                select(AuditEvent.seq, AuditEvent.id).order_by(AuditEvent.seq)
            ).all()
        assert [tuple(r) for r in rows] == [(1, "aud_3"), (2, "aud_7"), (3, "aud_8")]
        platform.audit_log.checkpoint()
        report = platform.audit_log.verify()
        assert report.ok and report.records == 3 and report.checkpoints == 1, report.problem
    finally:
        platform.close()


def test_checkpoint_files_are_written_after_commit_and_never_for_a_rollback(
    audit_world: Callable[..., AuditWorld], tmp_path: Path
) -> None:
    out = tmp_path / "witness"
    world = audit_world(checkpoint_every=5, checkpoint_dir=out)
    size = world.log.head()[0]
    append_many(world.platform, 5 - size % 5 - 1)  # one short of a checkpoint
    with pytest.raises(RuntimeError), world.platform.db.session() as session:
        world.platform.audit.append(session, AuditRecord(action="x", resource="r", outcome="ok"))
        assert world.log.head()[0] % 5 != 0  # another session still sees the old head
        raise RuntimeError("the act failed")
    assert not out.exists()  # the checkpoint signed in the rolled-back transaction is gone
    append_many(world.platform, 6)
    files = sorted(p.name for p in out.iterdir())
    head = world.log.head()[0]
    assert files == [f"{s:012d}.checkpoint" for s in range(5, head + 1, 5)] + ["checkpoint"]
    verifier = Verifier.from_vkey(world.log.public_key())
    latest = verifier.open((out / "checkpoint").read_text())
    with world.platform.db.session() as session:
        stored = session.scalars(select(AuditCheckpoint.note).order_by(AuditCheckpoint.size))
        assert [verifier.open(n).size for n in stored] == list(range(5, head + 1, 5))
    assert latest.size == max(range(5, head + 1, 5))


def test_a_real_run_through_the_gateway_lands_in_the_verifiable_log(
    database_url: str,
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
) -> None:
    server = scripted(
        {
            "turns": [
                {
                    "reply": {
                        "tool_calls": [
                            {"name": "notes.write", "arguments": {"title": "a", "body": "b"}}
                        ]
                    }
                },
                {"reply": {"content": "saved"}},
            ]
        }
    )
    world = make_world(server.base_url, database_url)
    world.save_agent(agent_yaml())
    info = world.run("helper")
    assert info.status == "succeeded", info.error
    log = world.platform.audit_log
    log.checkpoint()
    report = log.verify()
    assert report.ok, report.problem
    with world.platform.db.session() as session:
        rows = session.execute(
            select(AuditEvent.seq, AuditEvent.action, AuditEvent.actor_agent_id).order_by(
                AuditEvent.seq
            )
        ).all()
    actions = [r.action for r in rows]
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    assert actions.count("model.invoke") == 2 and "tool.write" in actions
    assert actions[-1] == "run.finish"
    assert report.records == len(rows) and report.checkpoints == 1
