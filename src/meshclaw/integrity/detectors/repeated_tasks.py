"""``repeated_tasks``: the same or a paraphrased task run again and again, to no effect.

Catches: clusters of a person's runs whose task texts are near-duplicates (MinHash
estimate of word-set Jaccard >= ``SIMILAR``) and that mostly produced no outcome; the
number of runs in such clusters far above the peers'. Works on fingerprints only.

Why honest heavy use does not trip it: scheduled automation repeats the *same* task by
design but delivers an outcome nearly every time, and a manager's triage runs share a
template but each concerns a different ticket and ends in an assignment; only clusters
whose runs mostly end with nothing count. Template tasks with different subjects (a
repo, a customer) fall under the similarity threshold.

Evidence: per cluster its size, share with an outcome, first and last time, and
example run ids; the person's total vs the peers' median.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import polars as pl

from meshclaw.integrity._history import History
from meshclaw.integrity._stats import Finding, strength
from meshclaw.integrity.detectors._common import iso, outlying_groups, r3, run_groups, sample

NAME = "repeated_tasks"
SIMILAR = 0.6
MIN_CLUSTER = 5
MAX_OUTCOME_SHARE = 0.25
MIN_DAYS = 3
"""A cluster must recur on this many distinct days: working one problem hard for a day or
two (an incident) is not repetition."""
WINDOW = 256
"""Each run is compared with the person's previous ``WINDOW`` runs."""
Z = 4.0
MIN_RUNS = 10


def _clusters(sigs: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Connected components of the near-duplicate graph; a label (min index) per row.

    Each run is compared with the previous ``WINDOW`` runs; the components come from
    min-label propagation with pointer jumping, all in NumPy.
    """
    n = sigs.shape[0]
    need = math.ceil(SIMILAR * sigs.shape[1])
    columns = np.ascontiguousarray(sigs.T)  # one row per signature position
    heads: list[np.ndarray[Any, Any]] = []
    tails: list[np.ndarray[Any, Any]] = []
    for start in range(0, n, WINDOW):
        stop = min(n, start + WINDOW)
        lo = max(0, start - WINDOW)
        # Equal positions of every (run, earlier run) pair, one position at a time: 2-D
        # comparisons that NumPy vectorises, instead of a 3-D array summed on its short axis.
        equal = np.zeros((stop - start, stop - lo), dtype=np.uint8)
        same = np.empty(equal.shape, dtype=np.bool_)
        for values in columns:
            np.equal(values[start:stop, None], values[None, lo:stop], out=same)
            equal += same
        ii, jj = np.nonzero(equal >= need)
        ii, jj = ii + start, jj + lo
        keep = jj < ii
        heads.append(ii[keep])
        tails.append(jj[keep])
    labels = np.arange(n)
    if not heads:
        return labels
    a, b = np.concatenate(heads), np.concatenate(tails)
    while True:
        nxt = labels.copy()
        np.minimum.at(nxt, a, labels[b])
        np.minimum.at(nxt, b, labels[a])
        nxt = nxt[nxt]  # pointer jumping: follow labels to their own labels
        if np.array_equal(nxt, labels):
            return labels
        labels = nxt


def detect(h: History) -> list[Finding]:
    runs = h.runs.filter(pl.col("task_minhash").is_not_null()).sort("user", "ts", "run")
    if runs.height == 0:
        return []
    sigs = runs["task_minhash"].to_numpy()
    users = runs["user"].to_numpy()
    bounds = (np.flatnonzero(users[1:] != users[:-1]) + 1).tolist()
    spans = list(zip([0, *bounds], [*bounds, runs.height], strict=True))
    roots = np.empty(runs.height, dtype=np.int64)

    def cluster(part: list[tuple[int, int]]) -> None:
        for lo, hi in part:
            roots[lo:hi] = _clusters(sigs[lo:hi]) + lo

    # People are independent and NumPy releases the GIL: both halves at once.
    half = len(spans) // 2
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(cluster, [spans[:half], spans[half:]]))
    clusters = run_groups(
        runs.select("user", "run", "ts", "outcomes").with_columns(pl.Series("c", roots)),
        "c",
        pl.col("ts").dt.date().n_unique().alias("days"),
    ).filter(
        (pl.col("runs") >= MIN_CLUSTER)
        & (pl.col("outcome_share") <= MAX_OUTCOME_SHARE)
        & (pl.col("days") >= MIN_DAYS)
    )
    findings = []
    for row, mine in outlying_groups(
        h,
        clusters,
        "repeats",
        z=Z,
        min_runs=MIN_RUNS,
        order=["runs", "first", "c"],
        descending=[True, False, False],
    ):
        findings.append(
            Finding(
                detector=NAME,
                user=row["user"],
                strength=strength(row["z"], Z),
                evidence={
                    "repeated_runs_without_outcome": int(row["repeats"]),
                    "peer_median": r3(row["peer_median"]),
                    "robust_z": r3(row["z"]),
                    "similarity_threshold": SIMILAR,
                    "clusters": [
                        {
                            "runs": r["runs"],
                            "days": r["days"],
                            "share_with_outcome": r3(r["outcome_share"]),
                            "first": iso(r["first"]),
                            "last": iso(r["last"]),
                            "example_runs": sample(r["run"]),
                        }
                        for r in mine
                    ],
                },
            )
        )
    return findings
