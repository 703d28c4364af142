"""Runtime overhead: one 20-step tool-calling conversation, bare ``openai`` loop vs MeshClaw.

Both variants talk to the same scripted model server on loopback and hold the same
conversation: 19 turns that call ``clock.now`` (each for another time zone), then a plain
answer. MeshClaw runs with its default settings on SQLite in a temporary directory. The
baseline is the loop anyone would write with the ``openai`` SDK; the other goes through
MeshClaw's runtime (executor -> runner -> gateway: authorise, budget, persist each step
before and after, meter, audit). A third variant is the bare loop sending the
conversation in ``extra_body`` as MeshClaw's provider does, which skips the SDK's
per-call request transform: against it, the difference is MeshClaw's own work alone.
A fourth runs MeshClaw's run under a worker's lease, as the scale-out workers do: every
transaction then also locks the run's row on the lease (the fence against a worker that
was taken over), and the difference to the plain MeshClaw variant is what that costs.
Time per step is a whole conversation's wall time divided by its 20 model turns, for
every variant alike.

Machines are noisy, so the variants are interleaved (rotating order) over several
repetitions in one process and compared by their medians. Process CPU time is recorded
too (less disturbed by other load), and so are MeshClaw's database transactions and the
time spent inside them.

    .venv/bin/python benchmarks/overhead.py                  # print the table
    .venv/bin/python benchmarks/overhead.py --quick          # smoke run
    .venv/bin/python benchmarks/overhead.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform as host
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import openai
from rich.console import Console
from rich.table import Table
from sqlalchemy import event
from sqlalchemy.engine import Connection

from meshclaw.accounts.service import Caller
from meshclaw.config import ProviderConfig, Settings
from meshclaw.platform import Platform
from meshclaw.providers.scripted import Script, ScriptedServer, load_script
from meshclaw.runtime.gateway import Gateway
from meshclaw.spec.loader import parse_spec
from meshclaw.workers.leases import Lease, Leases

STEPS = 20
"""Model turns per conversation: ``STEPS - 1`` tool calls, then the answer."""
TARGET = 1.10
"""MeshClaw's median time per step may be at most this multiple of the bare loop's."""
MODEL = "scripted-bench"
AGENT = "bench-agent"
INSTRUCTIONS = "Check the time with clock.now whenever asked, then answer."
USER_INPUT = "go"
MARK_BEGIN = "<!-- overhead:begin -->"
MARK_END = "<!-- overhead:end -->"

# The tool exactly as MeshClaw offers ``clock.now`` on the wire (``.`` goes as ``__``);
# the first repetition checks that both variants send identical tool lists.
CLOCK_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "clock__now",
        "description": "Current date and time (ISO 8601). Optional IANA time zone.",
        "parameters": {
            "type": "object",
            "properties": {"tz": {"type": "string", "description": "e.g. Europe/Paris"}},
        },
    },
}

SPEC_YAML = f"""\
apiVersion: meshclaw/v1
name: {AGENT}
owner: bench
model:
  provider: scripted
  model: {MODEL}
instructions: {INSTRUCTIONS}
tools:
  - name: clock.now
    scope: read
budget:
  max_steps: {STEPS + 5}
  timeout_seconds: 120
"""


ZONES = (
    "UTC", "Europe/London", "Europe/Paris", "Europe/Berlin", "Europe/Madrid", "Europe/Rome",
    "Europe/Warsaw", "Europe/Helsinki", "Africa/Cairo", "Asia/Dubai", "Asia/Kolkata",
    "Asia/Singapore", "Asia/Tokyo", "Australia/Sydney", "Pacific/Auckland",
    "America/Sao_Paulo", "America/New_York", "America/Chicago", "America/Los_Angeles",
)  # fmt: skip
"""One zone per tool call: MeshClaw's runaway-loop breaker refuses a 6th identical call."""


def bench_script() -> Script:
    """``STEPS - 1`` turns that each call ``clock.now`` in another zone, then an answer."""
    turns: list[dict[str, Any]] = [
        {"reply": {"tool_calls": [{"name": "clock.now", "arguments": {"tz": zone}}]}}
        for zone in ZONES[: STEPS - 1]
    ]
    turns.append({"reply": {"content": "Those are the times around the world."}})
    return load_script(json.dumps({"models": [MODEL], "turns": turns}))


# -- variant (a): the bare openai loop ---------------------------------------------------


def clock_now(raw_arguments: str) -> str:
    arguments = json.loads(raw_arguments or "{}")
    return datetime.now(UTC).astimezone(ZoneInfo(str(arguments.get("tz") or "UTC"))).isoformat()


async def bare_conversation(client: openai.AsyncOpenAI, *, as_is: bool = False) -> int:
    """Hold the conversation with the SDK alone; return the number of model calls.

    ``as_is`` sends the conversation and tools in ``extra_body``, as MeshClaw's provider
    does (the SDK then skips its per-call request transform): the same loop on the same
    footing, so the difference to MeshClaw is MeshClaw's own work."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": USER_INPUT},
    ]
    for turn in range(1, STEPS + 6):
        if as_is:
            completion = await client.chat.completions.create(
                model=MODEL, messages=[], extra_body={"messages": messages, "tools": [CLOCK_TOOL]}
            )
        else:
            completion = await client.chat.completions.create(
                model=MODEL,
                messages=messages,  # type: ignore[arg-type]
                tools=[CLOCK_TOOL],  # type: ignore[list-item]
            )
        message = completion.choices[0].message
        calls = [c for c in message.tool_calls or [] if c.type == "function"]
        assistant: dict[str, Any] = {"role": "assistant", "content": message.content}
        if calls:
            assistant["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": c.function.arguments},
                }
                for c in calls
            ]
        messages.append(assistant)
        if not calls:
            return turn
        for c in calls:
            content = clock_now(c.function.arguments)
            messages.append({"role": "tool", "content": content, "tool_call_id": c.id})
    raise RuntimeError("the bare loop never got a final answer")


# -- variant (b): MeshClaw's runtime -----------------------------------------------------


class SessionMeter:
    """Counts database transactions and the wall time spent inside them.

    Listens to the engine every service shares (``platform.db``): each transaction's
    ``begin`` to its ``commit`` or ``rollback``, on any connection, whether it came from
    ``Database.session``, a plain ``engine.begin()`` (budget reservations) or the
    connection the gateway keeps for its writes. It costs a few microseconds per
    transaction and stays on during measurement.
    """

    def __init__(self, platform: Platform) -> None:
        self.count = 0
        self.seconds = 0.0
        opened: dict[int, float] = {}

        def begin(conn: Connection) -> None:
            opened[id(conn)] = time.perf_counter()

        def end(conn: Connection) -> None:
            started = opened.pop(id(conn), None)
            if started is not None:
                self.count += 1
                self.seconds += time.perf_counter() - started

        engine = platform.db.engine
        event.listen(engine, "begin", begin)
        event.listen(engine, "commit", end)
        event.listen(engine, "rollback", end)


@dataclass(kw_only=True)
class MeshClaw:
    platform: Platform
    caller: Caller
    meter: SessionMeter
    run_ids: list[str] = field(default_factory=list)

    @classmethod
    def setup(cls, home: Path, base_url: str) -> MeshClaw:
        settings = Settings(
            home=home,
            database_url=None,  # never a database named by MESHCLAW_DATABASE_URL
            embedded_model_server=False,
            providers={"scripted": ProviderConfig(base_url=base_url)},
        )
        platform = Platform(settings)
        org = platform.accounts.create_org("bench")
        team = platform.accounts.create_team(org.id, "bench")
        user = platform.accounts.create_user(org.id, "bench", team_id=team.id)
        caller = platform.accounts.caller_for(user)
        platform.agents.save(caller, parse_spec(SPEC_YAML))
        return cls(platform=platform, caller=caller, meter=SessionMeter(platform))

    def queue(self) -> str:
        """Create and claim a run, as the in-process worker does before executing it."""
        info = self.platform.runs.create(self.caller, AGENT, USER_INPUT)
        if not self.platform.runs.claim(info.id):
            raise RuntimeError(f"could not claim run {info.id}")
        self.run_ids.append(info.id)
        return info.id

    def queue_leased(self) -> tuple[str, Lease]:
        """Create a run and take a lease on it, as a scale-out worker does."""
        info = self.platform.runs.create(self.caller, AGENT, USER_INPUT)
        lease = Leases(self.platform.db).claim(info.id, "overhead-bench")
        if lease is None:
            raise RuntimeError(f"could not lease run {info.id}")
        self.run_ids.append(info.id)
        return info.id, lease

    def verify(self) -> None:
        """Every run succeeded after exactly ``STEPS`` model turns."""
        for run_id in self.run_ids:
            info = self.platform.runs.get(self.caller, run_id)
            steps = self.platform.runs.steps(self.caller, run_id)
            models = sum(1 for s in steps if s.kind == "model" and s.status == "ok")
            if info.status != "succeeded" or models != STEPS:
                raise RuntimeError(
                    f"run {run_id}: status {info.status} ({info.error}), {models} model turns"
                )


# -- measurement -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Sample:
    """One conversation, divided by its ``STEPS`` model turns."""

    wall: float
    """Seconds per step."""
    cpu: float
    """CPU seconds per step of this whole process: client, runtime and server thread."""
    db: float = 0.0
    """Seconds per step inside database transactions (MeshClaw only)."""
    transactions: float = 0.0
    """Database transactions per step (MeshClaw only)."""


@dataclass(kw_only=True)
class Results:
    bare: list[Sample] = field(default_factory=list)
    as_is: list[Sample] = field(default_factory=list)
    """The bare loop sending its body in ``extra_body`` as MeshClaw's provider does."""
    meshclaw: list[Sample] = field(default_factory=list)
    """Paired with ``bare`` and ``as_is``: entry ``i`` of each ran back to back."""
    leased: list[Sample] = field(default_factory=list)
    """MeshClaw under a worker's lease (fenced transactions), paired likewise."""
    queue: list[float] = field(default_factory=list)
    """Seconds to create and claim each MeshClaw run (before execution, not in the ratio)."""
    load: tuple[float, float] = (0.0, 0.0)
    """The 1-minute load average before and after measuring: how busy the machine was."""

    @property
    def ratio(self) -> float:
        return median(self.meshclaw, "wall") / median(self.bare, "wall")

    @property
    def paired_ratios(self) -> list[float]:
        return [m.wall / b.wall for m, b in zip(self.meshclaw, self.bare, strict=True)]


def median(samples: list[Sample], attribute: str) -> float:
    return statistics.median(float(getattr(s, attribute)) for s in samples)


def check_requests(server: ScriptedServer, who: str) -> None:
    received = len(server.requests)
    if received != STEPS:
        raise RuntimeError(f"{who}: the server saw {received} requests, want {STEPS}")


async def bare_sample(
    server: ScriptedServer, client: openai.AsyncOpenAI, *, as_is: bool = False
) -> Sample:
    server.reset()
    wall, cpu = time.perf_counter(), time.process_time()
    turns = await bare_conversation(client, as_is=as_is)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if turns != STEPS:
        raise RuntimeError(f"bare loop: {turns} model turns, want {STEPS}")
    check_requests(server, "bare loop")
    return Sample(wall=wall / STEPS, cpu=cpu / STEPS)


async def meshclaw_sample(
    server: ScriptedServer,
    bench: MeshClaw,
    gateway: Gateway,
    queue: list[float],
    *,
    leased: bool = False,
) -> Sample:
    server.reset()
    started = time.perf_counter()
    run_id, lease = bench.queue_leased() if leased else (bench.queue(), None)
    queue.append(time.perf_counter() - started)
    count, db = bench.meter.count, bench.meter.seconds
    wall, cpu = time.perf_counter(), time.process_time()
    end = await bench.platform.executor(gateway).execute(run_id, lease=lease)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if end.status != "succeeded":
        raise RuntimeError(f"MeshClaw run {run_id} {end.status}: {end.error}")
    check_requests(server, "MeshClaw")  # the steps of every run: ``MeshClaw.verify``
    return Sample(
        wall=wall / STEPS,
        cpu=cpu / STEPS,
        db=(bench.meter.seconds - db) / STEPS,
        transactions=(bench.meter.count - count) / STEPS,
    )


def check_same_conversation(bare: dict[str, Any], meshclaw: dict[str, Any]) -> None:
    """The last requests of both variants offer the same tools and the same message roles."""
    for key in ("model", "tools"):
        if bare.get(key) != meshclaw.get(key):
            raise RuntimeError(f"the variants send different {key!r}")
    roles = [[m["role"] for m in body["messages"]] for body in (bare, meshclaw)]
    if roles[0] != roles[1]:
        raise RuntimeError("the variants hold different conversations")


async def measure(server: ScriptedServer, bench: MeshClaw, reps: int, warmup: int) -> Results:
    results = Results()
    load_before = os.getloadavg()[0]
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    # One client and one gateway for the whole run keep both variants' connections warm.
    gateway = bench.platform.build_gateway()
    try:
        await bare_sample(server, client)
        bare_body = server.requests[-1]
        await meshclaw_sample(server, bench, gateway, [])
        check_same_conversation(bare_body, server.requests[-1])

        await bare_sample(server, client, as_is=True)
        check_same_conversation(bare_body, server.requests[-1])

        variants: dict[str, Callable[[], Awaitable[Sample]]] = {
            "bare": lambda: bare_sample(server, client),
            "as_is": lambda: bare_sample(server, client, as_is=True),
            "meshclaw": lambda: meshclaw_sample(server, bench, gateway, results.queue),
            "leased": lambda: meshclaw_sample(server, bench, gateway, [], leased=True),
        }
        names = list(variants)
        for rep in range(warmup + reps):
            # Rotated order: no variant always runs first, or always after the same one.
            order = names[rep % len(names) :] + names[: rep % len(names)]
            if rep % 2:
                order.reverse()
            samples = {name: await variants[name]() for name in order}
            if rep < warmup:
                results.queue.clear()
                continue
            results.bare.append(samples["bare"])
            results.as_is.append(samples["as_is"])
            results.meshclaw.append(samples["meshclaw"])
            results.leased.append(samples["leased"])
    finally:
        await gateway.aclose()
        await client.close()
    results.load = (load_before, os.getloadavg()[0])
    bench.verify()
    return results


# -- reporting ---------------------------------------------------------------------------


def source_version() -> str:
    """The checked-out commit, marked ``+ local changes`` when the tree is dirty."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{commit or 'unknown'}{' + local changes in src/' if dirty else ''}"


def machine_facts() -> dict[str, str]:
    cpu = "unknown"
    ram = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "Date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": cpu,
        "Cores": str(os.cpu_count() or "unknown"),
        "RAM": ram,
        "OS": f"{host.system()} {host.release()}",
        "Python": host.python_version(),
        "SQLite": sqlite3.sqlite_version,
        "openai SDK": openai.__version__,
        "MeshClaw": source_version(),
    }


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


HEADERS = ["Variant", "Median (ms)", "IQR (ms)", "Best (ms)", "CPU (ms)", "In DB (ms)", "vs bare"]
"""Times per step (model turn). CPU counts the whole process, the scripted server too."""


def table_rows(results: Results) -> list[list[str]]:
    rows = []
    for name, samples in (
        ("bare openai loop", results.bare),
        ("bare loop, body as extra_body", results.as_is),
        ("MeshClaw", results.meshclaw),
        ("MeshClaw, run under a worker's lease", results.leased),
    ):
        walls = [s.wall for s in samples]
        low, high = quartiles(walls)
        in_db = median(samples, "db")
        rows.append(
            [
                name,
                ms(statistics.median(walls)),
                f"{ms(low)}-{ms(high)}",
                ms(min(walls)),
                ms(median(samples, "cpu")),
                ms(in_db) if in_db else "-",
                f"{median(samples, 'wall') / median(results.bare, 'wall'):.2f}x",
            ]
        )
    return rows


def summary(results: Results) -> list[str]:
    low, high = quartiles(results.paired_ratios)
    met = "meets" if results.ratio <= TARGET else "misses"
    extra = median(results.meshclaw, "wall") - median(results.bare, "wall")
    cpu_ratio = median(results.meshclaw, "cpu") / median(results.bare, "cpu")
    own = median(results.meshclaw, "wall") - median(results.as_is, "wall")
    own_ratio = median(results.meshclaw, "wall") / median(results.as_is, "wall")
    fence = median(results.leased, "wall") - median(results.meshclaw, "wall")
    fence_db = median(results.leased, "db") - median(results.meshclaw, "db")
    paired_fence = statistics.median(
        leased.wall - plain.wall
        for leased, plain in zip(results.leased, results.meshclaw, strict=True)
    )
    lines = [
        f"Ratio {results.ratio:.2f} (median of paired ratios "
        f"{statistics.median(results.paired_ratios):.2f}, IQR {low:.2f}-{high:.2f}; "
        f"on CPU time {cpu_ratio:.2f}) {met} the target of {TARGET:.2f}.",
        f"MeshClaw {'adds' if extra >= 0 else 'saves'} {ms(abs(extra))} ms per step, and runs "
        f"{median(results.meshclaw, 'transactions'):.2f} database transactions per step "
        f"({ms(median(results.meshclaw, 'db'))} ms inside them).",
        f"Against the bare loop sending its body as MeshClaw's provider does (extra_body, "
        f"no SDK request transform), MeshClaw's own work (policy, budgets, live step "
        f"persistence, metering, audit) adds {ms(own)} ms per step: ratio {own_ratio:.2f}.",
        f"Queueing a run (create + claim, not in the times above) takes "
        f"{ms(statistics.median(results.queue))} ms.",
        f"Under a worker's lease (every transaction fenced on the run's row) a step takes "
        f"{ms(fence)} ms {'more' if fence >= 0 else 'less'} than without "
        f"({ms(fence_db)} ms of it inside transactions; paired median "
        f"{paired_fence * 1000:+.2f} ms).",
    ]
    if max(results.load) > (os.cpu_count() or 1):
        lines.append(
            f"The machine was busy (load average {results.load[0]:.1f} -> "
            f"{results.load[1]:.1f} on {os.cpu_count()} cores): absolute times are inflated, "
            "compare the ratios."
        )
    return lines


def print_results(console: Console, results: Results, reps: int) -> None:
    title = f"Time per step: {STEPS}-step conversation, {reps} interleaved repetitions"
    table = Table(title=title)
    for index, header in enumerate(HEADERS):
        table.add_column(header, justify="left" if index == 0 else "right")
    for row in table_rows(results):
        table.add_row(*row)
    console.print(table)
    for line in summary(results):
        console.print(line, soft_wrap=True)


def markdown(results: Results, reps: int, warmup: int) -> str:
    facts = machine_facts()
    facts["Load average (1 min)"] = f"{results.load[0]:.2f} before, {results.load[1]:.2f} after"
    lines = [
        MARK_BEGIN,
        "### Results",
        "",
        "Written by `benchmarks/overhead.py --write`; edit the text outside this section.",
        "",
        f"{STEPS}-step conversation, {reps} measured repetitions per variant after "
        f"{warmup} warm-up, interleaved in one process.",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|---|" + "---:|" * (len(HEADERS) - 1),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    lines += ["", *(f"{line}  " for line in summary(results)), "", "| Machine | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in facts.items()]
    lines += [MARK_END]
    return "\n".join(lines) + "\n"


def write_results(path: Path, section: str) -> None:
    """Replace the marked results section of ``path``, or append one if there is none."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    begin, end = text.find(MARK_BEGIN), text.find(MARK_END)
    if begin != -1 and end > begin:
        rest = text[end + len(MARK_END) :].lstrip("\n")
        text = text[:begin] + section + ("\n" + rest if rest else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30, help="measured repetitions per variant")
    parser.add_argument("--warmup", type=int, default=4, help="unmeasured repetitions first")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 repetitions")
    parser.add_argument("--write", type=Path, metavar="FILE", help="rewrite FILE's results")
    args = parser.parse_args(argv)
    reps, warmup = (3, 1) if args.quick else (args.reps, args.warmup)
    if reps < 1 or warmup < 0:
        parser.error("--reps must be at least 1 and --warmup at least 0")

    console = Console()
    if not console.is_terminal:  # logs and pipes get the whole table, not 80 columns
        console = Console(width=110)
    with (
        tempfile.TemporaryDirectory(prefix="meshclaw-bench-") as home,
        ScriptedServer(bench_script()) as server,
    ):
        bench = MeshClaw.setup(Path(home), server.base_url)
        try:
            results = asyncio.run(measure(server, bench, reps, warmup))
        finally:
            bench.platform.close()
    print_results(console, results, reps)
    if args.write:
        write_results(args.write, markdown(results, reps, warmup))
        console.print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
