"""The embedded mode (``meshclaw serve`` without a broker) fires cron triggers itself."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from meshclaw.providers.scripted import ScriptedServer
from meshclaw.store.models import Run
from meshclaw.workers.inprocess import InProcessWorker
from tests.conftest import World, agent_yaml

EVERY_MINUTE = agent_yaml(name="minutely").replace(
    "budget:", "triggers:\n  - {type: cron, schedule: '* * * * *', input: tick}\nbudget:"
)


def test_the_in_process_worker_fires_and_runs_cron_triggers(
    scripted: Callable[[dict[str, Any]], ScriptedServer], make_world: Callable[..., World]
) -> None:
    server = scripted({"turns": [{"reply": {"content": "ticked"}}]})
    world = make_world(server.base_url)
    world.save_agent(EVERY_MINUTE)
    worker = InProcessWorker(world.platform, poll_seconds=0.05, cron=True, cron_seconds=0.2)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with world.platform.db.session() as session:
                runs = session.scalars(select(Run).where(Run.trigger == "cron")).all()
            if any(r.status == "succeeded" for r in runs):
                break
            time.sleep(0.1)
    finally:
        worker.stop()
    # One run per minute: a second only if the test crossed a minute boundary.
    assert 1 <= len(runs) <= 2 and {r.input for r in runs} == {"tick"}
    assert ("succeeded", "ticked") in [(r.status, r.output) for r in runs]
