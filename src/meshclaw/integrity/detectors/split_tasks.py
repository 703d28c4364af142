"""``split_tasks``: one piece of work split into many small runs and outcomes.

Catches: bursts of outcomes on the *same* resource (the same ``ref``) by the same
person within ``SPAN``, in groups of at least ``MIN_PARTS``; the number of outcomes in
such groups far above the peers'.

Why honest heavy use does not trip it: a manager triaging a big queue produces many
small outcomes quickly, but each on a different ticket; a release week produces many
deploys and merges, on different changes. Revisiting one resource a few times a day
is normal; a dozen credited slices of it is not.

Evidence: each group's ref, number of outcomes, runs, total value, minutes spanned.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from meshclaw.integrity._history import History
from meshclaw.integrity._stats import Finding, peer_z, strength
from meshclaw.integrity.detectors._common import iso, r3, sample

NAME = "split_tasks"
SPAN = timedelta(hours=24)
MIN_PARTS = 4
Z = 4.0
MIN_SPLIT = 10


def detect(h: History) -> list[Finding]:
    o = h.outcomes.sort("ts").with_columns(pl.col("ts").dt.truncate("1d").alias("day"))
    groups = (
        o.group_by("user", "ref", "day")
        .agg(
            pl.len().alias("parts"),
            pl.col("run").n_unique().alias("runs"),
            pl.col("value").sum().alias("value"),
            pl.col("ts").min().alias("first"),
            pl.col("ts").max().alias("last"),
            pl.col("run").alias("run_ids"),
        )
        .filter((pl.col("parts") >= MIN_PARTS) & (pl.col("last") - pl.col("first") <= SPAN))
    )
    per = groups.group_by("user").agg(pl.col("parts").sum().alias("split"))
    z = peer_z(h.users, per, "split", min_peers=h.config.min_peers, floor_abs=2.0)
    findings = []
    for row in z.filter((pl.col("z") >= Z) & (pl.col("split") >= MIN_SPLIT)).iter_rows(named=True):
        mine = groups.filter(pl.col("user") == row["user"]).sort(
            ["parts", "first", "ref"], descending=[True, False, False]
        )
        findings.append(
            Finding(
                detector=NAME,
                user=row["user"],
                strength=strength(row["z"], Z),
                evidence={
                    "outcomes_in_split_groups": int(row["split"]),
                    "groups": mine.height,
                    "peer_median": r3(row["peer_median"]),
                    "robust_z": r3(row["z"]),
                    "examples": [
                        {
                            "ref": g["ref"],
                            "outcomes": g["parts"],
                            "runs": g["runs"],
                            "total_value": r3(g["value"]),
                            "first": iso(g["first"]),
                            "minutes": r3((g["last"] - g["first"]).total_seconds() / 60),
                            "example_runs": sample(g["run_ids"]),
                        }
                        for g in mine.head(3).iter_rows(named=True)
                    ],
                },
            )
        )
    return findings
