"""``self_addressed``: outputs whose only beneficiary or recipient is their author.

Catches: outcomes with the author as beneficiary, and writes (mails, invites,
documents) whose only recipient is the author; their share far above the peers'.
Such outcomes never earn credit, but a share like this is a pattern to review.

Why honest heavy use does not trip it: people do send themselves a note now and then;
the detector needs both a count and a share well above the peer group's, and volume
of work for others never counts against anyone.

Evidence: self-addressed outcomes and writes, share of all outcomes, self-acceptances,
peers' median share, example outcome ids.
"""

from __future__ import annotations

import polars as pl

from meshclaw.integrity._history import History
from meshclaw.integrity._stats import Finding, peer_z, strength
from meshclaw.integrity.detectors._common import r3, sample

NAME = "self_addressed"
Z = 4.0
MIN_COUNT = 5


def detect(h: History) -> list[Finding]:
    o = h.outcomes.with_columns((pl.col("beneficiary") == pl.col("user")).alias("self"))
    per = o.group_by("user").agg(
        pl.len().alias("outcomes"),
        pl.col("self").sum().alias("self_outcomes"),
        pl.col("self").mean().alias("share"),
        pl.col("self_accepted").sum().alias("self_accepted"),
        pl.col("id").filter(pl.col("self")).alias("ids"),
    )
    w = h.writes
    self_writes = (
        w.filter(pl.col("recipients").list.len() > 0)
        .explode("recipients")
        .group_by("id", "user")
        .agg((pl.col("recipients") == pl.col("user")).all().alias("only_self"))
        .filter(pl.col("only_self"))
        .group_by("user")
        .agg(pl.len().alias("self_writes"))
    )
    z = peer_z(h.users, per, "share", min_peers=h.config.min_peers, floor_abs=0.05)
    hits = (
        z.join(per.drop("share"), on="user")
        .join(self_writes, on="user", how="left")
        .filter((pl.col("z") >= Z) & (pl.col("self_outcomes") >= MIN_COUNT))
    )
    return [
        Finding(
            detector=NAME,
            user=row["user"],
            strength=strength(row["z"], Z),
            evidence={
                "outcomes": row["outcomes"],
                "self_addressed_outcomes": row["self_outcomes"],
                "share": r3(row["share"]),
                "peer_median_share": r3(row["peer_median"]),
                "robust_z": r3(row["z"]),
                "self_accepted": row["self_accepted"],
                "writes_only_to_self": row["self_writes"] or 0,
                "example_outcomes": sample(row["ids"]),
            },
        )
        for row in hits.iter_rows(named=True)
    ]
