"""``no_outcome_runs``: a person runs agents again and again and nothing comes of it.

Catches: a share of runs that produce no outcome at all far above the person's peers
(same team and role), *sustained* over most of their weeks.

Why honest heavy use does not trip it: volume is never the signal, the share is, so a
release-week burst or a manager's big queue (which do produce outcomes) stays at the
peers' level. An on-call incident has many investigation runs without an outcome, but
in one or two days: the person's own other weeks are normal, and the detector needs
the share to be high in at least two weeks. A new hire (first seen after the history
starts) whose share is falling week by week is ramping up, not gaming.

Evidence: runs, runs without outcome, share vs the peers' median, the weeks that were
elevated, example run ids.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from meshclaw.integrity._history import History
from meshclaw.integrity._stats import Finding, peer_z, strength
from meshclaw.integrity.detectors._common import r3, sample, week_labels

NAME = "no_outcome_runs"
Z = 4.0
MIN_EXCESS = 8


def detect(h: History) -> list[Finding]:
    runs = h.runs.with_columns((pl.col("outcomes") == 0).alias("empty"))
    per = runs.group_by("user").agg(
        pl.len().alias("runs"),
        pl.col("empty").sum().alias("empty_runs"),
        pl.col("empty").mean().alias("rate"),
    )
    p0 = per["rate"].median() or 0.0
    per = per.with_columns((p0 * (1 - p0) / pl.col("runs")).sqrt().alias("se"))  # type: ignore[operator]
    z = peer_z(h.users, per, "rate", min_peers=h.config.min_peers, floor_abs=0.05, stderr="se")
    weekly = runs.group_by("user", "week").agg(
        pl.len().alias("n"), pl.col("empty").sum().alias("k")
    )
    excess = pl.col("empty_runs") - pl.col("runs") * pl.col("peer_median")
    cand = z.join(per, on="user").filter((pl.col("z") >= Z) & (excess >= MIN_EXCESS))
    late = h.users.filter(pl.col("first_ts") >= h.start + timedelta(days=3))["user"].to_list()
    findings = []
    for row in cand.iter_rows(named=True):
        user = row["user"]
        weeks = weekly.filter(pl.col("user") == user).sort("week")
        limit = row["peer_median"] + 3 * row["peer_scale"]
        elevated = weeks.filter((pl.col("k") >= 3) & (pl.col("k") / pl.col("n") > limit))
        if elevated.height < min(2, weeks.height):
            continue
        rates = (weeks["k"] / weeks["n"]).to_list()
        ramping = user in late and len(rates) >= 2 and rates[-1] < rates[0] - 0.15
        if ramping:
            continue
        empty_ids = runs.filter((pl.col("user") == user) & pl.col("empty"))["run"]
        findings.append(
            Finding(
                detector=NAME,
                user=user,
                strength=strength(row["z"], Z),
                evidence={
                    "runs": row["runs"],
                    "runs_without_outcome": row["empty_runs"],
                    "share": r3(row["rate"]),
                    "peer_median_share": r3(row["peer_median"]),
                    "peers": row["peers"],
                    "robust_z": r3(row["z"]),
                    "weeks_elevated": week_labels(h, elevated["week"].to_list()),
                    "example_runs": sample(empty_ids),
                },
            )
        )
    return findings
