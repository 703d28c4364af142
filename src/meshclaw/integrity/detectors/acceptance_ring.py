"""``acceptance_ring``: a small group accepting each other's outcomes.

Catches: groups of people in which acceptance flows around in a circle (a strongly
connected component of the "accepted the outcomes of" graph: A accepts B's, B accepts
C's, C accepts A's, or simply two people accepting each other's) where every link is a
*rubber stamp*: at least ``MIN_EDGE`` acceptances whose median time from delivery to
acceptance is under ``FAST``, or of which at least ``UNVERIFIED`` could not be verified
by their connector (far above the org's rate, binomial z >= ``UNVERIFIED_Z``).
Everyone in a group is reported with the whole group.

Why honest heavy use does not trip it: teammates accept each other's work all the
time, but after reading it (hours, not minutes) and on verified outcomes; busy people
get more acceptances, from many colleagues, which forms no rubber-stamp circle.

Evidence: the group's members and each link with its acceptances, median minutes to
accept and unverified share.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from meshclaw.integrity._history import History
from meshclaw.integrity._stats import Finding, strength
from meshclaw.integrity.detectors._common import r3

NAME = "acceptance_ring"
FAST = timedelta(minutes=30)
MIN_EDGE = 4
UNVERIFIED = 0.5
UNVERIFIED_Z = 4.0


def _components(edges: list[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components with two or more members (Kosaraju, iterative)."""
    out: dict[str, list[str]] = {}
    back: dict[str, list[str]] = {}
    for a, b in edges:
        out.setdefault(a, []).append(b)
        back.setdefault(b, []).append(a)
        out.setdefault(b, [])
        back.setdefault(a, [])
    order: list[str] = []
    seen: set[str] = set()
    for root in sorted(out):
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(out[root]))]
        while stack:
            node, it = stack[-1]
            nxt = next((n for n in it if n not in seen), None)
            if nxt is None:
                order.append(node)
                stack.pop()
            else:
                seen.add(nxt)
                stack.append((nxt, iter(out[nxt])))
    assigned: set[str] = set()
    groups = []
    for root in reversed(order):
        if root in assigned:
            continue
        group, todo = [], [root]
        assigned.add(root)
        while todo:
            node = todo.pop()
            group.append(node)
            for n in back[node]:
                if n not in assigned:
                    assigned.add(n)
                    todo.append(n)
        if len(group) >= 2:
            groups.append(sorted(group))
    return groups


def detect(h: History) -> list[Finding]:
    acc = (
        h.outcomes.filter(pl.col("accepters").list.len() > 0)
        .explode("accepters")
        .rename({"accepters": "by"})
        .filter(pl.col("by") != pl.col("user"))
        .with_columns(
            ((pl.col("accepted_at") - pl.col("ts")).dt.total_seconds() / 60).alias("minutes")
        )
    )
    if acc.height == 0:
        return []
    base = float(acc.select((~pl.col("verified")).cast(pl.Float64).mean()).item() or 0.0)
    spread = max(base * (1 - base), 1e-3)
    edges = (
        acc.group_by("by", "user")
        .agg(
            pl.len().alias("n"),
            pl.col("minutes").median().alias("minutes"),
            (~pl.col("verified")).sum().alias("unverified_n"),
        )
        .with_columns((pl.col("unverified_n") / pl.col("n")).alias("unverified"))
        .with_columns(
            ((pl.col("unverified_n") - pl.col("n") * base) / (pl.col("n") * spread).sqrt()).alias(
                "uz"
            )
        )
        .filter(
            (pl.col("n") >= MIN_EDGE)
            & (
                (pl.col("minutes") <= FAST.total_seconds() / 60)
                | ((pl.col("unverified") >= UNVERIFIED) & (pl.col("uz") >= UNVERIFIED_Z))
            )
        )
    )
    groups = _components([(a, b) for a, b in edges.select("by", "user").iter_rows()])
    findings = []
    for members in groups:
        inside = edges.filter(pl.col("by").is_in(members) & pl.col("user").is_in(members))
        links = [
            {
                "accepter": r["by"],
                "owner": r["user"],
                "accepted": r["n"],
                "median_minutes_to_accept": r3(r["minutes"]),
                "unverified_share": r3(r["unverified"]),
            }
            for r in inside.sort("by", "user").iter_rows(named=True)
        ]
        for person in members:
            received = inside.filter(pl.col("user") == person)["n"].sum()
            findings.append(
                Finding(
                    detector=NAME,
                    user=person,
                    strength=strength(float(received), float(MIN_EDGE)),
                    evidence={"group": members, "links": links, "fast_minutes": 30},
                )
            )
    return findings
