"""Robust peer statistics: median and MAD within a person's peer group.

A person's peers are the people with the same team and role when there are at least
``ScanConfig.min_peers`` of them, else everyone with the same role, else the whole org.
The robust z-score is ``(x - median) / scale`` with ``scale = 1.4826 * MAD``, floored so
that a group where nearly everyone scores the same (MAD = 0) cannot turn a tiny
difference into a huge z.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

MAD_TO_SD = 1.4826


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One detector's conclusion about one person, with evidence a reviewer can check."""

    detector: str
    user: str
    strength: float
    """How strongly the evidence points at gaming, in [0.5, 1]."""
    evidence: dict[str, Any]


def strength(z: float, threshold: float) -> float:
    """Map a statistic past its threshold to [0.5, 1]: at the threshold 0.5, at 2x it 1."""
    if threshold <= 0:
        return 1.0
    return round(max(0.5, min(1.0, 0.5 + 0.5 * (z - threshold) / threshold)), 3)


def peer_z(
    users: pl.DataFrame,
    values: pl.DataFrame,
    column: str,
    *,
    min_peers: int = 5,
    fill: float = 0.0,
    floor_abs: float = 0.0,
    floor_rel: float = 0.0,
    stderr: str | None = None,
) -> pl.DataFrame:
    """Robust z of ``values[column]`` against each person's peers.

    ``users`` has ``user``, ``team``, ``role``; ``values`` has ``user`` and ``column``
    (people missing from it get ``fill``). The location is the median of the person's
    peer group (team+role, else role, else org). The scale is pooled over the whole role
    (1.4826 x the median absolute deviation of everyone's value from *their own* group's
    median): a team of six is enough to say what is normal there, not how much people
    normally vary. ``stderr`` names a column of the person's own sampling error (e.g. a
    rate's binomial error); the scale is never below it. Returns ``user``, the value,
    ``peer_median``, ``peer_scale``, ``peers`` (group size) and ``z``.
    """
    x = pl.col(column)
    keep = ["user", column] + ([stderr] if stderr else [])
    df = users.select("user", "team", "role").join(values.select(keep), on="user", how="left")
    df = df.with_columns(x.fill_null(fill).cast(pl.Float64))
    df = df.with_columns(
        x.median().over("team", "role").alias("_mtr"),
        pl.len().over("team", "role").alias("_ntr"),
        x.median().over("role").alias("_mr"),
        pl.len().over("role").alias("_nr"),
        x.median().alias("_mg"),
        pl.len().alias("_ng"),
    )
    use_tr = pl.col("_ntr") >= min_peers
    use_r = pl.col("_nr") >= min_peers
    med = pl.when(use_tr).then("_mtr").when(use_r).then("_mr").otherwise("_mg")
    size = pl.when(use_tr).then("_ntr").when(use_r).then("_nr").otherwise("_ng")
    df = df.with_columns(med.alias("peer_median"), size.alias("peers"))
    resid = (x - pl.col("peer_median")).abs()
    mad = pl.when(use_r).then(resid.median().over("role")).otherwise(resid.median())
    floors = [mad * MAD_TO_SD, pl.lit(floor_abs), pl.col("peer_median").abs() * floor_rel]
    if stderr:
        floors.append(pl.col(stderr).fill_null(0.0))
    df = df.with_columns(pl.max_horizontal(*floors, pl.lit(1e-9)).alias("peer_scale")).with_columns(
        ((x - pl.col("peer_median")) / pl.col("peer_scale")).alias("z")
    )
    return df.select("user", column, "peer_median", "peer_scale", "peers", "z")
