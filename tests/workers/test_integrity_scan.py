"""Beat sends the install-wide live integrity scan; a Celery worker on the real broker runs it."""

from __future__ import annotations

import time
from collections.abc import Callable

from celery.contrib.testing.worker import start_worker
from sqlalchemy import select

from meshclaw.integrity.models import IntegrityFinding
from meshclaw.workers.celery_app import create_celery
from meshclaw.workers.scheduler import MeshClawScheduler
from tests.conftest import World
from tests.integrity.test_live_scan import gaming_world


def _subjects(world: World) -> set[str]:
    with world.platform.db.session() as session:
        return set(session.scalars(select(IntegrityFinding.subject)))


def test_beat_has_a_worker_scan_every_orgs_recent_history(
    broker_url: str, queue: str, make_world: Callable[..., World]
) -> None:
    world, _ = gaming_world(make_world)
    settings = world.platform.settings.model_copy(
        update={"broker_url": broker_url, "integrity_scan_hours": 0.5 / 3600}
    )
    app, runtime = create_celery(settings, platform_factory=lambda _: world.platform, queue=queue)
    runtime.dispatch = lambda run_id: None  # no runs here: the sweep and cron send nothing
    beat = type("Bound", (MeshClawScheduler,), {"runtime": runtime})(app=app)
    assert "meshclaw-integrity-scan" in beat.schedule  # the timetable beat really keeps
    assert _subjects(world) == set()
    with start_worker(app, pool="threads", perform_ping_check=False, shutdown_timeout=30):
        deadline = time.monotonic() + 30
        while not _subjects(world):
            assert time.monotonic() < deadline, "the scheduled integrity scan did not run"
            beat.tick()  # sends the entry when due; the worker runs it
            time.sleep(0.1)
    assert _subjects(world) == {world.alice.user_id}
