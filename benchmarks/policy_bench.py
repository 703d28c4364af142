"""Policy decision latency: the Cedar authoriser per call, against the spec-only check.

The policy set is the demo org's: the built-in roles and gates, plus every example
agent's spec (``examples/*.yaml`` and the demo agents) compiled to Cedar. Calls are the
kinds a run makes: a model call, a read, a write with arguments and targets, a write
after untrusted content (answered "needs approval", which takes a second evaluation),
a denied call, and an API action (``run.start``). The baseline, measured in the same
run, is ``SpecGrantAuthorizer`` (a Python lookup in the spec, no policy engine).

Warm numbers are what a run sees after its first call (parsed policies, compiled
specs and entity sets cached); "cold" is the first decision for an agent, compiling
its spec. **Target:** warm p99 at most 1 ms per decision, judged on CPU time (wall-clock
p99 is printed too; on a busy shared machine it mostly measures the scheduler).

    .venv/bin/python benchmarks/policy_bench.py               # print the table
    .venv/bin/python benchmarks/policy_bench.py --quick       # smoke run
    .venv/bin/python benchmarks/policy_bench.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform as host
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from meshclaw.accounts.service import Caller
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.policy.authorizer import AuthzRequest, Principal, SpecGrantAuthorizer
from meshclaw.policy.cedar import CedarAuthorizer, PolicyStore
from meshclaw.spec.loader import parse_spec
from meshclaw.spec.models import AgentSpec

ROOT = Path(__file__).resolve().parent.parent
TARGET_P99_MS = 1.0
MARK_BEGIN = "<!-- policy:begin -->"
MARK_END = "<!-- policy:end -->"


def demo_specs() -> dict[str, AgentSpec]:
    paths = sorted((ROOT / "examples").glob("*.yaml"))
    demo = resources.files("meshclaw.data").joinpath("demo-agents")
    texts = [p.read_text() for p in paths] + [
        f.read_text() for f in sorted(demo.iterdir(), key=str) if f.name.endswith(".yaml")
    ]
    specs = [parse_spec(t) for t in texts]
    return {s.name: s for s in specs}


def request(
    spec: AgentSpec, agent_id: str, action: str, resource: str, **context: Any
) -> AuthzRequest:
    return AuthzRequest(
        principal=Principal(org_id="org_demo", user_id="usr_alice", agent_id=agent_id),
        action=action,  # type: ignore[arg-type]
        resource=resource,
        spec=spec,
        context={"run_id": "run_bench", "trigger": "manual"} | context,
    )


FIRST_MODEL_CALL = "model.invoke, a run's first call"
"""Measured with a new run id each time: later steps of a run reuse the decision."""


def _fresh_runs(req: AuthzRequest) -> Callable[[], AuthzRequest]:
    runs = itertools.count()
    return lambda: replace(req, context=req.context | {"run_id": f"run_{next(runs)}"})


def scenarios(specs: dict[str, AgentSpec]) -> list[tuple[str, AuthzRequest, bool | None]]:
    """(label, request, expected allowed; None = needs approval)."""
    mail, tickets = specs["mail-triage"], specs["ticket-updater"]
    deploy = specs["deploy-helper"]
    return [
        (
            FIRST_MODEL_CALL,
            request(mail, "agt_mail", "model.invoke", "model:scripted/scripted-demo"),
            True,
        ),
        (
            "model.invoke, a later step of the run (reused)",
            request(mail, "agt_mail", "model.invoke", "model:scripted/scripted-demo"),
            True,
        ),
        (
            "tool.read mail.read_message",
            request(
                mail,
                "agt_mail",
                "tool.read",
                "tool:mail.read_message",
                arguments={"folder": "INBOX", "uid": 81},
            ),
            True,
        ),
        (
            "tool.write tickets.update (3 args)",
            request(
                tickets,
                "agt_tickets",
                "tool.write",
                "tool:tickets.update",
                arguments={"ticket": "OPS-12", "status": "resolved", "comment": "fixed"},
                targets=["ticket:OPS-12"],
            ),
            True,
        ),
        (
            "tool.write after untrusted (approval)",
            request(
                tickets,
                "agt_tickets",
                "tool.write",
                "tool:tickets.update",
                arguments={"ticket": "OPS-12"},
                targets=["ticket:OPS-12"],
                untrusted_content_seen=True,
            ),
            None,
        ),
        (
            "tool.write denied (reply outside #deploys)",
            request(
                deploy,
                "agt_deploy",
                "tool.write",
                "tool:chat.reply_in_thread",
                arguments={"channel": "#general", "thread_ts": "1.2", "text": "shipped"},
                targets=["chat:#general"],
            ),
            False,
        ),
    ]


def measure(fn: Callable[[], object], n: int) -> tuple[list[float], list[float]]:
    """(wall ms, CPU ms) per call. CPU time (this thread's) is immune to the machine
    handing the core to another process mid-call, which dominates wall p99 under load."""
    for _ in range(min(200, n)):
        fn()
    wall, cpu = [], []
    for _ in range(n):
        start, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
        fn()
        cpu.append((time.thread_time_ns() - start_cpu) / 1e6)
        wall.append((time.perf_counter_ns() - start) / 1e6)
    return wall, cpu


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(n: int) -> tuple[Table, list[str], bool]:
    specs = demo_specs()
    store = PolicyStore()
    cedar = CedarAuthorizer(store)
    baseline = SpecGrantAuthorizer()
    rows: list[str] = []
    table = Table(title=f"Policy decisions ({n} per row, ms)")
    for col in ("call", "p50", "p99", "CPU p99", "spec-only p50", "ratio p50"):
        table.add_column(col, justify="left" if col == "call" else "right")
    ok = True
    for label, req, expected in scenarios(specs):
        decision = cedar.authorize(req)
        got = None if decision.needs_approval else decision.allowed
        assert got == expected, f"{label}: {decision}"
        if label == FIRST_MODEL_CALL:
            times, cpu = measure(lambda f=_fresh_runs(req): cedar.authorize(f()), n)  # type: ignore[misc]
        else:
            times, cpu = measure(lambda r=req: cedar.authorize(r), n)  # type: ignore[misc]
        base, _ = measure(lambda r=req: baseline.authorize(r), n)  # type: ignore[misc]
        p50, p99, c99, b50 = pct(times, 0.5), pct(times, 0.99), pct(cpu, 0.99), pct(base, 0.5)
        ok &= c99 <= TARGET_P99_MS
        cells = [f"{p50:.3f}", f"{p99:.3f}", f"{c99:.3f}", f"{b50:.4f}", f"{p50 / b50:.0f}x"]
        table.add_row(label, *cells)
        rows.append(f"| {label} | {' | '.join(cells)} |")
    access = ApiAuthorizer(store)
    alice = Caller(
        user_id="usr_alice", org_id="org_demo", team_id="team_eng", handle="alice", role="employee"
    )
    agent = ApiResource.agent(id="agt_mail", org_id="org_demo", owner_id="usr_alice")
    assert access.authorize_api(alice, "run.start", agent).allowed
    api_times, api_cpu = measure(lambda: access.authorize_api(alice, "run.start", agent), n)
    p50, p99, c99 = pct(api_times, 0.5), pct(api_times, 0.99), pct(api_cpu, 0.99)
    ok &= c99 <= TARGET_P99_MS
    cells = [f"{p50:.3f}", f"{p99:.3f}", f"{c99:.3f}", "-", "-"]
    table.add_row("API run.start (employee)", *cells)
    rows.append(f"| API run.start (employee) | {' | '.join(cells)} |")
    cold = []
    for i in range(max(20, n // 100)):
        fresh = CedarAuthorizer(store)
        req = request(
            specs["mail-triage"], f"agt_cold{i}", "model.invoke", "model:scripted/scripted-demo"
        )
        start = time.perf_counter_ns()
        fresh.authorize(req)
        cold.append((time.perf_counter_ns() - start) / 1e6)
    c50 = statistics.median(cold)
    cells = [f"{c50:.3f}", f"{max(cold):.3f} (max)", "-", "-", "-"]
    table.add_row("cold: first call of an agent (compiles its spec)", *cells)
    rows.append(f"| cold: first call of an agent (compiles its spec) | {' | '.join(cells)} |")
    return table, rows, ok


def write(path: Path, rows: list[str], ok: bool, n: int) -> None:
    text = path.read_text()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    verdict = "met" if ok else "**missed**"
    body = "\n".join(
        [
            MARK_BEGIN,
            f"Measured {stamp} on {host.machine()} ({host.python_implementation()} "
            f"{host.python_version()}, load average {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} cores), {n} decisions per row. Target CPU p99 ≤ "
            f"{TARGET_P99_MS:g} ms: {verdict}.",
            "",
            "| call | p50 | p99 | CPU p99 | spec-only p50 | ratio p50 |",
            "|---|---:|---:|---:|---:|---:|",
            *rows,
            MARK_END,
        ]
    )
    if MARK_BEGIN in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + body + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions, print only")
    parser.add_argument("--write", type=Path, help="update the results in this markdown file")
    args = parser.parse_args()
    n = 300 if args.quick else 5000
    table, rows, ok = run(n)
    Console().print(table)
    print(f"target p99 <= {TARGET_P99_MS} ms: {'met' if ok else 'MISSED'}")
    if args.write and not args.quick:
        write(args.write, rows, ok, n)


if __name__ == "__main__":
    main()
