"""Metering and budget enforcement overhead per model call, on SQLite.

Question: what does MeshClaw's metering (cost from the price table, the usage record)
plus budget enforcement (reserve before the call, settle after it) add to one model
call? Target: < 0.5 ms p50 per call on SQLite.

Workload: a platform on SQLite in a temporary directory with one org, team, user, agent
and run, and four budgets that all apply (org cost per month, team tokens per week, user
cost per day, agent calls per minute as a rate limit). Every call is persisted the way
the gateway persists it (``runtime.steps``): a transaction that starts the call's step
before the call is made and one that ends it afterwards, on one connection kept for the
run's writes (the ``StepWriter`` on SQLite). Per simulated call:

- ``unmetered``: the two step transactions alone (a call with no metering at all);
- ``metered``: what the gateway does: ``LimitGuard.reserve`` (conditional updates on four
  counters) inside the step-start transaction, then pricing, and ``LimitGuard.settle``
  plus the usage record inside the step-end transaction;
- ``separate``: the same, but the reservation committed in a transaction of its own (how
  the gateway did it until 2026-11-28), for comparison;
- ``reserve`` and ``settle``: those two parts of ``metered`` timed apart.

The overhead of metering + budgets is ``metered`` minus ``unmetered``: the step's own
transactions are paid by every call, metered or not. The variants alternate call by call
after a warm-up; the table shows p50/p95 in milliseconds.

Ingest: ``--ingest N`` writes N LiteLLM spend-log rows (JSON Lines) and times
``meshclaw.metering.ingest.ingest`` mapping them onto event format v1 (validated, written
through ``meshclaw.events.EventWriter``), with worker processes (one per CPU, as
``meshclaw ingest`` does) and in one process, against the plain row-by-row path. Target:
>= 100 k events/s.

OTel ingest: ``--ingest-otel N`` writes N OTel GenAI spans as the collector's file
exporter writes them (``write_otlp_jsonl``: JSON Lines of export requests, agent runs
overlapping, children before their ``invoke_agent`` span) and times ``ingest(...,
"otel", ...)`` on them against the same file only parsed (``json.loads`` and msgspec, a
line at a time: the floor any mapping starts from) and the step-by-step walk every
request takes that the decoded fast path cannot (same output, checked).

    .venv/bin/python benchmarks/metering_bench.py                      # prints
    .venv/bin/python benchmarks/metering_bench.py --calls 0 --ingest 0 --ingest-otel 300000
    .venv/bin/python benchmarks/metering_bench.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import filecmp
import os
import platform as host
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

BEGIN, END = "<!-- metering:begin -->", "<!-- metering:end -->"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(calls: int, warmup: int) -> dict[str, list[float]]:
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    from meshclaw.clock import utcnow
    from meshclaw.config import Settings
    from meshclaw.metering.budget import BudgetScope, PlannedCall, RunTotals
    from meshclaw.metering.prices import to_nano
    from meshclaw.platform import Platform
    from meshclaw.providers.base import Usage
    from meshclaw.runtime.steps import end_step, insert_step, insert_usage
    from meshclaw.spec.loader import parse_spec

    tmp = Path(tempfile.mkdtemp(prefix="meshclaw-metering-bench-"))
    platform = Platform(Settings(home=tmp, embedded_model_server=False, _env_file=None))
    accounts = platform.accounts
    org = accounts.create_org("bench")
    team = accounts.create_team(org.id, "eng")
    user = accounts.create_user(org.id, "ann", team_id=team.id)
    admin = accounts.caller_for(accounts.create_user(org.id, "root", role="platform_admin"))
    caller = accounts.caller_for(user)
    spec = parse_spec(
        "name: bench\nowner: ann\nmodel: {provider: scripted, model: m}\n"
        "instructions: x\ntools: []\nbudget: {max_steps: 1000, timeout_seconds: 60}\n"
    )
    agent, _ = platform.agents.save(caller, spec)
    run_info = platform.runs.create(caller, agent.id, "go")
    budgets = platform.budgets
    for kind, name, metric, period in (
        ("org", "bench", "cost", "month"),
        ("team", "eng", "tokens", "week"),
        ("user", "ann", "cost", "day"),
        ("agent", "bench", "calls", "minute"),
    ):
        budgets.set(
            admin,
            scope=kind,
            name=name,
            metric=metric,
            period=period,
            hard_cap="1000000000",
            soft_cap=None,
        )
    guard = platform.budget_guard
    guard._max_identical = 0  # every simulated call is "identical": no breaker here
    scope = BudgetScope(
        org_id=org.id, team_id=team.id, user_id=user.id, agent_id=agent.id, run_id=run_info.id
    )
    usage = Usage(input_tokens=1200, output_tokens=300, cached_tokens=800)
    prices = platform.prices

    # The gateway's StepWriter keeps one session on one connection for its writes (SQLite).
    lane = platform.db.engine.connect()
    session = Session(bind=lane, expire_on_commit=False)
    seq = iter(range(1, 10**9))

    def start_step(conn: Connection) -> str:
        return insert_step(
            conn, run_id=run_info.id, seq=next(seq), kind="model", name="m", status="running",
            request={"messages": 3}, started_at=utcnow(),
        )  # fmt: skip

    def end(step_id: str, cost_nano: int) -> None:
        end_step(
            session.connection(), step_id, status="ok", response={"content": "ok"}, error=None,
            decision="allow", cost_nano_usd=cost_nano, ended_at=utcnow(), only_running=True,
        )  # fmt: skip

    def record(step_id: str, cost_nano: int) -> None:
        insert_usage(
            session.connection(),
            {
                "kind": "model",
                "org_id": org.id,
                "team_id": team.id,
                "user_id": user.id,
                "agent_id": agent.id,
                "agent_version": 1,
                "run_id": run_info.id,
                "trigger": "manual",
                "step_id": step_id,
                "created_at": utcnow(),
                "provider": "scripted",
                "model": "m",
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cached_tokens": usage.cached_tokens,
                "cost_nano_usd": cost_nano,
                "price_version": prices.version,
            },
        )

    def unmetered() -> float:
        start = time.perf_counter()
        with session.begin():
            step_id = start_step(session.connection())
        with session.begin():
            end(step_id, 0)
        return time.perf_counter() - start

    totals = RunTotals()
    planned = PlannedCall(
        kind="model",
        scope=scope,
        fingerprint="model:x",
        estimate_nano_usd=5000,
        estimate_tokens=6000,
    )

    def metered(separate: bool) -> tuple[float, float, float]:
        start = time.perf_counter()
        if separate:
            reservation = guard.reserve(planned, spec, totals)
            reserved = time.perf_counter()
            with session.begin():
                step_id = start_step(session.connection())
        else:
            with session.begin():
                conn = session.connection()
                reservation = guard.reserve(planned, spec, totals, conn=conn)
                reserved = time.perf_counter()
                step_id = start_step(conn)
        cost = prices.cost_usd("scripted", "m", usage)
        assert cost is not None
        nano = to_nano(cost)
        with session.begin():
            # The gateway's order: the step's end, settle, then the usage record.
            end(step_id, nano)
            settle_start = time.perf_counter()
            guard.settle(session, reservation, cost_nano_usd=nano, tokens=usage.total_tokens)
            settle_end = time.perf_counter()
            record(step_id, nano)
        return time.perf_counter() - start, reserved - start, settle_end - settle_start

    names = ("unmetered", "metered", "separate", "reserve", "settle")
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu = {"unmetered": 0.0, "metered": 0.0}
    for i in range(warmup + calls):
        c0 = time.process_time()
        b = unmetered()
        c1 = time.process_time()
        m, r, s = metered(separate=False)
        c2 = time.process_time()
        apart, _, _ = metered(separate=True)
        if i >= warmup:
            times["unmetered"].append(b * 1000)
            times["metered"].append(m * 1000)
            times["separate"].append(apart * 1000)
            times["reserve"].append(r * 1000)
            times["settle"].append(s * 1000)
            cpu["unmetered"] += c1 - c0
            cpu["metered"] += c2 - c1
    # CPU time per call (process_time), steadier than wall time on a loaded machine.
    times["cpu"] = [cpu["unmetered"] * 1000 / calls, cpu["metered"] * 1000 / calls]
    session.close()
    lane.close()
    platform.close()
    return times


def table(times: dict[str, list[float]], calls: int) -> str:
    rows = [
        "| path | p50 ms | p95 ms |",
        "|---|---|---|",
    ]
    for name, label in (
        ("unmetered", "a call's step start + end, unmetered"),
        (
            "metered",
            "the same, metered: reserve (4 budgets) in the start, settle + usage in the end",
        ),
        ("separate", "the same, the reservation in a transaction of its own (before)"),
        ("reserve", "… of which reserve"),
        ("settle", "… of which settle"),
    ):
        values = times[name]
        rows.append(f"| {label} | {statistics.median(values):.3f} | {_pct(values, 0.95):.3f} |")
    base = statistics.median(times["unmetered"])
    overhead = statistics.median(times["metered"]) - base
    before = statistics.median(times["separate"]) - base
    cpu_base, cpu_metered = times["cpu"]
    verdict = "meets" if overhead < 0.5 else "misses"
    load = os.getloadavg()[0]
    machine = (
        f"{host.processor() or host.machine()}, {os.cpu_count()} cores "
        f"(load average {load:.1f} while measuring), Python {sys.version.split()[0]}, "
        f"SQLite {sqlite3.sqlite_version}, {datetime.now(UTC):%Y-%m-%d}"
    )
    return "\n".join(
        [
            BEGIN,
            f"{calls} calls per variant, interleaved. {machine}.",
            "",
            *rows,
            "",
            f"Metering + budgets add **{overhead:.3f} ms** p50 per call to the call's own "
            f"persistence, which {verdict} the < 0.5 ms target ({before:.3f} ms with the "
            f"reservation committed on its own). CPU time per call (mean): {cpu_base:.3f} ms "
            f"unmetered, {cpu_metered:.3f} ms metered.",
            END,
        ]
    )


def ingest_rate(n: int) -> str:
    # The source and three outputs take about 1.3 GB for a million rows: not kept.
    with tempfile.TemporaryDirectory(prefix="meshclaw-ingest-bench-") as tmp:
        return _ingest_rate(n, Path(tmp))


def _ingest_rate(n: int, tmp: Path) -> str:
    import json
    from datetime import timedelta

    from meshclaw.events import EventWriter
    from meshclaw.metering._ingest_litellm import _litellm_events
    from meshclaw.metering._ingest_parallel import MIN_BYTES, default_jobs, worth_it
    from meshclaw.metering.ingest import Defaults, IngestReport, ingest

    source = tmp / "spend.jsonl"
    first = datetime(2026, 11, 20, 10)
    with source.open("w") as out:
        for i in range(n):
            started = first + timedelta(milliseconds=37 * i)
            row = {
                "request_id": f"req-{i}",
                "spend": 0.0001 * (i % 7),
                "prompt_tokens": 100 + i % 50,
                "completion_tokens": 20 + i % 9,
                "startTime": started.isoformat(timespec="microseconds"),
                "endTime": (started + timedelta(milliseconds=250 + i % 2000)).isoformat(
                    timespec="microseconds"
                ),
                "model": "gpt-4o-mini",
                "custom_llm_provider": "openai",
                "user": f"user-{i % 500}",
                "team_id": f"team-{i % 20}",
                "session_id": f"sess-{i // 5}",
                "metadata": {"user_api_key_org_id": "org-1"},
                "request_tags": [f"agent-{i % 40}"],
            }
            out.write(json.dumps(row) + "\n")
    # Three ways to the same output, alternated twice, the best of each: ``ingest`` with
    # worker processes (what ``meshclaw ingest`` does with a file this big), ``ingest`` in
    # this one process (``--jobs 1``), and the plain row-by-row path both fall back to.
    # CPU time counts the workers too (they are waited for, so ``RUSAGE_CHILDREN`` holds
    # them), start-up included.
    jobs = default_jobs()
    names = ("plain", "single", "parallel")
    walls = dict.fromkeys(names, 1e9)
    cpus = dict.fromkeys(names, 1e9)
    loads: list[float] = []
    for name in names * 2:
        start, cpu = time.perf_counter(), _cpu_with_children()
        if name == "plain":
            with EventWriter(tmp / "plain.jsonl") as writer:
                writer.write_all(_litellm_events(source, Defaults(), IngestReport(), fast=False))
        else:
            report = ingest(
                source, "litellm", tmp / f"{name}.jsonl", jobs=1 if name == "single" else jobs
            )
            assert report.events == n and report.skipped == 0
        walls[name] = min(walls[name], time.perf_counter() - start)
        cpus[name] = min(cpus[name], _cpu_with_children() - cpu)
        loads.append(os.getloadavg()[0])
    for name in ("single", "parallel"):
        assert filecmp.cmp(tmp / "plain.jsonl", tmp / f"{name}.jsonl", shallow=False), name
    rate = n / walls["parallel"]
    verdict = "meets" if rate >= 100_000 else "misses"
    plain_path = (
        f"The plain row-by-row path (same output): {n / walls['plain']:,.0f} events/s, "
        f"{n / cpus['plain']:,.0f} per CPU-second ({cpus['plain'] / cpus['single']:.2f}x the "
        f"CPU of one process). Load average {min(loads):.1f} to {max(loads):.1f} while "
        "ingesting."
    )
    if not worth_it(source, jobs):
        return (
            f"Ingest: {n} LiteLLM spend-log rows → event format v1 in one process (no "
            f"workers under {MIN_BYTES >> 20} MB or on one CPU) in {walls['single']:.2f} s = "
            f"**{n / walls['single']:,.0f} events/s**; {n / cpus['single']:,.0f} events per "
            f"CPU-second. {plain_path}"
        )
    return (
        f"Ingest: {n} LiteLLM spend-log rows → event format v1 with {jobs} worker processes "
        f"in {walls['parallel']:.2f} s = **{rate:,.0f} events/s**, which {verdict} the "
        f"≥ 100 k events/s target; {n / cpus['parallel']:,.0f} events per CPU-second "
        f"(the workers' start-up included). In one process (`--jobs 1`), same run: "
        f"{n / walls['single']:,.0f} events/s, {n / cpus['single']:,.0f} per CPU-second: "
        f"the workers are {walls['single'] / walls['parallel']:.2f}x as fast for "
        f"{cpus['parallel'] / cpus['single']:.2f}x the CPU. {plain_path}"
    )


def otel_ingest_rate(n: int) -> str:
    # About 670 bytes a span in the file, and 300 in each output: not kept.
    with tempfile.TemporaryDirectory(prefix="meshclaw-otel-bench-") as tmp:
        return _otel_ingest_rate(n, Path(tmp))


def _otel_ingest_rate(n: int, tmp: Path) -> str:
    import json

    import msgspec

    from meshclaw.events import EventWriter
    from meshclaw.metering._ingest_otel import _otel_events
    from meshclaw.metering.ingest import Defaults, IngestReport, ingest

    source = tmp / "traces.jsonl"
    spans = write_otlp_jsonl(source, n)
    size = source.stat().st_size

    def parse_json() -> None:
        with source.open("rb") as lines:
            for line in lines:
                json.loads(line)

    def parse_msgspec() -> None:
        decode = msgspec.json.Decoder().decode
        with source.open("rb") as lines:
            for line in lines:
                decode(line)

    events: list[int] = []

    def ingest_otel() -> None:
        report = ingest(source, "otel", tmp / "fast.jsonl", jobs=1)
        assert report.records == spans and report.skipped == 0 and report.unattributed == 0
        events.append(report.events)

    def walk() -> None:
        with EventWriter(tmp / "walk.jsonl") as writer:
            writer.write_all(_otel_events(source, Defaults(), IngestReport(), fast=False))

    # Alternated twice, the best of each (CPU time too: steadier on a busy machine).
    ways = {"json": parse_json, "msgspec": parse_msgspec, "ingest": ingest_otel, "walk": walk}
    walls = dict.fromkeys(ways, 1e9)
    cpus = dict.fromkeys(ways, 1e9)
    loads: list[float] = []
    for name in [*ways] * 2:
        start, cpu = time.perf_counter(), time.process_time()
        ways[name]()
        walls[name] = min(walls[name], time.perf_counter() - start)
        cpus[name] = min(cpus[name], time.process_time() - cpu)
        loads.append(os.getloadavg()[0])
    assert filecmp.cmp(tmp / "fast.jsonl", tmp / "walk.jsonl", shallow=False)
    rate = spans / walls["ingest"]
    return (
        f"OTel ingest: {spans} GenAI spans ({size / 1e6:.1f} MB of OTLP JSON Lines, "
        f"{events[0]} of them model, tool or agent calls) → event format v1 in one pass, "
        f"one process, in {walls['ingest']:.2f} s = **{rate:,.0f} spans/s** "
        f"({events[0] / walls['ingest']:,.0f} events/s; {spans / cpus['ingest']:,.0f} spans "
        f"per CPU-second). Same run, same file only parsed a line at a time: "
        f"`json.loads` {spans / walls['json']:,.0f} spans/s (ingest takes "
        f"{walls['ingest'] / walls['json']:.1f}x its time), msgspec "
        f"{spans / walls['msgspec']:,.0f} spans/s ({walls['ingest'] / walls['msgspec']:.1f}x). "
        f"The step-by-step walk (malformed requests, same output): "
        f"{spans / walls['walk']:,.0f} spans/s. Load average {min(loads):.1f} to "
        f"{max(loads):.1f} while ingesting."
    )


def write_otlp_jsonl(path: Path, spans: int, *, batch: int = 256, concurrent: int = 16) -> int:
    """Write about ``spans`` OTel GenAI spans as the collector's file exporter does: JSON
    Lines of ``ExportTraceServiceRequest``, one line per exported batch of ``batch`` spans.

    Each trace is an agent run as instrumented gateways emit it: an ``invoke_agent`` root,
    three ``chat`` spans (tokens, cache reads, a cost on some), two ``execute_tool`` spans
    and one HTTP span that is not GenAI, in the order they end (so children come before
    their ``invoke_agent`` span, often in an earlier line). ``concurrent`` runs overlap, so
    a line holds spans of many traces. Integer attributes are strings and times
    nanoseconds, as OTLP JSON has them. Returns the number of spans written.
    """
    import json

    def attr(key: str, value: str | int | float) -> dict[str, object]:
        if isinstance(value, str):
            return {"key": key, "value": {"stringValue": value}}
        if isinstance(value, int):
            return {"key": key, "value": {"intValue": str(value)}}
        return {"key": key, "value": {"doubleValue": value}}

    resource = {
        "attributes": [
            attr("service.name", "other-gateway"),
            attr("service.version", "1.4.2"),
            attr("telemetry.sdk.language", "python"),
            attr("telemetry.sdk.name", "opentelemetry"),
            attr("deployment.environment", "prod"),
        ]
    }
    t0 = 1_764_244_800_000_000_000

    def trace(t: int) -> list[dict[str, object]]:
        trace_id = f"{t:032x}"
        root = f"{t:08x}00000000"
        start = t0 + t * 40_000_000
        out: list[dict[str, object]] = []

        def span(
            n: int,
            name: str,
            begin: int,
            ms: int,
            attrs: list[dict[str, object]],
            parent: str | None = root,
            error: bool = False,
        ) -> None:
            item: dict[str, object] = {
                "traceId": trace_id,
                "spanId": f"{t:08x}{n:08x}" if n else root,
                "name": name,
                "kind": 1 if parent else 2,
                "startTimeUnixNano": str(begin),
                "endTimeUnixNano": str(begin + ms * 1_000_000),
                "attributes": attrs,
                "status": {"code": 2} if error else {},
            }
            if parent:
                item["parentSpanId"] = parent
            out.append(item)

        at = start
        for step in range(3):
            model = ("gpt-4o-mini", "claude-sonnet-4", "gpt-4.1")[(t + step) % 3]
            chat = [
                attr("gen_ai.operation.name", "chat"),
                attr("gen_ai.provider.name", "anthropic" if "claude" in model else "openai"),
                attr("gen_ai.request.model", model),
                attr("gen_ai.response.model", model),
                attr("gen_ai.usage.input_tokens", 800 + (t * 7 + step) % 3000),
                attr("gen_ai.usage.output_tokens", 40 + (t * 3 + step) % 600),
                attr("gen_ai.usage.cache_read.input_tokens", 512 * step),
                attr("gen_ai.response.finish_reasons", "tool_calls" if step < 2 else "stop"),
                attr("server.address", "api.example.com"),
            ]
            if t % 4 == 0:
                chat.append(attr("meshclaw.cost_usd", 0.0001 * (1 + (t + step) % 50)))
            span(1 + step * 2, f"chat {model}", at, 300 + (t + step) % 1500, chat)
            at += 2_000_000_000
            if step < 2:
                tool = ("jira.search", "lookup")[(t + step) % 2]
                span(
                    2 + step * 2,
                    f"execute_tool {tool}",
                    at,
                    50 + t % 200,
                    [
                        attr("gen_ai.operation.name", "execute_tool"),
                        attr("gen_ai.tool.name", tool),
                        attr("gen_ai.tool.call.id", f"call_{t}_{step}"),
                    ],
                    error=(t + step) % 17 == 0,
                )
                at += 300_000_000
        http = [
            attr("http.request.method", "GET"),
            attr("http.response.status_code", 200),
            attr("url.path", "/v1/context"),
        ]
        span(7, "GET /v1/context", start + 100_000, 12, http)
        out.sort(key=lambda s: int(str(s["endTimeUnixNano"])))
        span(
            0,
            "invoke_agent triage",
            start,
            (at - start) // 1_000_000 + 5,
            [
                attr("gen_ai.operation.name", "invoke_agent"),
                attr("gen_ai.agent.name", f"agent-{t % 40}"),
                attr("gen_ai.agent.id", f"agent-{t % 40}"),
                attr("gen_ai.conversation.id", f"conv-{t}"),
                attr("enduser.id", f"user-{t % 500}@example.com"),
                attr("team.id", f"team-{t % 20}"),
                attr("meshclaw.trigger", ("chat", "cron", "api")[t % 3]),
            ],
            parent=None,
        )
        return out

    # Spans of ``concurrent`` overlapping runs, interleaved in the order they end.
    written, t = 0, 0
    pending: list[list[dict[str, object]]] = []
    line: list[dict[str, object]] = []
    with path.open("w") as out:
        while written < spans:
            while len(pending) < concurrent:
                pending.append(trace(t))
                t += 1
            for run_spans in pending:
                line.append(run_spans.pop(0))
                written += 1
            pending = [p for p in pending if p]
            if len(line) >= batch or written >= spans:
                scope = {"scope": {"name": "gateway.genai", "version": "0.9"}, "spans": line}
                doc = {"resourceSpans": [{"resource": resource, "scopeSpans": [scope]}]}
                out.write(json.dumps(doc, separators=(",", ":")) + "\n")
                line = []
    return written


def _cpu_with_children() -> float:
    """CPU seconds of this process and of its children that have been waited for."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="0: skip the per-call phase")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--ingest", type=int, default=1_000_000, help="rows to ingest (0: skip; the issue asks 1 M)"
    )
    parser.add_argument(
        "--ingest-otel", type=int, default=300_000, help="OTel GenAI spans to ingest (0: skip)"
    )
    parser.add_argument("--write", type=Path, help="replace this script's section in FILE")
    args = parser.parse_args()
    # ``--calls 0``: the ingest phases alone.
    section = table(run(args.calls, args.warmup), args.calls) if args.calls else f"{BEGIN}\n{END}"
    if args.ingest:
        section = section.replace(END, ingest_rate(args.ingest) + "\n" + END)
    if args.ingest_otel:
        section = section.replace(END, otel_ingest_rate(args.ingest_otel) + "\n" + END)
    print(section)
    if args.write:
        text = args.write.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            text = head + section + rest.split(END, 1)[1]
        else:
            text = text.rstrip() + "\n\n" + section + "\n"
        args.write.write_text(text)


if __name__ == "__main__":
    main()
