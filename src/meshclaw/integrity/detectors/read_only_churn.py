"""``read_only_churn``: runs that only read, the same few resources over and over.

Catches: reads made in runs that wrote nothing and produced no outcome, of resources
the same person had already read; their number far above the peers'.

Why honest heavy use does not trip it: a new hire learning the code base and a
researcher reading sources read a lot, but mostly *different* things, and research
ends in published documents; an on-call engineer re-reads the same logs all through an
incident, but for a day or two, and churn must recur on at least ``MIN_DAYS`` days.
Only repeated reads in runs that led nowhere count.

Evidence: repeated reads, read-only runs, most re-read targets with counts, peers'
median, example runs.
"""

from __future__ import annotations

import polars as pl

from meshclaw.integrity._history import History
from meshclaw.integrity._stats import Finding, peer_z, strength
from meshclaw.integrity.detectors._common import r3, sample

NAME = "read_only_churn"
Z = 5.0
MIN_REPEATS = 15
MIN_DAYS = 3
"""Re-reading logs all through a one- or two-day incident is honest; churn recurs."""


def detect(h: History) -> list[Finding]:
    idle = h.runs.filter(
        (pl.col("writes") == 0) & (pl.col("outcomes") == 0) & (pl.col("reads") > 0)
    )
    if idle.height == 0:
        return []
    reads = (
        h.reads.sort("ts", "run", "target")
        .with_columns(pl.col("target").is_first_distinct().over("user").alias("first_read"))
        .join(idle.select("run"), on="run", how="semi")
    )
    repeated = reads.filter(~pl.col("first_read"))
    per = repeated.group_by("user").agg(
        pl.len().alias("repeats"),
        pl.col("run").n_unique().alias("runs"),
        pl.col("ts").dt.date().n_unique().alias("days"),
    )
    z = peer_z(h.users, per, "repeats", min_peers=h.config.min_peers, floor_abs=3.0)
    hits = z.join(per.drop("repeats"), on="user").filter(
        (pl.col("z") >= Z) & (pl.col("repeats") >= MIN_REPEATS) & (pl.col("days") >= MIN_DAYS)
    )
    findings = []
    for row in hits.iter_rows(named=True):
        mine = repeated.filter(pl.col("user") == row["user"])
        top = (
            mine.group_by("target").len().sort(["len", "target"], descending=[True, False]).head(5)
        )
        findings.append(
            Finding(
                detector=NAME,
                user=row["user"],
                strength=strength(row["z"], Z),
                evidence={
                    "repeated_reads": int(row["repeats"]),
                    "read_only_runs": row["runs"],
                    "days": row["days"],
                    "peer_median": r3(row["peer_median"]),
                    "robust_z": r3(row["z"]),
                    "top_targets": [{"target": t, "reads": n} for t, n in top.iter_rows()],
                    "example_runs": sample(mine["run"].unique()),
                },
            )
        )
    return findings
