"""A worker stopped with SIGTERM hands unfinished runs back; another worker finishes them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from sqlalchemy import select

from meshclaw.providers.scripted import ScriptedServer
from meshclaw.store.models import Run, RunStep, UsageRecord
from meshclaw.workers.celery_app import CeleryDispatcher
from meshclaw.workers.leases import Leases
from tests.conftest import World, agent_yaml
from tests.workers.sidefx import SideEffectServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def redis_queue(redis_url: str) -> Iterator[str]:
    name = f"meshclaw.test.{uuid.uuid4().hex[:10]}"
    yield name
    with Connection(redis_url, connect_timeout=3) as conn:
        conn.default_channel.queue_delete(name)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(200)
def test_sigterm_hands_unfinished_runs_back_to_other_workers(
    pg_url: str,
    redis_url: str,
    redis_queue: str,
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
    tmp_path: Path,
) -> None:
    model = scripted({"turns": [{"reply": {"content": "slow but done"}, "delay_ms": 8000}]})
    world = make_world(model.base_url, pg_url)
    world.save_agent(agent_yaml(name="slow", tools=(), timeout=120))
    sidefx = SideEffectServer().start()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MESHCLAW_HOME": str(tmp_path / "var"),
        "MESHCLAW_DATABASE_URL": pg_url,
        "MESHCLAW_BROKER_URL": redis_url,
        "MESHCLAW_EMBEDDED_MODEL_SERVER": "false",
        "MESHCLAW_PROVIDERS": json.dumps(
            {"scripted": {"base_url": model.base_url, "timeout_seconds": 30}}
        ),
        "MESHCLAW_WORKERS": "2",
        "MESHCLAW_TEST_QUEUE": redis_queue,
        "MESHCLAW_TEST_SIDEFX_URL": sidefx.url,
        "MESHCLAW_TEST_GRACE": "1",
    }
    env.pop("MESHCLAW_CONFIG", None)
    settings = world.platform.settings.model_copy(update={"broker_url": redis_url})
    dispatcher = CeleryDispatcher(settings, Leases(world.platform.db), queue=redis_queue)

    def spawn(name: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("wb")
        return subprocess.Popen(
            [sys.executable, "-m", "tests.workers._proc", "worker"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def run_row() -> Run:
        with world.platform.db.session() as session:
            row = session.get(Run, run_id)
            assert row is not None
            return row

    first = spawn("first")
    second: subprocess.Popen[bytes] | None = None
    try:
        run_id = world.platform.runs.create(world.alice, "slow", "go").id
        dispatcher.dispatch(run_id)
        wait_for(lambda: len(model.requests) >= 1, 90, "the first model call")
        owner = run_row().lease_owner
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0  # warm shutdown, after handing the run back
        row = run_row()
        assert row.status == "queued" and row.lease_owner is None, (row.status, owner)

        second = spawn("second")
        wait_for(lambda: run_row().status == "succeeded", 90, "the second worker")
        assert dispatcher.workers_ready(timeout=5) >= 1  # what `meshclaw worker --ping` asks
    finally:
        dispatcher.close()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        sidefx.stop()

    row = run_row()
    assert row.output == "slow but done" and row.lease_owner != owner
    with world.platform.db.session() as session:
        statuses = session.scalars(
            select(RunStep.status).where(RunStep.run_id == run_id).order_by(RunStep.seq)
        ).all()
        usage = session.scalars(select(UsageRecord).where(UsageRecord.run_id == run_id)).all()
    assert list(statuses) == ["lost", "ok"]  # the interrupted call was made again...
    assert len(usage) == 1  # ...and metered once
