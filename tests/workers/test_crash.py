"""The crash test: runs survive ``kill -9`` of their workers, with no side effect twice.

Two Celery worker processes and a scheduler (the sweeper) on PostgreSQL and a real
broker (Redis, then RabbitMQ) execute runs whose tools write to a loopback app that
counts calls by idempotency key; workers are killed with SIGKILL at random moments and
restarted. Then: every run succeeded, none lost, every tool call's effect applied once,
and every model call metered once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from meshclaw.providers.scripted import ScriptedServer
from meshclaw.store.models import Run, RunStep, UsageRecord
from meshclaw.workers.celery_app import CeleryDispatcher
from meshclaw.workers.leases import Leases
from tests.conftest import IN_CI, World, agent_yaml
from tests.workers.sidefx import SideEffectServer

ROOT = Path(__file__).resolve().parents[2]
RUNS = 200 if IN_CI else 50
KILLS = 5 if IN_CI else 3
LEASE_SECONDS = 4
WRITES_PER_RUN = 3
MODEL_CALLS_PER_RUN = 3

SCRIPT = {
    "turns": [
        {
            "reply": {
                "tool_calls": [
                    {"name": "sidefx.apply", "arguments": {"item": "a"}},
                    {"name": "sidefx.apply", "arguments": {"item": "b"}},
                ]
            },
            "delay_ms": 200,
        },
        {
            "reply": {"tool_calls": [{"name": "sidefx.apply", "arguments": {"item": "c"}}]},
            "delay_ms": 200,
        },
        {"reply": {"content": "all applied"}, "delay_ms": 100},
    ]
}


@pytest.fixture
def sidefx() -> Iterator[SideEffectServer]:
    server = SideEffectServer(delay=(0.05, 0.3)).start()
    yield server
    server.stop()


class Cluster:
    """Worker and scheduler processes sharing one environment."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self._env = env
        self._logs = logs
        self.workers: list[subprocess.Popen[bytes]] = []
        self.others: list[subprocess.Popen[bytes]] = []
        self._log_of: dict[int, Path] = {}
        self._count = 0

    def _spawn(self, role: str) -> subprocess.Popen[bytes]:
        self._count += 1
        path = self._logs / f"{role}-{self._count}.log"
        log = path.open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.workers._proc", role],
            cwd=ROOT,
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self._log_of[proc.pid] = path
        return proc

    def ready(self) -> list[subprocess.Popen[bytes]]:
        """Workers that finished starting (Celery logs "ready" once consuming)."""
        return [w for w in self.workers if b" ready." in self._log_of[w.pid].read_bytes()]

    def start_worker(self) -> None:
        self.workers.append(self._spawn("worker"))

    def start_scheduler(self) -> None:
        self.others.append(self._spawn("scheduler"))

    def kill_one(self, rng: random.Random) -> None:
        victim = rng.choice(self.ready())
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        self.workers.remove(victim)

    def stop(self) -> None:
        for proc in self.workers + self.others:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers + self.others:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _statuses(world: World, run_ids: list[str]) -> Counter[str]:
    with world.platform.db.session() as session:
        rows = session.scalars(select(Run.status).where(Run.id.in_(run_ids))).all()
    return Counter(rows)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(420)
def test_runs_survive_killed_workers_with_no_side_effect_twice(
    pg_url: str,
    broker_url: str,
    queue: str,
    sidefx: SideEffectServer,
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
    tmp_path: Path,
) -> None:
    model = scripted(SCRIPT)
    world = make_world(model.base_url, pg_url)
    world.save_agent(agent_yaml(name="writer", tools=(("sidefx.apply", "write"),), timeout=120))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MESHCLAW_HOME": str(tmp_path / "var"),
        "MESHCLAW_DATABASE_URL": pg_url,
        "MESHCLAW_BROKER_URL": broker_url,
        "MESHCLAW_EMBEDDED_MODEL_SERVER": "false",
        "MESHCLAW_PROVIDERS": json.dumps(
            {"scripted": {"base_url": model.base_url, "timeout_seconds": 10}}
        ),
        "MESHCLAW_LEASE_SECONDS": str(LEASE_SECONDS),
        "MESHCLAW_MAX_RUN_ATTEMPTS": "50",
        "MESHCLAW_WORKERS": "4",
        "MESHCLAW_TEST_QUEUE": queue,
        "MESHCLAW_TEST_SIDEFX_URL": sidefx.url,
    }
    env.pop("MESHCLAW_CONFIG", None)
    settings = world.platform.settings.model_copy(
        update={"broker_url": broker_url, "lease_seconds": LEASE_SECONDS}
    )
    leases = Leases(world.platform.db, ttl_seconds=LEASE_SECONDS)
    dispatcher = CeleryDispatcher(settings, leases, queue=queue)
    cluster = Cluster(env, tmp_path)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    try:
        began = time.monotonic()
        cluster.start_scheduler()
        cluster.start_worker()
        cluster.start_worker()
        run_ids = []
        for i in range(RUNS):
            info = world.platform.runs.create(world.alice, "writer", f"task {i}", trigger="api")
            dispatcher.dispatch(info.id)
            run_ids.append(info.id)

        # Kill a worker at a random moment whenever both are up, then start a new one.
        deadline = time.monotonic() + 150
        kills = 0
        while kills < KILLS and time.monotonic() < deadline:
            if len(cluster.ready()) < 2:
                time.sleep(0.1)
                continue
            time.sleep(rng.uniform(0.3, 3.0))
            cluster.kill_one(rng)
            cluster.start_worker()
            kills += 1
        assert kills == KILLS, f"seed {seed}: workers did not start in time"
        print(f"kills done at {time.monotonic() - began:.1f}s: {_statuses(world, run_ids)}")

        deadline = time.monotonic() + 200
        while time.monotonic() < deadline:
            statuses = _statuses(world, run_ids)
            if sum(statuses[s] for s in ("succeeded", "failed", "cancelled")) == RUNS:
                break
            time.sleep(0.25)
        print(f"finished at {time.monotonic() - began:.1f}s")
    finally:
        dispatcher.close()
        cluster.stop()

    statuses = _statuses(world, run_ids)
    assert statuses == Counter({"succeeded": RUNS}), f"seed {seed}: {statuses}"

    # Exactly-once side effects: each run applied exactly its tool calls' effects.
    by_run = sidefx.keys_by_run()
    assert set(by_run) == set(run_ids), f"seed {seed}"
    duplicated = {r: len(k) for r, k in by_run.items() if len(k) != WRITES_PER_RUN}
    assert duplicated == {}, f"seed {seed}: runs with extra side effects {duplicated}"
    assert len(sidefx.applied) == RUNS * WRITES_PER_RUN

    # Metering: one usage record per finished model call, none for calls cut off.
    with world.platform.db.session() as session:
        model_usage = dict(
            session.execute(
                select(UsageRecord.run_id, func.count())
                .where(UsageRecord.kind == "model", UsageRecord.run_id.in_(run_ids))
                .group_by(UsageRecord.run_id)
            ).all()
        )
        metered_steps = session.scalars(
            select(UsageRecord.step_id).where(UsageRecord.run_id.in_(run_ids))
        ).all()
        ok_model_steps = session.scalar(
            select(func.count()).where(
                RunStep.run_id.in_(run_ids), RunStep.kind == "model", RunStep.status == "ok"
            )
        )
    assert set(model_usage.values()) == {MODEL_CALLS_PER_RUN}, f"seed {seed}"
    assert len(metered_steps) == len(set(metered_steps))  # no step metered twice
    assert ok_model_steps == RUNS * MODEL_CALLS_PER_RUN
    with world.platform.db.session() as session:
        continued = session.scalar(
            select(func.count()).where(Run.id.in_(run_ids), Run.attempts > 1)
        )
    assert continued, f"seed {seed}: no kill hit a run in flight"
    retried = sum(1 for n in sidefx.calls.values() if n > 1)
    print(
        f"seed {seed}: {KILLS} kills, {continued} runs continued by another worker, "
        f"{retried} tool calls retried with their key"
    )
