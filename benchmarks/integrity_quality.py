"""Integrity engine quality on labelled simulated orgs, against two baselines in the same run.

Question: does ``meshclaw integrity scan`` find the gamers (recall per gaming kind) without
accusing honest people, heavy users above all (false-positive rate per honest kind)?
Targets: overall recall >= 0.95 and honest false-positive rate <= 1 % on orgs the
detectors were **not tuned on**.

Seeds 1-3 (300 people, 4 weeks) are the *tuning* orgs: thresholds were set looking at
them. The *evaluation* orgs use other seeds and differ in size, length, mix and gaming
intensity (see ``EVAL``); they are reported separately and are the ones that count.

Baselines, given the same histories and an oracle's help (both flag exactly as many
people as there are gamers in the org):

- ``raw tokens``: the people with the most tokens (what a usage leaderboard rewards);
- ``isolation forest``: scikit-learn's ``IsolationForest`` over per-person features
  (runs, tokens, tokens per run, calls per run, reads per run, share of runs without an
  outcome, acceptance, undo and self-addressed rates, cron share, agents, share of runs
  before the cut-off, prompt density), contamination = the true gamer share.

    .venv/bin/python benchmarks/integrity_quality.py                    # prints
    .venv/bin/python benchmarks/integrity_quality.py --quick            # 2 small orgs
    .venv/bin/python benchmarks/integrity_quality.py --write docs/integrity.md
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table
from sklearn.ensemble import IsolationForest

from meshclaw.events import load_frame, write_events
from meshclaw.events.simulate import GAMING_KINDS, HONEST_KINDS, SimConfig, SimulatedOrg, simulate
from meshclaw.integrity import History, build_history, scan_history

TUNE = [SimConfig(seed=s) for s in (1, 2, 3)]
EVAL = [
    SimConfig(seed=101),
    SimConfig(seed=102, users=600, intensity=(2.0, 2.5)),
    SimConfig(seed=103, users=200, weeks=6, gaming_share=0.08),
    SimConfig(seed=104, users=400, weeks=3, heavy_share=0.25, release_teams=3),
    SimConfig(seed=105, users=300, intensity=(2.0, 2.2), gaming_share=0.15),
]
QUICK = [SimConfig(seed=101, users=150, weeks=3), SimConfig(seed=106, users=150, weeks=4)]
METHODS = ("meshclaw", "raw tokens", "isolation forest")
BEGIN, END = "<!-- integrity-quality:begin -->", "<!-- integrity-quality:end -->"


@dataclass
class Tally:
    """people and flagged people, per method, per behaviour kind."""

    n: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    hit: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))

    def add(self, labels: dict[str, str], flagged: dict[str, set[str]]) -> None:
        for user, kind in labels.items():
            self.n[kind] += 1
            for method, users in flagged.items():
                self.hit[method, kind] += user in users

    def rate(self, method: str, kinds: tuple[str, ...]) -> float:
        n = sum(self.n[k] for k in kinds)
        return sum(self.hit[method, k] for k in kinds) / n if n else float("nan")


def features(h: History) -> tuple[list[str], np.ndarray]:
    runs = h.runs
    hour_to_cutoff = h.runs.with_columns(
        (pl.col("ts").dt.weekday() == h.config.cutoff_weekday + 1)
        & (pl.col("ts").dt.hour() >= h.config.cutoff_hour - 6)
        & (pl.col("ts").dt.hour() < h.config.cutoff_hour)
    )
    per = runs.group_by("user").agg(
        pl.len().alias("runs"),
        pl.col("tokens").sum().alias("tokens"),
        pl.col("tokens").mean().alias("tokens_per_run"),
        pl.col("llm_calls").mean().alias("calls_per_run"),
        pl.col("reads").mean().alias("reads_per_run"),
        (pl.col("outcomes") == 0).mean().alias("no_outcome"),
        (pl.col("trigger") == "cron").mean().alias("cron"),
        pl.col("agent").n_unique().alias("agents"),
        (pl.col("prompt_unique").sum() / pl.col("prompt_words").sum().clip(lower_bound=1)).alias(
            "density"
        ),
    )
    pre = hour_to_cutoff.group_by("user").agg(pl.col("ts").mean().alias("_"))  # keeps schema
    deadline = (
        hour_to_cutoff.rename({hour_to_cutoff.columns[-1]: "pre"})
        .group_by("user")
        .agg(pl.col("pre").mean().alias("pre_cutoff"))
    )
    out = h.outcomes.group_by("user").agg(
        pl.col("accepted").mean().alias("accepted"),
        pl.col("undone").mean().alias("undone"),
        (pl.col("beneficiary") == pl.col("user")).mean().alias("self"),
    )
    table = (
        h.users.select("user")
        .join(per, on="user", how="left")
        .join(deadline, on="user", how="left")
        .join(out, on="user", how="left")
        .fill_null(0)
        .fill_nan(0)
    )
    del pre
    return table["user"].to_list(), table.drop("user").to_numpy().astype(float)


def evaluate(
    config: SimConfig, workdir: Path
) -> tuple[dict[str, str], dict[str, set[str]], dict[str, float]]:
    org = SimulatedOrg()
    path = workdir / f"org-{config.seed}.jsonl"
    write_events(path, simulate(config, org))
    started = time.perf_counter()
    frame, report = load_frame(path)
    history = build_history(frame)
    result = scan_history(history, report=report)
    took = time.perf_counter() - started
    labels = org.labels
    k = sum(1 for kind in labels.values() if kind in GAMING_KINDS)
    tokens = (
        history.runs.group_by("user").agg(pl.col("tokens").sum()).sort("tokens", descending=True)
    )
    users, x = features(history)
    forest = IsolationForest(n_estimators=300, contamination=k / len(users), random_state=0)
    outlier = forest.fit_predict(x)
    flagged = {
        "meshclaw": set(result.flagged),
        "raw tokens": set(tokens["user"].head(k).to_list()),
        "isolation forest": {u for u, o in zip(users, outlier, strict=True) if o == -1},
    }
    path.unlink()
    return labels, flagged, {"events": float(report.events), "seconds": took}


def table(title: str, tally: Tally) -> Table:
    t = Table("behaviour", "people", *METHODS, title=title)
    for kind in GAMING_KINDS:
        t.add_row(
            f"gaming: {kind}",
            str(tally.n[kind]),
            *(f"{tally.rate(m, (kind,)):.2f}" for m in METHODS),
        )
    t.add_row("[b]recall, all gaming[/b]", str(sum(tally.n[k] for k in GAMING_KINDS)),
              *(f"[b]{tally.rate(m, GAMING_KINDS):.3f}[/b]" for m in METHODS))  # fmt: skip
    for kind in HONEST_KINDS:
        t.add_row(
            f"honest: {kind}",
            str(tally.n[kind]),
            *(f"{tally.rate(m, (kind,)):.3f}" for m in METHODS),
        )
    t.add_row("[b]false positives, all honest[/b]", str(sum(tally.n[k] for k in HONEST_KINDS)),
              *(f"[b]{tally.rate(m, HONEST_KINDS):.4f}[/b]" for m in METHODS))  # fmt: skip
    return t


def markdown(title: str, tally: Tally) -> str:
    lines = [f"**{title}**", "", "| behaviour | people | " + " | ".join(METHODS) + " |",
             "|---|---:|" + "---:|" * len(METHODS)]  # fmt: skip
    for kind in GAMING_KINDS:
        lines.append(
            f"| gaming: {kind} | {tally.n[kind]} | "
            + " | ".join(f"{tally.rate(m, (kind,)):.2f}" for m in METHODS)
            + " |"
        )
    lines.append(
        f"| **recall, all gaming** | {sum(tally.n[k] for k in GAMING_KINDS)} | "
        + " | ".join(f"**{tally.rate(m, GAMING_KINDS):.3f}**" for m in METHODS)
        + " |"
    )
    for kind in HONEST_KINDS:
        lines.append(
            f"| honest: {kind} (false-positive rate) | {tally.n[kind]} | "
            + " | ".join(f"{tally.rate(m, (kind,)):.3f}" for m in METHODS)
            + " |"
        )
    lines.append(
        f"| **false-positive rate, all honest** | {sum(tally.n[k] for k in HONEST_KINDS)} | "
        + " | ".join(f"**{tally.rate(m, HONEST_KINDS):.4f}**" for m in METHODS)
        + " |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two small evaluation orgs only")
    parser.add_argument("--write", type=Path, help="replace the results section of this file")
    args = parser.parse_args()
    console = Console()
    groups = [("evaluation orgs (not tuned on)", QUICK if args.quick else EVAL)]
    if not args.quick:
        groups.append(("tuning orgs (seeds 1-3)", TUNE))
    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        for title, configs in groups:
            tally = Tally()
            rows = []
            for config in configs:
                labels, flagged, stats = evaluate(config, Path(tmp))
                tally.add(labels, flagged)
                low, high = config.intensity
                rows.append(
                    f"seed {config.seed}: {config.users} people, {config.weeks} weeks, "
                    f"intensity {low}-{high}x, {int(stats['events'])} events, "
                    f"scan {stats['seconds']:.1f} s"
                )
                console.print(rows[-1])
            console.print(table(title, tally))
            sections.append(markdown(title, tally) + "\n\n" + "\n".join(f"- {r}" for r in rows))
    if args.write:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        block = (
            f"{BEGIN}\nMeasured {stamp} by `benchmarks/integrity_quality.py`.\n\n"
            + "\n\n".join(sections)
            + f"\n{END}"
        )
        text = args.write.read_text() if args.write.exists() else ""
        if BEGIN in text and END in text:
            text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
        else:
            text = text + "\n" + block + "\n"
        args.write.write_text(text)
        console.print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
