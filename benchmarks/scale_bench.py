"""Scale-out benchmark: N concurrent runs on Celery workers vs the embedded in-process worker.

    .venv/bin/python benchmarks/scale_bench.py --write docs/benchmarks.md    # make bench
    .venv/bin/python benchmarks/scale_bench.py --runs 50 --quick      # smoke run, prints only

Needs PostgreSQL (``MESHCLAW_TEST_PG_URL``) and the broker (``--broker``, Redis or
RabbitMQ); without them it says which one is missing and exits 0 without writing, so
``make bench`` goes on and the figures already in the file stay.

Workload: ``--runs`` runs queued at once, each a 3-step conversation (model → ``clock.now``
→ model) against the scripted model server answering after ``--latency-ms`` per turn.

- **embedded**: the default deployment: SQLite, ``InProcessWorker`` with
  ``--workers x --concurrency`` slots in this process.
- **celery**: PostgreSQL, a broker (``--broker``), and ``--workers`` real ``meshclaw worker``
  processes with ``--concurrency`` threads each; runs are sent with ``CeleryDispatcher``.

Reported from the store after every run ended: throughput (finished steps per second of
wall time from the first run created to the last run ended), p50/p99 step latency (a
step's ``ended_at - started_at``: persist, authorise, call, meter, audit), p50/p99 queue
wait (created → claimed) and errors (runs that did not succeed; target 0).
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select, text

from meshclaw.config import ProviderConfig, Settings
from meshclaw.platform import Platform
from meshclaw.providers.scripted import Script, ScriptedServer
from meshclaw.spec.loader import parse_spec
from meshclaw.store.models import Run, RunStep

BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"
PG_ADMIN = os.environ.get(
    "MESHCLAW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
AGENT = """name: bench
owner: alice
model: {provider: scripted, model: bench-model}
instructions: Tell the time.
tools:
  - {name: clock.now, scope: read}
budget: {max_steps: 5, timeout_seconds: 600}
"""


@dataclass
class Result:
    mode: str
    runs: int
    ok: int
    steps: int
    wall: float
    step_p50: float
    step_p99: float
    wait_p50: float
    wait_p99: float

    @property
    def throughput(self) -> float:
        return self.steps / self.wall if self.wall else 0.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def script(latency_ms: int) -> Script:
    return Script.model_validate(
        {
            "models": ["bench-model"],
            "turns": [
                {
                    "reply": {"tool_calls": [{"name": "clock.now", "arguments": {"tz": "UTC"}}]},
                    "delay_ms": latency_ms,
                },
                {"reply": {"content": "It is now."}, "delay_ms": latency_ms},
            ],
        }
    )


def seed(settings: Settings) -> tuple[Platform, Any]:
    platform = Platform(settings)
    accounts = platform.accounts
    org = accounts.create_org(f"bench-{uuid.uuid4().hex[:6]}")
    alice = accounts.caller_for(accounts.create_user(org.id, "alice"))
    platform.agents.save(alice, parse_spec(AGENT))
    return platform, alice


def measure(platform: Platform, mode: str, run_ids: list[str]) -> Result:
    with platform.db.session() as session:
        runs = session.scalars(select(Run).where(Run.id.in_(run_ids))).all()
        steps = session.scalars(select(RunStep).where(RunStep.run_id.in_(run_ids))).all()
    latencies = [(s.ended_at - s.started_at).total_seconds() for s in steps if s.ended_at]
    waits = [(r.started_at - r.created_at).total_seconds() for r in runs if r.started_at]
    first = min(r.created_at for r in runs)
    last = max((r.ended_at for r in runs if r.ended_at), default=first)
    return Result(
        mode=mode,
        runs=len(runs),
        ok=sum(r.status == "succeeded" for r in runs),
        steps=sum(1 for s in steps if s.ended_at and s.status == "ok"),
        wall=(last - first).total_seconds(),
        step_p50=pct(latencies, 0.50),
        step_p99=pct(latencies, 0.99),
        wait_p50=pct(waits, 0.50),
        wait_p99=pct(waits, 0.99),
    )


def wait_all(platform: Platform, run_ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with platform.db.session() as session:
            pending = session.scalar(
                select(text("count(*)"))
                .select_from(Run)
                .where(Run.id.in_(run_ids), Run.status.in_(("queued", "running")))
            )
        if not pending:
            return
        time.sleep(0.25)
    raise SystemExit(f"runs still pending after {timeout:g} s")


def embedded(args: argparse.Namespace, model_url: str, home: Path) -> Result:
    from meshclaw.workers.inprocess import InProcessWorker

    settings = Settings(
        home=home / "embedded",
        embedded_model_server=False,
        providers={"scripted": ProviderConfig(base_url=model_url, timeout_seconds=60)},
    )
    platform, alice = seed(settings)
    worker = InProcessWorker(
        platform, concurrency=args.workers * args.concurrency, poll_seconds=0.05
    )
    try:
        worker.start()
        run_ids = [platform.runs.create(alice, "bench", f"t{i}").id for i in range(args.runs)]
        worker.wake()
        wait_all(platform, run_ids, args.timeout)
        return measure(platform, "embedded (SQLite, in-process)", run_ids)
    finally:
        worker.stop()
        platform.close()


def celery(args: argparse.Namespace, model_url: str, home: Path) -> Result:
    from meshclaw.workers.celery_app import CeleryDispatcher
    from meshclaw.workers.leases import Leases

    name = f"meshclaw_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    providers = {"scripted": {"base_url": model_url, "timeout_seconds": 60}}
    settings = Settings(
        home=home / "celery",
        database_url=url,
        broker_url=args.broker,
        embedded_model_server=False,
        providers={"scripted": ProviderConfig(base_url=model_url, timeout_seconds=60)},
    )
    platform, alice = seed(settings)
    env = {
        **os.environ,
        "MESHCLAW_HOME": str(home / "celery"),
        "MESHCLAW_DATABASE_URL": url,
        "MESHCLAW_BROKER_URL": args.broker,
        "MESHCLAW_EMBEDDED_MODEL_SERVER": "false",
        "MESHCLAW_PROVIDERS": json.dumps(providers),
    }
    env.pop("MESHCLAW_CONFIG", None)
    logs = [(home / f"worker-{i}.log").open("wb") for i in range(args.workers)]
    meshclaw = str(Path(sys.executable).with_name("meshclaw"))
    workers = [
        subprocess.Popen(
            [meshclaw, "worker", f"--concurrency={args.concurrency}", "--loglevel=WARNING"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for log in logs
    ]
    dispatcher = CeleryDispatcher(settings, Leases(platform.db))
    try:
        deadline = time.monotonic() + args.startup  # the clock starts when all consume
        while dispatcher.workers_ready() < args.workers and time.monotonic() < deadline:
            time.sleep(0.5)
        run_ids = []
        for i in range(args.runs):
            run_id = platform.runs.create(alice, "bench", f"t{i}").id
            dispatcher.dispatch(run_id)
            run_ids.append(run_id)
        wait_all(platform, run_ids, args.timeout)
        return measure(platform, f"celery ({args.workers} workers, PostgreSQL)", run_ids)
    finally:
        dispatcher.close()
        for proc in workers:
            proc.terminate()
        for proc in workers:
            proc.wait(timeout=60)
        platform.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def missing_services(args: argparse.Namespace) -> str | None:
    """Why the celery mode cannot run here (PostgreSQL or the broker not answering)."""
    from kombu.connection import Connection

    engine = create_engine(PG_ADMIN, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:
        return f"PostgreSQL not reachable at {PG_ADMIN}: {type(exc).__name__}"
    finally:
        engine.dispose()
    try:
        with Connection(args.broker, connect_timeout=3) as broker:  # type: ignore[no-untyped-call]
            broker.ensure_connection(max_retries=1)
    except Exception as exc:
        return f"broker not reachable at {args.broker}: {type(exc).__name__}"
    return None


def table(results: list[Result]) -> list[str]:
    lines = [
        "| mode | runs | errors | steps | wall s | steps/s | step p50 ms | step p99 ms "
        "| queue wait p50 s | p99 s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.mode} | {r.runs} | {r.runs - r.ok} | {r.steps} | {r.wall:.1f} "
            f"| {r.throughput:.1f} | {r.step_p50 * 1000:.0f} | {r.step_p99 * 1000:.0f} "
            f"| {r.wait_p50:.1f} | {r.wait_p99:.1f} |"
        )
    return lines


def section(args: argparse.Namespace, results: list[Result], load: float) -> str:
    """The benchmark's section; ``load`` is the load average before it started (its own
    processes load the machine while it runs, so the load at the end says little)."""
    ratio = results[1].throughput / results[0].throughput if results[0].throughput else 0.0
    return "\n".join(
        [
            BEGIN,
            "## Scale-out (`benchmarks/scale_bench.py`)",
            "",
            f"{args.runs} runs queued at once, each model → `clock.now` → model against the "
            f"scripted model answering after {args.latency_ms} ms per turn; embedded: "
            f"{args.workers * args.concurrency} in-process slots on SQLite; celery: "
            f"{args.workers} `meshclaw worker` processes x {args.concurrency} threads on "
            f"PostgreSQL and `{args.broker.split('://')[0]}`.",
            "",
            *table(results),
            "",
            f"Celery / embedded throughput: **{ratio:.2f}x**. Machine: {host.machine()}, "
            f"{os.cpu_count()} cores, {host.system()} {host.release()}, Python "
            f"{host.python_version()}, load average {load:.1f} before it started, "
            f"{datetime.now().date().isoformat()}.",
            "",
            "Reading: on one 2-core machine the worker processes compete with PostgreSQL, the "
            "broker and the model server for the same cores, so this measures that the "
            "scale-out path works at this concurrency with no errors and what it costs per "
            "step (the store round trips of a networked database), not how it scales across "
            "machines."
            + (
                " This run shared the machine with other jobs (see the load average): rerun "
                "it on an idle machine before comparing the modes."
                if load > (os.cpu_count() or 1)
                else ""
            ),
            END,
        ]
    )


def write(path: Path, text_: str) -> None:
    current = path.read_text() if path.exists() else ""
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        current = head + text_ + rest.split(END, 1)[1]
    else:
        current = current.rstrip("\n") + "\n\n" + text_ + "\n"
    path.write_text(current)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-ms", type=int, default=300)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--startup", type=float, default=120.0, help="max seconds to start")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--quick", action="store_true", help="smoke run; prints only")
    parser.add_argument("--write", type=Path, help="replace this script's section in FILE")
    args = parser.parse_args()
    missing = missing_services(args)
    if missing is not None:
        print(f"scale_bench: skipped, {missing} (the figures in the file are kept)")
        return
    load = os.getloadavg()[0]
    server = ScriptedServer(script(args.latency_ms))
    server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results = [
                embedded(args, server.base_url, Path(tmp)),
                celery(args, server.base_url, Path(tmp)),
            ]
    finally:
        server.stop()
    print("\n".join(table(results)))
    if args.write and not args.quick:
        write(args.write, section(args, results, load))


if __name__ == "__main__":
    main()
