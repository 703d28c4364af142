"""``reverted_outcomes``: outcomes that are reverted, reopened or rolled back soon after.

Catches: a share of a person's outcomes later undone (feedback ``reverted``,
``reopened``, ``rolled_back`` or ``cancelled``) far above what the rest of the org's rate
per outcome type predicts for the person's own mix of outcomes, tested as a binomial count
(so ten outcomes with two undone is not alarming, sixty with twenty is).

Why honest heavy use does not trip it: on-call engineers ship hot fixes during an
incident, and some get rolled back, but within a day or two, while the detector needs
undone outcomes on at least ``MIN_DAYS`` days; busy people have more outcomes and so
more undone ones in absolute terms, but the test is on the rate for their mix of types.

Evidence: outcomes, undone ones with their verdicts, hours from delivery to undo,
the expected number and the binomial z, example outcome ids.
"""

from __future__ import annotations

import math

import polars as pl

from meshclaw.integrity._history import History
from meshclaw.integrity._stats import Finding, strength
from meshclaw.integrity.detectors._common import r3, sample

NAME = "reverted_outcomes"
Z = 4.0
MIN_UNDONE = 5
MIN_RATIO = 3.0
BASE_FLOOR = 0.01
MIN_TYPE_OUTCOMES = 30
MIN_DAYS = 3
"""Undone outcomes must come from this many days: an incident's hot fixes, some rolled
back, are one or two days of work."""
"""Base rate used when the peers have (almost) none undone."""


def detect(h: History) -> list[Finding]:
    o = h.outcomes
    if o.height == 0:
        return []
    # Base rate per outcome type over the whole org: deploys get rolled back more often
    # than mails bounce, so a person is compared with what *their* mix would expect.
    # Leave the person out, so a type that only they produce does not define its own norm;
    # with too few others' outcomes of a type, use everyone else's overall rate.
    k = pl.col("undone").cast(pl.Int64)
    o = o.with_columns(
        (k.sum().over("type") - k.sum().over("type", "user")).alias("_kt"),
        (pl.len().over("type") - pl.len().over("type", "user")).alias("_nt"),
        (k.sum() - k.sum().over("user")).alias("_ka"),
        (pl.len() - pl.len().over("user")).alias("_na"),
    ).with_columns(
        pl.when(pl.col("_nt") >= MIN_TYPE_OUTCOMES)
        .then(pl.col("_kt") / pl.col("_nt"))
        .otherwise(pl.col("_ka") / pl.col("_na").clip(lower_bound=1))
        .clip(lower_bound=BASE_FLOOR)
        .alias("p_type")
    )
    per = o.group_by("user").agg(
        pl.len().alias("n"),
        pl.col("undone").sum().alias("k"),
        pl.col("p_type").sum().alias("expected"),
        (pl.col("p_type") * (1 - pl.col("p_type"))).sum().alias("var"),
        pl.col("id").filter(pl.col("undone")).alias("ids"),
        pl.col("undo_verdict").drop_nulls().value_counts().alias("verdicts"),
        pl.col("ts").filter(pl.col("undone")).dt.date().n_unique().alias("days"),
    )
    findings = []
    candidates = per.filter((pl.col("k") >= MIN_UNDONE) & (pl.col("days") >= MIN_DAYS))
    for row in candidates.iter_rows(named=True):
        n, k, expected = row["n"], row["k"], row["expected"]
        z = (k - expected) / math.sqrt(max(row["var"], 1e-9))
        if z < Z or k < MIN_RATIO * expected:
            continue
        verdicts = {v["undo_verdict"]: v["count"] for v in row["verdicts"]}
        findings.append(
            Finding(
                detector=NAME,
                user=row["user"],
                strength=strength(z, Z),
                evidence={
                    "outcomes": n,
                    "undone": k,
                    "days_with_undone": row["days"],
                    "rate": r3(k / n),
                    "expected_undone": r3(expected),
                    "expected_rate": r3(expected / n),
                    "binomial_z": r3(z),
                    "verdicts": verdicts,
                    "example_outcomes": sample(row["ids"]),
                },
            )
        )
    return findings
