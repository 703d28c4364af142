"""Leaderboards: people (or teams) ranked by accepted, durable outcome points.

The score is the sum of ``points`` (``analytics._credit``); credit an open integrity
finding concerns is ``pending`` and not in the score, and credit a confirmed finding
concerns is in neither (``integrity.scope``). Only people with credit (scored
or pending) appear. Ties are broken by id so the order is stable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

from meshclaw.analytics._credit import Credit

By = Literal["user", "team"]


@dataclass(frozen=True, kw_only=True)
class Entry:
    rank: int
    """1 for the highest score; consecutive."""
    id: str
    """A user id, or a team id on a team board."""
    score: float
    pending: float
    """Points withheld pending integrity review (an open or under-review finding)."""
    outcomes: int
    """Credited outcomes behind the score (pending ones included; those a confirmed
    finding holds back are not)."""


@dataclass(kw_only=True)
class Leaderboard:
    by: By
    entries: list[Entry]

    def to_json(self) -> dict[str, Any]:
        """Exactly ``{"entries": [{"rank": 1, "user": "<id>", "score": <float>}, ...]}``
        (``"team"`` instead of ``"user"`` on a team board)."""
        return {
            "entries": [{"rank": e.rank, self.by: e.id, "score": e.score} for e in self.entries]
        }


def leaderboard(credit: Credit, *, top: int | None = None, by: By = "user") -> Leaderboard:
    """Rank ``by`` people or teams; ``top`` keeps the first N."""
    if top is not None and top < 0:
        raise ValueError("top must be >= 0")
    table = (
        credit.outcomes.lazy()
        # A confirmed finding's credit is neither score nor pending: not behind the row.
        .filter((pl.col("status") == "credited") & (pl.col("held") != "confirmed").fill_null(True))
        .group_by(by)
        .agg(
            pl.col("points").sum().alias("score"),
            pl.col("pending").sum().alias("pending"),
            pl.len().alias("outcomes"),
        )
        .filter((pl.col("score") > 0) | (pl.col("pending") > 0))
        # Ranked on the score as printed: float sums in another order differ in the last
        # bits, which must not swap two people whose printed scores are equal.
        .with_columns(pl.col("score").round(6), pl.col("pending").round(6))
        .sort(["score", by], descending=[True, False])
    )
    if top is not None:
        table = table.head(top)
    rows = table.collect().iter_rows(named=True)
    entries = [
        Entry(
            rank=i,
            id=row[by],
            score=round(float(row["score"]), 6),
            pending=round(float(row["pending"]), 6),
            outcomes=int(row["outcomes"]),
        )
        for i, row in enumerate(rows, start=1)
    ]
    return Leaderboard(by=by, entries=entries)
