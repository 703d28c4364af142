"""The C2SP tlog-witness protocol and tlog-cosignatures, against a spec witness on loopback.

The log sends each checkpoint with a consistency proof from the size the witness last
cosigned, learns that size from a 409 when it does not know it, keeps the witness's
cosignature, and ``audit verify`` checks every stored cosignature again: a log rewritten
and re-signed by someone holding the log's key no longer carries a valid cosignature.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import update

from meshclaw._loopback import LoopbackServer
from meshclaw.audit.checkpoint import Checkpoint, CheckpointError
from meshclaw.audit.cosignature import CosignatureVerifier, Cosigner, signed_message
from meshclaw.audit.models import AuditWitnessSend
from meshclaw.audit.witness import Witnesses
from tests.audit.conftest import AuditWorld, append_many
from tests.audit.test_witness import _rewrite_and_resign, _sends
from tests.audit.tlog_witness import TlogWitness

BODY = Checkpoint(origin="example.test/log", size=7, root=b"\x01" * 32).body()


# -- cosignatures ------------------------------------------------------------------------


def test_a_cosignature_verifies_with_its_key_and_carries_its_time() -> None:
    cosigner = Cosigner("witness.example/w1", Ed25519PrivateKey.generate())
    line = cosigner.cosign(BODY, 1_679_315_147)
    verifier = CosignatureVerifier.from_vkey(cosigner.verifier.vkey())
    assert verifier.verify(BODY, ["— someone.else AAAA", line.rstrip("\n")]) == 1_679_315_147
    assert signed_message(BODY, 5).startswith(b"cosignature/v1\ntime 5\nexample.test/log\n7\n")


def test_a_cosignature_over_another_checkpoint_or_by_another_key_is_refused() -> None:
    cosigner = Cosigner("witness.example/w1", Ed25519PrivateKey.generate())
    line = cosigner.cosign(BODY, 10).rstrip("\n")
    other_body = BODY.replace("\n7\n", "\n8\n")
    with pytest.raises(CheckpointError, match="does not verify"):
        cosigner.verifier.verify(other_body, [line])
    stranger = Cosigner("witness.example/w1", Ed25519PrivateKey.generate()).verifier
    with pytest.raises(CheckpointError, match="no cosignature by witness key"):
        stranger.verify(BODY, [line])


@pytest.mark.parametrize(
    ("vkey", "message"),
    [
        ("no-plus-signs", "must look like"),
        ("w+zz+AAAA", "bad hex"),
        ("w+00000000+" + "A" * 44, "algorithm byte 0x04"),
    ],
)
def test_bad_witness_keys_are_refused_with_the_reason(vkey: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        CosignatureVerifier.from_vkey(vkey)


def test_a_key_id_that_does_not_match_is_refused() -> None:
    vkey = Cosigner("w", Ed25519PrivateKey.generate()).verifier.vkey()
    name, _, rest = vkey.partition("+")
    with pytest.raises(CheckpointError, match="key id does not match"):
        CosignatureVerifier.from_vkey(f"{name}+00000000+{rest.partition('+')[2]}")


# -- the protocol ------------------------------------------------------------------------


@pytest.fixture
def tlog_witness() -> Iterator[tuple[TlogWitness, str]]:
    w = TlogWitness()
    with LoopbackServer(w.app, name="tlog-witness") as server:
        yield w, server.url


def _world(
    audit_world: Callable[..., AuditWorld], tlog_witness: tuple[TlogWitness, str]
) -> tuple[AuditWorld, Witnesses]:
    w, url = tlog_witness
    world = audit_world(
        checkpoint_every=0,
        checkpoint_seconds=0,
        witnesses=[{"url": url, "protocol": "tlog-witness", "key": w.cosigner.verifier.vkey()}],
    )
    w.origin, w.log_key = world.log.origin, world.log.verifier()
    witnesses = world.log._witnesses
    assert witnesses is not None
    witnesses._background = False  # deliver by hand, to see each request
    return world, witnesses


def test_checkpoints_are_cosigned_with_consistency_proofs_from_the_last_cosigned_size(
    audit_world: Callable[..., AuditWorld], tlog_witness: tuple[TlogWitness, str]
) -> None:
    w, url = tlog_witness
    world, witnesses = _world(audit_world, tlog_witness)
    sizes = []
    for n in (37, 64, 101):
        append_many(world.platform, n)
        sizes.append(world.log.checkpoint(world.auditor).size)
        assert witnesses.deliver_due().sent == 1
    # First from 0 (no proof), then each from the size before, with a proof that verified.
    assert w.requests == [(0, sizes[0], 200), (sizes[0], sizes[1], 200), (sizes[1], sizes[2], 200)]
    assert w.latest is not None and w.latest.size == sizes[2]
    listed = {c.size: c for c in world.log.checkpoints(world.auditor)}
    for size in sizes:
        (line,) = listed[size].cosignatures
        body = listed[size].note.partition("\n\n")[0] + "\n"
        assert abs(w.cosigner.verifier.verify(body, [line]) - time.time()) < 120
    report = world.log.verify()
    assert report.ok, report.problem
    assert report.cosigned == 3
    assert all(s.target == url and s.status == "sent" for s in _sends(world))


def test_the_log_learns_the_witness_size_from_a_409_and_sends_again_once(
    audit_world: Callable[..., AuditWorld], tlog_witness: tuple[TlogWitness, str]
) -> None:
    w, _ = tlog_witness
    world, witnesses = _world(audit_world, tlog_witness)
    append_many(world.platform, 20)
    first = world.log.checkpoint(world.auditor).size
    assert witnesses.deliver_due().sent == 1
    # The log forgets that the witness cosigned (e.g. the send row was restored from an
    # old backup): its next request says "old 0", and the witness names its size.
    with world.platform.db.session() as session:
        session.execute(update(AuditWitnessSend).values(status="failed"))
    append_many(world.platform, 15)
    second = world.log.checkpoint(world.auditor).size
    assert witnesses.deliver_due().sent == 1
    assert w.requests[-2:] == [(0, second, 409), (first, second, 200)]


def test_a_witness_holding_another_tree_is_a_fork_recorded_and_retried(
    audit_world: Callable[..., AuditWorld], tlog_witness: tuple[TlogWitness, str]
) -> None:
    w, _ = tlog_witness
    world, witnesses = _world(audit_world, tlog_witness)
    append_many(world.platform, 20)
    world.log.checkpoint(world.auditor)
    assert witnesses.deliver_due().sent == 1
    assert w.latest is not None
    # The witness already holds a different tree of the very size the log sends next.
    append_many(world.platform, 10)
    size = world.log.checkpoint(world.auditor).size
    w.latest = Checkpoint(origin=w.latest.origin, size=size, root=b"\x09" * 32)
    assert witnesses.deliver_due().retried == 1
    send = _sends(world)[-1]
    assert send.status == "pending" and send.cosignature is None
    assert "another tree of size" in (send.last_error or "")


@pytest.mark.sqlite_only  # rewrites the database file
def test_verify_rechecks_cosignatures_and_sees_a_log_rewritten_after_it_was_cosigned(
    audit_world: Callable[..., AuditWorld], tlog_witness: tuple[TlogWitness, str]
) -> None:
    world, witnesses = _world(audit_world, tlog_witness)
    append_many(world.platform, 60)
    size = world.log.checkpoint(world.auditor).size
    assert witnesses.deliver_due().sent == 1
    assert world.log.verify().ok

    _rewrite_and_resign(world, seq=30, resign=True)
    # tlog-witness witnesses serve nothing to fetch: only the stored cosignature tells.
    assert world.log.verify(witnesses=False).ok
    report = world.log.verify()
    assert not report.ok and report.problem is not None
    assert report.problem.kind == "witness" and report.problem.checkpoint_size == size
    assert "rewritten after it was witnessed" in report.problem.message


@pytest.mark.sqlite_only  # rewrites the database file
def test_verify_sees_a_cosigned_checkpoint_that_was_deleted(
    audit_world: Callable[..., AuditWorld], tlog_witness: tuple[TlogWitness, str]
) -> None:
    world, witnesses = _world(audit_world, tlog_witness)
    append_many(world.platform, 30)
    size = world.log.checkpoint(world.auditor).size
    assert witnesses.deliver_due().sent == 1
    _rewrite_and_resign(world, seq=3, resign=False)
    report = world.log.verify()
    assert not report.ok and report.problem is not None
    assert report.problem.kind == "witness" and report.problem.checkpoint_size == size
    assert "no longer holds" in report.problem.message


def test_a_tlog_witness_answer_by_another_key_is_refused(
    audit_world: Callable[..., AuditWorld], tlog_witness: tuple[TlogWitness, str]
) -> None:
    w, url = tlog_witness
    stranger = Cosigner(w.cosigner.name, Ed25519PrivateKey.generate()).verifier.vkey()
    world = audit_world(
        checkpoint_every=0,
        checkpoint_seconds=0,
        witnesses=[{"url": url, "protocol": "tlog-witness", "key": stranger}],
    )
    w.origin, w.log_key = world.log.origin, world.log.verifier()
    witnesses = world.log._witnesses
    assert witnesses is not None
    witnesses._background = False
    world.log.checkpoint(world.auditor)
    assert witnesses.deliver_due().retried == 1
    (send,) = _sends(world)
    assert "no valid cosignature" in (send.last_error or "") and send.cosignature is None
