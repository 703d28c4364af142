"""Small helpers shared by the detectors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from meshclaw.integrity._stats import peer_z

if TYPE_CHECKING:
    from meshclaw.integrity._history import History

SAMPLE = 5
"""Example ids per finding: enough for a reviewer to open, few enough to read."""


def sample(values: Any, n: int = SAMPLE) -> list[Any]:
    items = values.to_list() if isinstance(values, pl.Series) else list(values)
    return sorted(items)[:n]


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def r3(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def week_labels(history: Any, weeks: list[int]) -> list[str | None]:
    """Weeks named by the measurement cut-off that ends them."""
    return [iso(history.cutoff_of_week(w)) for w in weeks]


def run_groups(runs: pl.DataFrame, by: str, *extra: pl.Expr) -> pl.DataFrame:
    """Each person's runs grouped by ``by`` (an agent, a cluster of tasks): ``runs`` (how
    many), ``outcome_share`` (share that produced an outcome), ``first`` and ``last``
    time, the ``run`` ids, and any ``extra`` aggregations."""
    return runs.group_by("user", by).agg(
        pl.len().alias("runs"),
        (pl.col("outcomes") > 0).mean().alias("outcome_share"),
        pl.col("ts").min().alias("first"),
        pl.col("ts").max().alias("last"),
        *extra,
        pl.col("run"),
    )


def outlying_groups(
    h: History,
    groups: pl.DataFrame,
    total: str,
    *,
    z: float,
    min_runs: int,
    order: list[str],
    descending: list[bool],
    top: int = 3,
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """The people whose runs in ``groups`` (from ``run_groups``, already filtered to the
    suspect ones), summed as ``total``, stand out from their peers' (robust z >= ``z``)
    and reach ``min_runs``: each one's ``peer_z`` row with their ``top`` groups in
    ``order``."""
    values = groups.group_by("user").agg(pl.col("runs").sum().alias(total))
    scored = peer_z(h.users, values, total, min_peers=h.config.min_peers, floor_abs=3.0)
    for row in scored.filter((pl.col("z") >= z) & (pl.col(total) >= min_runs)).iter_rows(
        named=True
    ):
        mine = groups.filter(pl.col("user") == row["user"]).sort(order, descending=descending)
        yield row, list(mine.head(top).iter_rows(named=True))
