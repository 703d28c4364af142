"""``meshclaw scheduler``: Celery beat, with the sweeper and cron run in the beat process.

Beat keeps the timetable. Its two MeshClaw entries are not sent to the workers but run
here (``apply_async`` below), so they are never stuck behind a backlog of runs:

- ``meshclaw.sweep``: re-sends runs whose worker's lease expired, and queued runs whose
  message went missing (``workers.leases.Leases.sweep``); harmless on several replicas;
- ``meshclaw.cron_tick``: fires the agents' cron triggers (``triggers.cron``) as the
  single leader among replicas.

Its third entry, ``meshclaw.outcomes_recheck`` (every ``outcomes_recheck_seconds``), is
sent to the workers like any task: re-checks read connectors and may take a while; so
is ``meshclaw.integrity_scan`` (every ``integrity_scan_hours``, ``integrity.live``).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.beat import Scheduler

from meshclaw.workers.celery_app import CRON_TICK, SWEEP, WorkerRuntime

log = logging.getLogger(__name__)


class MeshClawScheduler(Scheduler):  # type: ignore[misc]
    """In-memory beat scheduler (the timetable is code) that runs MeshClaw's own entries."""

    runtime: WorkerRuntime | None = None
    """Bound by ``run_scheduler`` (beat instantiates the class itself)."""

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kw: Any) -> Any:
        if entry.task not in (SWEEP, CRON_TICK):
            return super().apply_async(entry, producer=producer, advance=advance, **kw)
        entry = self.reserve(entry) if advance else entry
        runtime = type(self).runtime
        if runtime is None:
            return None
        try:
            if entry.task == SWEEP:
                runtime.sweep()
            else:
                from meshclaw.triggers.cron import CronFirer

                CronFirer(runtime.platform, dispatch=runtime.dispatch, owner=runtime.name).tick()
        except Exception:  # a store outage must not stop beat: the next tick tries again
            log.exception("scheduler entry %s failed", entry.task)
        return None


def run_scheduler(app: Celery, runtime: WorkerRuntime) -> None:
    """Run beat in this process until it is stopped (SIGTERM / Ctrl-C)."""
    bound = type("BoundMeshClawScheduler", (MeshClawScheduler,), {"runtime": runtime})
    beat = app.Beat(scheduler=bound, loglevel="INFO", quiet=True)
    beat.run()
