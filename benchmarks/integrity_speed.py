"""Integrity scan speed and memory at 1 M (and optionally 10 M) events.

Question: does ``meshclaw integrity scan`` keep up with a big org's history on this
2-core machine? Targets (issue 9): 600 people x 4 weeks, about 1 M events, in <= 10 s;
10 M events in <= 60 s and <= 4 GiB peak memory.

Workload: the labelled simulator (``meshclaw.events.simulate``) at 600 people, 4 weeks,
activity scaled so the org has at least N events, cut to exactly N, written once to
``--data`` and reused. Sizes above 2 M that are whole millions are the 1 M history
replicated with every id renamed per copy (an org of independent divisions of 600).
Each measurement runs in a fresh Python process so its peak resident memory (``wait4``
rusage) is its own; interpreter start-up and imports are excluded from the time. The
baseline, in the same run, is the obvious pure-Python pass: stream typed events with
``events.EventReader`` and sum tokens per person (what a "tokens consumed" leaderboard
costs), with texts fingerprinted as the reader does.

Other sessions may share the machine: the section records the load average, and CPU
seconds (user + system) beside wall time, which contention inflates less.

    .venv/bin/python benchmarks/integrity_speed.py                      # 1 M
    .venv/bin/python benchmarks/integrity_speed.py --sizes 1000000 10000000
    .venv/bin/python benchmarks/integrity_speed.py --write docs/integrity.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BEGIN, END = "<!-- integrity-speed:begin -->", "<!-- integrity-speed:end -->"
EVENTS_PER_PERSON_WEEK = 185
"""Roughly what the simulator writes per person and week at activity 1."""

CHILD = r"""
import json, resource, sys, time
mode, path = sys.argv[1], sys.argv[2]
if mode == "scan":
    from meshclaw.integrity import scan_file
    t0, c0 = time.perf_counter(), time.process_time()
    result = scan_file(path)
    out = {"events": result.report.events, "people": len(result.users),
           "flagged": len(result.flagged), "timings": result.timings}
else:
    from meshclaw.events import EventReader, LlmCall
    t0, c0 = time.perf_counter(), time.process_time()
    reader = EventReader(path)
    tokens = {}
    for event in reader:
        if isinstance(event, LlmCall):
            used = event.input_tokens + event.output_tokens
            tokens[event.user] = tokens.get(event.user, 0) + used
    out = {"events": reader.report.events, "people": len(tokens)}
out["wall"] = time.perf_counter() - t0
out["cpu"] = time.process_time() - c0
print(json.dumps(out))
"""


def build(path: Path, n: int, people: int, weeks: int) -> None:
    from meshclaw.events import EventWriter
    from meshclaw.events.simulate import SimConfig, simulate

    activity = n / (people * weeks * EVENTS_PER_PERSON_WEEK) * 1.05
    config = SimConfig(seed=77, users=people, weeks=weeks, activity=activity)
    written = 0
    with EventWriter(path) as writer:
        for event in simulate(config):
            writer.write(event)
            written += 1
            if written == n:
                break
    if written < n:
        raise SystemExit(f"simulator wrote only {written} events, wanted {n}")


_IDS = re.compile(rb'"((?:u\d{4}|[er][0-9a-f]+-[0-9a-f]+|ag-u\d{4}[^"]*|t\d\d-[a-z]+))"')


def replicate(base: Path, path: Path, copies: int) -> None:
    """``copies`` renamed copies of ``base``: one org of ``copies`` independent divisions.

    Every person, team, agent, run and event id gets a per-copy prefix, so the copies
    share nothing and the detectors see ``copies`` times the people.
    """
    with path.open("wb") as out:
        for k in range(copies):
            prefix = b'"d%d.' % k
            rename = prefix + rb'\1"'
            with base.open("rb") as src:
                while chunk := src.readlines(64 << 20):
                    out.write(_IDS.sub(rename, b"".join(chunk)))


def measure(mode: str, path: Path) -> dict[str, float]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{mode} failed with status {status}")
    result: dict[str, float] = json.loads(out)
    result["peak_mib"] = usage.ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--data", type=Path, default=Path("var/bench-data"))
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.sizes:
        people, weeks = 600, 4
        path = args.data / f"integrity-{n}.jsonl"
        if not path.exists():
            started = time.perf_counter()
            if n > 2_000_000 and n % 1_000_000 == 0:
                base = args.data / "integrity-1000000.jsonl"
                if not base.exists():
                    build(base, 1_000_000, people, weeks)
                replicate(base, path, n // 1_000_000)
            else:
                build(path, n, people, weeks)
            print(f"built {path} in {time.perf_counter() - started:.0f} s", flush=True)
        if n > 2_000_000:
            people *= n // 1_000_000
        size_mb = path.stat().st_size / 1e6
        scan = measure("scan", path)
        base = None if args.no_baseline or n > 2_000_000 else measure("baseline", path)
        load = os.getloadavg()[0]
        row = {"n": n, "people": people, "weeks": weeks, "mb": size_mb, "scan": scan,
               "base": base, "load": load}  # fmt: skip
        rows.append(row)
        ratio = (
            f", baseline {base['wall']:.1f} s ({base['wall'] / scan['wall']:.1f}x slower)"
            if base
            else ""
        )
        print(
            f"{n:>10,} events ({size_mb:.0f} MB, {people} people x {weeks} weeks): scan "
            f"{scan['wall']:.1f} s wall, {scan['cpu']:.1f} s CPU, peak {scan['peak_mib']:.0f} MiB, "
            f"{int(scan['flagged'])} flagged{ratio}; load average {load:.1f}",
            flush=True,
        )
    if args.write:
        lines = [
            BEGIN,
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `benchmarks/integrity_speed.py` "
            f"on {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}.",
            "",
            "| events | JSONL | people x weeks | scan wall | scan CPU | peak memory | "
            "baseline (typed reader, tokens per person) | load average |",
            "|---:|---:|---|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            s, b = r["scan"], r["base"]
            base = f"{b['wall']:.1f} s wall, {b['cpu']:.1f} s CPU" if b else "-"
            lines.append(
                f"| {r['n']:,} | {r['mb']:.0f} MB | {r['people']} x {r['weeks']} | "
                f"{s['wall']:.1f} s | {s['cpu']:.1f} s | {s['peak_mib']:.0f} MiB | {base} | "
                f"{r['load']:.1f} |"
            )
        lines.append("")
        lines.append("Scan phases (s): " + "; ".join(
            f"{r['n']:,}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["scan"]["timings"].items()
                                        if v >= 0.05) for r in rows))  # fmt: skip
        lines.append(END)
        block = "\n".join(lines)
        text = args.write.read_text() if args.write.exists() else ""
        if BEGIN in text and END in text:
            text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
        else:
            text += "\n" + block + "\n"
        args.write.write_text(text)
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
