"""The beat scheduler runs the sweeper and cron in its own process (not on busy workers)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from celery.beat import ScheduleEntry
from sqlalchemy import select, update

from meshclaw.clock import utcnow
from meshclaw.store.models import Run
from meshclaw.workers.celery_app import CRON_TICK, SWEEP, create_celery
from meshclaw.workers.leases import Leases
from meshclaw.workers.scheduler import MeshClawScheduler
from tests.conftest import World, agent_yaml

EVERY_MINUTE = agent_yaml(name="minutely").replace(
    "budget:", "triggers:\n  - {type: cron, schedule: '* * * * *'}\nbudget:"
)


def test_beat_entries_for_sweep_and_cron_run_in_the_scheduler_process(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    world.save_agent(EVERY_MINUTE)
    settings = world.platform.settings.model_copy(update={"broker_url": "memory://"})
    app, runtime = create_celery(settings, platform_factory=lambda _: world.platform)
    sent: list[str] = []
    runtime.dispatch = sent.append
    bound = type("Bound", (MeshClawScheduler,), {"runtime": runtime})
    scheduler = bound(app=app, lazy=True)

    crashed = world.platform.runs.create(world.alice, "minutely", "x").id
    assert Leases(world.platform.db).claim(crashed, "dead-worker") is not None
    with world.platform.db.session() as session:
        session.execute(
            update(Run)
            .where(Run.id == crashed)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )

    for task in (SWEEP, CRON_TICK):
        entry = ScheduleEntry(name=task, task=task, schedule=timedelta(seconds=5), app=app)
        assert scheduler.apply_async(entry) is None  # ran here, nothing sent to a worker

    with world.platform.db.session() as session:
        cron_runs = session.scalars(select(Run.id).where(Run.trigger == "cron")).all()
    assert len(cron_runs) == 1
    assert sent == [crashed, cron_runs[0]]  # the crashed run re-sent, the new one sent
