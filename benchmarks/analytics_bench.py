"""Offline analytics at scale: ``leaderboard`` and ``report`` over 1 M and 10 M events.

Question: can ``meshclaw leaderboard`` / ``meshclaw report`` handle a big org's history
on this machine? Target: 10 M events in <= 10 s and <= 4 GiB peak memory.

Workload: histories from the labelled org simulator (``meshclaw.events.simulate``,
seeded), cut to exactly N events, written once to ``--data`` and reused. Each phase runs
in a fresh Python process so that its peak resident memory (``wait4`` rusage) is its own:

- ``cold``: parse the JSON Lines file with ``events.load_frame`` and write the columnar
  cache (what the first command on a new file pays);
- ``leaderboard`` / ``report``: the command's work on the cached history: load, credit
  rules, ranking or aggregation (what every later command pays);
- ``baseline`` (1 M only unless ``--baseline-all``): the same leaderboard computed the
  obvious way, streaming typed events with ``events.EventReader`` into Python dicts.
  It doubles as an independent implementation of the rules: the run fails unless both
  give the same scores.

Interpreter start-up and imports are excluded from the times and reported apart.

    .venv/bin/python benchmarks/analytics_bench.py                 # 1M and 10M, prints
    .venv/bin/python benchmarks/analytics_bench.py --sizes 200000  # quick
    .venv/bin/python benchmarks/analytics_bench.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- analytics:begin -->", "<!-- analytics:end -->"
EVENTS_PER_USER_WEEK = 190
"""Roughly what the simulator writes per person and week at activity 1."""


def sim_config(n: int) -> Any:
    from meshclaw.events.simulate import SimConfig

    weeks = 4 if n <= 2_000_000 else 10
    users = max(50, math.ceil(n * 1.15 / (EVENTS_PER_USER_WEEK * weeks)))
    return SimConfig(seed=8, users=users, weeks=weeks, texts=False)


def generate(path: Path, n: int) -> None:
    from meshclaw.events import write_events
    from meshclaw.events.simulate import simulate

    tmp = path.with_suffix(".tmp")
    written = write_events(tmp, itertools.islice(simulate(sim_config(n)), n))
    if written != n:
        raise SystemExit(f"simulator wrote {written} events, wanted {n}: raise its size")
    tmp.replace(path)


# ---- phases (each runs in its own process) -------------------------------------------------


def phase(name: str, events: Path, cache: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    import polars as pl

    from meshclaw import analytics

    imports = time.perf_counter() - t0
    t = time.perf_counter()
    out: dict[str, Any] = {}
    if name == "cold":
        history = analytics.load_history(events, cache_dir=cache)
        assert not history.cached
        out["events"] = history.report.events
    elif name in ("leaderboard", "report"):
        history = analytics.load_history(events, cache_dir=cache)
        assert history.cached, "run the cold phase first"
        credit = analytics.compute_credit(history.tables)
        if name == "leaderboard":
            board = analytics.leaderboard(credit)
            out["scores"] = {e.id: e.score for e in board.entries}
        else:
            report = analytics.build_report(history.tables, credit, history.report)
            out["credited"] = report.totals["credited"]
    elif name == "baseline":
        out["scores"] = baseline_scores(events)
    else:
        raise SystemExit(f"unknown phase {name}")
    out["seconds"] = time.perf_counter() - t
    out["imports"] = imports
    out["polars"] = pl.__version__
    return out


def baseline_scores(events: Path) -> dict[str, float]:
    """The leaderboard computed event by event in plain Python (the obvious way)."""
    from meshclaw.analytics import Cutoff
    from meshclaw.events import EventReader, Feedback, Outcome

    outcomes: dict[str, Outcome] = {}
    lines: dict[str, int] = {}
    feedback: list[tuple[Any, int, Feedback]] = []
    for number, event in enumerate(EventReader(events, fingerprints=False), start=1):
        if isinstance(event, Outcome):
            outcomes[event.id] = event
            lines[event.id] = number
        elif isinstance(event, Feedback):
            feedback.append((event.ts, number, event))
    feedback.sort(key=lambda item: (item[0], item[1]))
    accepted_at: dict[str, int] = {}
    undone_at: dict[str, int] = {}
    for seq, (_, _, f) in enumerate(feedback):
        o = outcomes.get(f.outcome)
        if o is None:
            continue
        if f.verdict == "accepted" and f.by not in ("system", o.user):
            accepted_at[o.id] = seq
        elif f.verdict != "accepted":
            undone_at[o.id] = seq
    cutoff = Cutoff()
    best: dict[tuple[str, str, str], Outcome] = {}
    for o in outcomes.values():
        if not o.verified or o.beneficiary == o.user or o.id not in accepted_at:
            continue
        if accepted_at[o.id] < undone_at.get(o.id, -1):
            continue
        key = (o.user, o.type, o.ref)
        seen = best.get(key)
        if seen is None or _rank_key(o) < _rank_key(seen):
            best[key] = o
    groups: dict[tuple[str, str, int], list[Outcome]] = {}
    for o in best.values():
        week = int((o.ts - cutoff.reference).total_seconds() // (7 * 86400)) + 1
        groups.setdefault((o.user, o.type, week), []).append(o)
    scores: dict[str, float] = {}
    for (user, _, _), items in groups.items():
        items.sort(key=_rank_key)
        for k, o in enumerate(items, start=1):
            value = 1.0 if o.value is None else o.value
            scores[user] = scores.get(user, 0.0) + value / math.sqrt(k)
    return {u: round(s, 6) for u, s in scores.items() if s > 0}


def _rank_key(o: Any) -> tuple[float, Any, str]:
    """Best first: highest value, then earliest, then smallest id (as the engine orders)."""
    return (-(1.0 if o.value is None else o.value), o.ts, o.id)


def run_phase(name: str, events: Path, cache: Path) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        result_path = Path(out.name)
    cmd = [sys.executable, __file__, "--phase", name, str(events), str(cache), str(result_path)]
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"phase {name} failed with exit code {proc.returncode}")
    result: dict[str, Any] = json.loads(result_path.read_text())
    result_path.unlink()
    result["peak_mib"] = usage.ru_maxrss / 1024
    result["cpu"] = usage.ru_utime + usage.ru_stime  # the whole process, imports included
    return result


# ---- the run -------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(
            int(line.split()[1]) // 1024 // 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        mem = 0
    return f"{cpu}, {os.cpu_count()} cores, {mem} GiB RAM, {platform.system()} {platform.release()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated counts")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "meshclaw-bench")
    parser.add_argument("--baseline-all", action="store_true", help="baseline at every size")
    parser.add_argument("--write", type=Path, help="replace the analytics section of this file")
    parser.add_argument("--phase", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        name, events, cache, result = args.phase
        Path(result).write_text(json.dumps(phase(name, Path(events), Path(cache))))
        return
    args.data.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for n in (int(s) for s in args.sizes.split(",")):
        events = args.data / f"sim-{n}.jsonl"
        if not events.exists():
            print(f"generating {n:,} events -> {events} ...", flush=True)
            t = time.perf_counter()
            generate(events, n)
            print(f"  {time.perf_counter() - t:.0f} s", flush=True)
        with tempfile.TemporaryDirectory(dir=args.data) as cache:
            row: dict[str, Any] = {"n": n, "bytes": events.stat().st_size}
            for name in ("cold", "leaderboard", "report"):
                row[name] = run_phase(name, events, Path(cache))
                print(f"{n:>11,} {name:<12} {row[name]['seconds']:7.2f} s "
                      f"{row[name]['peak_mib']:8.0f} MiB", flush=True)  # fmt: skip
            if n <= 1_000_000 or args.baseline_all:
                row["baseline"] = run_phase("baseline", events, Path(cache))
                print(f"{n:>11,} {'baseline':<12} {row['baseline']['seconds']:7.2f} s "
                      f"{row['baseline']['peak_mib']:8.0f} MiB", flush=True)  # fmt: skip
                if row["baseline"]["scores"] != row["leaderboard"]["scores"]:
                    raise SystemExit("baseline and leaderboard disagree: a rule differs")
            if row["cold"]["events"] != n:
                raise SystemExit(f"read {row['cold']['events']} events of {n}")
            rows.append(row)
    section = render(rows)
    print(section)
    if args.write:
        write(args.write, section)


def render(rows: list[dict[str, Any]]) -> str:
    first = rows[0]["leaderboard"] if rows else {}
    lines = [
        BEGIN,
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine()}; Python "
        f"{platform.python_version()}, Polars {first.get('polars', '?')}. Times exclude "
        f"interpreter start and imports (about {first.get('imports', 0):.1f} s here); CPU is "
        "the phase's whole process (user + system, all threads, imports included).",
        "",
        "| events | file | phase | time | CPU (process) | peak memory | target |",
        "|---:|---:|---|---:|---:|---:|---|",
    ]
    for row in rows:
        n, size = row["n"], row["bytes"] / 2**30
        for name in ("cold", "leaderboard", "report", "baseline"):
            if name not in row:
                continue
            r = row[name]
            target = ""
            if name in ("leaderboard", "report") and n >= 10_000_000:
                ok = r["seconds"] <= 10 and r["peak_mib"] <= 4096
                target = "met" if ok else "**missed**"
            lines.append(
                f"| {n:,} | {size:.2f} GiB | {name} | {r['seconds']:.2f} s "
                f"| {r.get('cpu', 0.0):.1f} s | {r['peak_mib']:,.0f} MiB | {target} |"
            )
        if "baseline" in row:
            ratio = row["baseline"]["seconds"] / max(row["leaderboard"]["seconds"], 1e-9)
            lines.append(
                f"| {n:,} | | leaderboard vs baseline | **{ratio:.0f}x** faster | | | same scores |"
            )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    lines.append("")
    lines.append(
        f"Load average at the end of the run: {load:.1f} on {os.cpu_count()} CPUs"
        + (" (a shared machine: times are inflated)." if load > (os.cpu_count() or 1) else ".")
    )
    lines.append(END)
    return "\n".join(lines)


def write(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
