"""Beat sends the install-wide outcome re-check; a Celery worker on the real broker runs it."""

from __future__ import annotations

import time
from collections.abc import Callable

from celery.contrib.testing.worker import start_worker

from meshclaw.workers.celery_app import create_celery
from meshclaw.workers.scheduler import MeshClawScheduler
from tests.conftest import World
from tests.outcomes.test_outcomes import Start, only_outcome
from tests.outcomes.test_recheck import due_ticket, rechecks


def test_beat_has_a_worker_recheck_every_orgs_outcomes(
    broker_url: str, queue: str, scripted: Start, make_world: Callable[..., World]
) -> None:
    world, _ = due_ticket(scripted, make_world)
    globex = world.platform.accounts.create_org("globex")  # a second org: nothing due there
    assert globex.id != world.alice.org_id
    settings = world.platform.settings.model_copy(
        update={"broker_url": broker_url, "outcomes_recheck_seconds": 0.5}
    )
    app, runtime = create_celery(settings, platform_factory=lambda _: world.platform, queue=queue)
    runtime.dispatch = lambda run_id: None  # no runs here: the sweep and cron send nothing
    beat = type("Bound", (MeshClawScheduler,), {"runtime": runtime})(app=app)
    assert "meshclaw-outcomes-recheck" in beat.schedule  # the timetable beat really keeps
    with start_worker(app, pool="threads", perform_ping_check=False, shutdown_timeout=30):
        deadline = time.monotonic() + 30
        while only_outcome(world).state != "undone":
            assert time.monotonic() < deadline, "the scheduled re-check did not run"
            beat.tick()  # sends the entry when due; the worker runs it
            time.sleep(0.1)
    assert rechecks(world) == ["reopened"]
    assert only_outcome(world).durability_due_at is None
