"""Timed checkpoints: the scheduler signs one when records exist that none covers yet."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import func, select

from meshclaw.audit.models import AuditCheckpoint
from meshclaw.config import AuditSettings, Settings
from meshclaw.workers.celery_app import AUDIT_CHECKPOINT, celery_config
from meshclaw.workers.inprocess import InProcessWorker
from tests.audit.conftest import AuditWorld, append_many


def _latest(world: AuditWorld) -> int:
    with world.platform.db.session() as session:
        return session.scalar(select(func.max(AuditCheckpoint.size))) or 0


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)  # poll interval


def test_the_embedded_worker_cuts_a_checkpoint_on_time(
    audit_world: Callable[..., AuditWorld],
) -> None:
    world = audit_world(checkpoint_every=0, checkpoint_seconds=0.2)
    append_many(world.platform, 7)
    worker = InProcessWorker(world.platform, cron=True, cron_seconds=3600, poll_seconds=0.05)
    worker.start()
    try:
        size = world.log.head()[0]
        _wait_for(lambda: _latest(world) == size, f"a checkpoint of size {size}")
        append_many(world.platform, 3)
        _wait_for(lambda: _latest(world) == size + 3, "a checkpoint of the new records")
    finally:
        worker.stop()
    report = world.log.verify()
    assert report.ok and not report.notes, report.notes  # every record is covered
    # Nothing new: no checkpoint (the job does not sign the same tree again).
    assert world.log.scheduled().checkpoint is None
    append_many(world.platform, 1)
    assert world.log.scheduled().checkpoint == size + 4


def test_timed_checkpoints_can_be_switched_off(audit_world: Callable[..., AuditWorld]) -> None:
    world = audit_world(checkpoint_every=0, checkpoint_seconds=0)
    append_many(world.platform, 5)
    assert world.log.scheduled().checkpoint is None
    assert _latest(world) == 0


def test_celery_beat_runs_the_audit_job() -> None:
    def schedule(**audit: object) -> dict[str, object]:
        settings = Settings(broker_url="redis://127.0.0.1:1/0", audit=AuditSettings(**audit))
        return dict(celery_config(settings)["beat_schedule"])

    entry = schedule(checkpoint_seconds=120)["meshclaw-audit-checkpoint"]
    assert entry["task"] == AUDIT_CHECKPOINT and entry["schedule"] == 120  # type: ignore[index]
    assert "meshclaw-audit-checkpoint" not in schedule(checkpoint_seconds=0)
    # Witness retries still need the job when timed checkpoints are off.
    with_witness = schedule(checkpoint_seconds=0, syslog=["udp://127.0.0.1:514"])
    assert with_witness["meshclaw-audit-checkpoint"]["schedule"] == 60  # type: ignore[index]
