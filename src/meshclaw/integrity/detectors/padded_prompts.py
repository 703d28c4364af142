"""``padded_prompts``: prompts inflated with boilerplate that carries little information.

Catches: a person's prompts have far lower information density than their peers'
prompts, over many calls. Needs prompt texts or their features; histories without
prompts are skipped.

Density is Herdan's C, log(distinct words) / log(words), of a run's average prompt: the
plain share of distinct words falls as any text grows (Heaps' law), so it would read
long, honest instructions as padding; the log ratio stays level with length and still
drops when the same words come back again and again.

Why honest heavy use does not trip it: long-context research sends long prompts, but
long because of real material: its density stays at the peers' level. The signal is
density, never length or token count.

Evidence: calls with prompts, the person's density vs the peers' median, input tokens
per call vs the peers', example runs.
"""

from __future__ import annotations

import polars as pl

from meshclaw.integrity._history import History
from meshclaw.integrity._stats import Finding, peer_z, strength
from meshclaw.integrity.detectors._common import r3, sample

NAME = "padded_prompts"
Z = 4.0
MIN_PROMPTS = 20


def _herdan() -> pl.Expr:
    """Herdan's C of a run's average prompt; 1.0 for prompts of one word (nothing repeats)."""
    words = pl.col("prompt_words") / pl.col("prompts")
    unique = pl.col("prompt_unique") / pl.col("prompts")
    return pl.when(words > 1).then(unique.log() / words.log()).otherwise(1.0)


def detect(h: History) -> list[Finding]:
    runs = h.runs.filter(pl.col("prompts") > 0).with_columns(_herdan().alias("herdan"))
    if runs.height == 0:
        return []
    per = runs.group_by("user").agg(
        pl.col("prompts").sum(),
        ((pl.col("herdan") * pl.col("prompts")).sum() / pl.col("prompts").sum()).alias("density"),
        (pl.col("input_tokens").sum() / pl.col("llm_calls").sum()).alias("tokens_per_call"),
        pl.col("run")
        .sort_by(["prompt_words", "run"], descending=[True, False])
        .head(5)
        .alias("examples"),
    )
    per = per.with_columns((-pl.col("density")).alias("sparsity"))
    z = peer_z(h.users, per, "sparsity", min_peers=h.config.min_peers, fill=-1.0, floor_abs=0.04)
    tok = peer_z(h.users, per, "tokens_per_call", min_peers=h.config.min_peers, floor_rel=0.2)
    hits = (
        z.join(per.drop("sparsity"), on="user")
        .join(tok.select("user", pl.col("peer_median").alias("tok_median")), on="user")
        .filter((pl.col("z") >= Z) & (pl.col("prompts") >= MIN_PROMPTS))
    )
    return [
        Finding(
            detector=NAME,
            user=row["user"],
            strength=strength(row["z"], Z),
            evidence={
                "calls_with_prompt": row["prompts"],
                "density": r3(row["density"]),
                "peer_median_density": r3(-row["peer_median"]),
                "robust_z": r3(row["z"]),
                "input_tokens_per_call": r3(row["tokens_per_call"]),
                "peer_median_input_tokens_per_call": r3(row["tok_median"]),
                "example_runs": sample(row["examples"]),
            },
        )
        for row in hits.iter_rows(named=True)
    ]
