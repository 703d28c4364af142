"""``cron_churn``: scheduled agents left running unattended that never deliver anything.

Catches: agents triggered by ``cron`` with many runs and (almost) no outcomes; the
person's count of such runs far above their peers'.

Why honest heavy use does not trip it: automation that really delivers also runs on a
schedule, often hourly, but most of its runs end in an outcome (a digest published, a
ticket closed), so its agents are not counted no matter how often they run.

Evidence: per agent its cron runs, share with an outcome, median interval between runs,
share outside 08:00-19:00 UTC or at weekends, first and last run.
"""

from __future__ import annotations

import polars as pl

from meshclaw.integrity._history import History
from meshclaw.integrity._stats import Finding, strength
from meshclaw.integrity.detectors._common import iso, outlying_groups, r3, run_groups, sample

NAME = "cron_churn"
MIN_AGENT_RUNS = 10
MAX_OUTCOME_SHARE = 0.2
Z = 4.0
MIN_RUNS = 20


def detect(h: History) -> list[Finding]:
    cron = h.runs.filter(pl.col("trigger") == "cron").sort("ts")
    if cron.height == 0:
        return []
    hour, weekday = pl.col("ts").dt.hour(), pl.col("ts").dt.weekday()
    agents = run_groups(
        cron,
        "agent",
        (pl.col("ts").diff().dt.total_seconds() / 60).median().alias("interval_min"),
        ((hour < 8) | (hour >= 19) | (weekday >= 6)).mean().alias("off_hours"),
    ).filter((pl.col("runs") >= MIN_AGENT_RUNS) & (pl.col("outcome_share") <= MAX_OUTCOME_SHARE))
    findings = []
    for row, mine in outlying_groups(
        h,
        agents,
        "churn",
        z=Z,
        min_runs=MIN_RUNS,
        order=["runs", "agent"],
        descending=[True, False],
    ):
        findings.append(
            Finding(
                detector=NAME,
                user=row["user"],
                strength=strength(row["z"], Z),
                evidence={
                    "cron_runs_without_outcome": int(row["churn"]),
                    "peer_median": r3(row["peer_median"]),
                    "robust_z": r3(row["z"]),
                    "agents": [
                        {
                            "agent": a["agent"],
                            "runs": a["runs"],
                            "share_with_outcome": r3(a["outcome_share"]),
                            "median_interval_minutes": r3(a["interval_min"]),
                            "share_off_hours": r3(a["off_hours"]),
                            "first": iso(a["first"]),
                            "last": iso(a["last"]),
                            "example_runs": sample(a["run"]),
                        }
                        for a in mine
                    ],
                },
            )
        )
    return findings
