"""``agent_churn``: many agents created, run once or twice, and abandoned.

Catches: agents that first appear inside the history (not at its start), are used for
at most ``MAX_RUNS`` runs over at most ``MAX_LIFE``, and are not seen again for at
least ``ABANDONED`` before the history ends; their number far above the peers'.
Agents have no lifecycle events: an agent lives from its first to its last appearance.

Why honest heavy use does not trip it: trying out an agent or two is normal, and a new
hire sets up a handful that they then keep using; heavy users run *more* with the
agents they have, which never counts.

Evidence: throwaway agents with their runs and first/last use; peers' median.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from meshclaw.integrity._history import History
from meshclaw.integrity._stats import Finding, peer_z, strength
from meshclaw.integrity.detectors._common import iso, r3

NAME = "agent_churn"
MAX_RUNS = 3
MAX_LIFE = timedelta(days=2)
ABANDONED = timedelta(days=3)
Z = 4.0
MIN_AGENTS = 5


def detect(h: History) -> list[Finding]:
    agents = h.runs.group_by("user", "agent").agg(
        pl.len().alias("runs"),
        pl.col("ts").min().alias("first"),
        pl.col("ts").max().alias("last"),
        (pl.col("outcomes") > 0).sum().alias("with_outcome"),
    )
    throwaway = agents.filter(
        (pl.col("runs") <= MAX_RUNS)
        & (pl.col("last") - pl.col("first") <= MAX_LIFE)
        & (pl.col("first") >= h.start + timedelta(days=1))
        & (pl.col("last") <= h.end - ABANDONED)
    )
    per = throwaway.group_by("user").agg(pl.len().alias("throwaway"))
    z = peer_z(h.users, per, "throwaway", min_peers=h.config.min_peers, floor_abs=1.0)
    findings = []
    hits = z.filter((pl.col("z") >= Z) & (pl.col("throwaway") >= MIN_AGENTS))
    for row in hits.iter_rows(named=True):
        mine = throwaway.filter(pl.col("user") == row["user"]).sort("first", "agent")
        total = agents.filter(pl.col("user") == row["user"]).height
        findings.append(
            Finding(
                detector=NAME,
                user=row["user"],
                strength=strength(row["z"], Z),
                evidence={
                    "agents_seen": total,
                    "throwaway_agents": int(row["throwaway"]),
                    "peer_median": r3(row["peer_median"]),
                    "robust_z": r3(row["z"]),
                    "agents": [
                        {
                            "agent": a["agent"],
                            "runs": a["runs"],
                            "runs_with_outcome": a["with_outcome"],
                            "first": iso(a["first"]),
                            "last": iso(a["last"]),
                        }
                        for a in mine.head(8).iter_rows(named=True)
                    ],
                },
            )
        )
    return findings
