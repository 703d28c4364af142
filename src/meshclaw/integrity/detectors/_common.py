"""Small helpers shared by the detectors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import polars as pl

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
