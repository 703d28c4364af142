"""``deadline_burst``: activity piled up just before a measurement cut-off, week after week.

Catches: the share of a person's weekly runs started in the ``WINDOW`` before the
week's cut-off (org setting; default Friday 17:00 UTC) far above the peers' share in
the *same* week, in at least ``MIN_WEEKS`` weeks, with those runs mostly producing
nothing.

Why honest heavy use does not trip it: a team's release-week burst lifts the whole
team in the same week, and peers are compared within that week; an incident or a real
Friday deadline happens once, and the detector needs repetition across weeks; runs
before the cut-off that deliver outcomes do not count.

Evidence: each elevated week (named by its cut-off) with runs before the cut-off,
share vs the peers' median, their outcome share; example runs.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import polars as pl

from meshclaw.integrity._history import WEEK, History
from meshclaw.integrity._stats import Finding, peer_z, strength
from meshclaw.integrity.detectors._common import iso, r3, sample

NAME = "deadline_burst"
WINDOW = timedelta(hours=6)
Z = 4.0
MIN_RUNS_BEFORE = 5
MIN_WEEKS = 2
MAX_OUTCOME_SHARE = 0.5


def detect(h: History) -> list[Finding]:
    # Seconds from the cut-off that ends the run's week: in [-7 days, 0).
    since_first = pl.col("ts") - pl.lit(h.cutoff_of_week(0))
    runs = h.runs.with_columns(
        (since_first - pl.col("week") * WEEK).dt.total_seconds().alias("_to_cutoff")
    )
    runs = runs.with_columns(
        (pl.col("_to_cutoff") > -WINDOW.total_seconds()).alias("before_cutoff")
    )
    weekly = runs.group_by("user", "week").agg(
        pl.len().alias("n"),
        pl.col("before_cutoff").sum().alias("k"),
        (pl.col("outcomes") > 0).filter(pl.col("before_cutoff")).mean().alias("out_share"),
        pl.col("run").filter(pl.col("before_cutoff")).alias("runs"),
    )
    weekly = weekly.with_columns((pl.col("k") / pl.col("n")).alias("share"))
    elevated: dict[str, list[dict[str, Any]]] = {}
    scores: dict[str, float] = {}
    for (week,), part in weekly.group_by(["week"]):
        z = peer_z(h.users, part, "share", min_peers=h.config.min_peers, floor_abs=0.05)
        hits = z.join(part.drop("share"), on="user").filter(
            (pl.col("z") >= Z)
            & (pl.col("k") >= MIN_RUNS_BEFORE)
            & (pl.col("out_share").fill_null(0) <= MAX_OUTCOME_SHARE)
        )
        for row in hits.iter_rows(named=True):
            elevated.setdefault(row["user"], []).append(
                {
                    "cutoff": iso(h.cutoff_of_week(int(str(week)))),
                    "runs_before_cutoff": row["k"],
                    "runs_in_week": row["n"],
                    "share": r3(row["share"]),
                    "peer_median_share": r3(row["peer_median"]),
                    "robust_z": r3(row["z"]),
                    "share_with_outcome": r3(row["out_share"]),
                    "example_runs": sample(row["runs"]),
                }
            )
            scores[row["user"]] = max(scores.get(row["user"], 0.0), float(row["z"]))
    findings = []
    for user, weeks in elevated.items():
        if len(weeks) < MIN_WEEKS:
            continue
        weeks.sort(key=lambda w: str(w["cutoff"]))
        findings.append(
            Finding(
                detector=NAME,
                user=user,
                strength=strength(scores[user], Z),
                evidence={"window_hours": WINDOW.total_seconds() / 3600, "weeks": weeks},
            )
        )
    return findings
