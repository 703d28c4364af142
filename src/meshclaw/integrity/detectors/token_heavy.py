"""``token_heavy``: tokens per accepted outcome far above peers doing the same work, burnt
in loops.

Catches: a person's tokens per accepted, durable outcome far above their peer group's
(robust z on the log scale) *and* a loop pattern that explains it: many more model
calls per run than peers, or the same prompt sent again within a run.

Why honest heavy use does not trip it: long-context research uses many tokens per
outcome, but its peers (same role) do similar work, and its tokens come from new
material: few calls per run, each with a different prompt. The detector never uses a
fixed token threshold and never flags tokens alone.

Evidence: tokens per accepted outcome vs the peers' median, model calls per run vs
the peers', share of repeated prompts, example runs with the most calls.
"""

from __future__ import annotations

import math

import polars as pl

from meshclaw.integrity._history import History
from meshclaw.integrity._stats import Finding, peer_z, strength
from meshclaw.integrity.detectors._common import r3, sample

NAME = "token_heavy"
Z = 2.0
LOOP_Z = 4.0
MIN_RUNS = 10


def detect(h: History) -> list[Finding]:
    good = (
        h.outcomes.filter(pl.col("accepted") & ~pl.col("undone"))
        .group_by("user")
        .agg(pl.len().alias("accepted"))
    )
    per = (
        h.runs.group_by("user")
        .agg(
            pl.len().alias("runs"),
            pl.col("tokens").sum(),
            (pl.col("llm_calls").sum() / pl.len()).alias("calls_per_run"),
            (1 - pl.col("distinct_prompts").sum() / pl.col("prompts").sum()).alias("repeat"),
            pl.col("run")
            .sort_by(["llm_calls", "run"], descending=[True, False])
            .head(5)
            .alias("examples"),
        )
        .join(good, on="user", how="left")
        .with_columns(
            ((pl.col("tokens") + 1).log() - (pl.col("accepted").fill_null(0) + 1).log()).alias(
                "log_tpo"
            )
        )
    )
    mp = h.config.min_peers
    tz = peer_z(h.users, per, "log_tpo", min_peers=mp, floor_abs=0.25)
    cz = peer_z(h.users, per, "calls_per_run", min_peers=mp, floor_abs=0.3, floor_rel=0.15)
    rz = peer_z(h.users, per, "repeat", min_peers=mp, fill=0.0, floor_abs=0.05)
    both = (
        tz.join(per.drop("log_tpo"), on="user")
        .join(cz.select("user", pl.col("z").alias("cz"), pl.col("peer_median").alias("cm")), "user")
        .join(rz.select("user", pl.col("z").alias("rz"), pl.col("peer_median").alias("rm")), "user")
        .filter(
            (pl.col("z") >= Z)
            & (pl.col("runs") >= MIN_RUNS)
            & ((pl.col("cz") >= LOOP_Z) | (pl.col("rz").fill_nan(0) >= LOOP_Z))
        )
    )  # fmt: skip
    return [
        Finding(
            detector=NAME,
            user=row["user"],
            strength=strength(row["z"], Z),
            evidence={
                "tokens": row["tokens"],
                "accepted_outcomes": row["accepted"] or 0,
                "tokens_per_accepted_outcome": round(math.exp(row["log_tpo"])),
                "peer_median_tokens_per_accepted_outcome": round(math.exp(row["peer_median"])),
                "robust_z": r3(row["z"]),
                "calls_per_run": r3(row["calls_per_run"]),
                "peer_median_calls_per_run": r3(row["cm"]),
                "repeated_prompt_share": r3(row["repeat"]),
                "peer_median_repeated_prompt_share": r3(row["rm"]),
                "example_runs": sample(row["examples"]),
            },
        )
        for row in both.iter_rows(named=True)
    ]
