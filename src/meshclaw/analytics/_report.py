"""The org report: honest adoption, cost per outcome, acceptance and durability.

- **Adoption**: a person is *active* in a week when at least one of their outcomes that
  week earned credit (verified, accepted by someone else, not undone): not "used AI".
  ``adoption_rate`` is active people over people seen that week (any event).
- **Cost per outcome**: model spend (``llm_call.cost_usd``) over credited outcomes.
  Tokens appear only as this cost, never as achievement.
- **Acceptance rate**: accepted outcomes over *eligible* ones (verified and for someone
  other than the owner). **Durability rate**: accepted outcomes not undone since, over
  accepted ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from meshclaw.analytics._credit import Credit, Cutoff
from meshclaw.analytics._load import Tables
from meshclaw.events import ReadReport

_NUMBERS = (
    "people", "active", "outcomes", "verified", "eligible", "accepted", "durable", "credited",
    "points",
    "pending", "cost_usd", "llm_calls", "calls_without_cost",
)  # fmt: skip


def _outcome_metrics() -> list[pl.Expr]:
    eligible = pl.col("verified") & (pl.col("beneficiary") != pl.col("user"))
    accepted = eligible & pl.col("accepted")
    return [
        pl.len().alias("outcomes"),
        pl.col("verified").sum().alias("verified"),
        eligible.sum().alias("eligible"),
        accepted.sum().alias("accepted"),
        (accepted & pl.col("durable")).sum().alias("durable"),
        (pl.col("status") == "credited").sum().alias("credited"),
        pl.col("points").sum().alias("points"),
        pl.col("pending").sum().alias("pending"),
        pl.col("user").filter(pl.col("status") == "credited").n_unique().alias("active"),
    ]


def _cost_metrics() -> list[pl.Expr]:
    return [
        pl.col("cost_usd").sum().alias("cost_usd"),
        pl.col("llm_calls").sum().alias("llm_calls"),
        pl.col("calls_without_cost").sum().alias("calls_without_cost"),
    ]


def _ratio(num: float, den: float) -> float | None:
    return round(num / den, 6) if den else None


def _finish(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = dict(row)
    for name in _NUMBERS:
        value = out.get(name)
        out[name] = 0 if value is None else value
    out["cost_usd"] = round(float(out["cost_usd"]), 6)
    out["points"] = round(float(out["points"]), 6)
    out["pending"] = round(float(out["pending"]), 6)
    out["acceptance_rate"] = _ratio(out["accepted"], out["eligible"])
    out["durability_rate"] = _ratio(out["durable"], out["accepted"])
    out["cost_per_outcome"] = _ratio(out["cost_usd"], out["credited"])
    return out


@dataclass(kw_only=True)
class Report:
    """What ``meshclaw report`` prints (``to_json`` is its ``--json``)."""

    read: ReadReport
    unknown_feedback: list[dict[str, Any]]
    cutoff: Cutoff
    start: str | None
    end: str | None
    totals: dict[str, Any]
    teams: list[dict[str, Any]] = field(default_factory=list)
    weeks: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "input": {
                "lines": self.read.lines,
                "events": self.read.events,
                "skipped": self.read.skipped,
                "problems": [{"line": p.line, "message": p.message} for p in self.read.problems],
                "unknown_feedback": self.unknown_feedback,
            },
            "period": {"start": self.start, "end": self.end, "cutoff": self.cutoff.label()},
            "totals": self.totals,
            "teams": self.teams,
            "weeks": self.weeks,
        }


def _iso(value: Any) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_report(tables: Tables, credit: Credit, read: ReadReport) -> Report:
    """Aggregate a history and its credit into the report."""
    cutoff = credit.cutoff
    outcomes = credit.outcomes.lazy()
    activity = tables.activity.with_columns(cutoff.week_expr("hour").alias("week"))

    by_team = (
        activity.group_by("team")
        .agg(pl.col("user").n_unique().alias("people"), *_cost_metrics())
        .join(outcomes.group_by("team").agg(_outcome_metrics()), on="team", how="left")
        .sort("team")
    )
    totals_q = pl.concat(
        [
            activity.select(pl.col("user").n_unique().alias("people"), *_cost_metrics()),
            outcomes.select(_outcome_metrics()),
        ],
        how="horizontal",
    )
    weekly = (
        activity.group_by("week")
        .agg(pl.col("user").n_unique().alias("people"), pl.col("cost_usd").sum())
        .join(
            outcomes.group_by("week").agg(
                pl.col("user").filter(pl.col("status") == "credited").n_unique().alias("active"),
                (pl.col("status") == "credited").sum().alias("credited"),
            ),
            on="week",
            how="left",
        )
        .sort("week")
    )
    team_weekly = (
        outcomes.filter(pl.col("status") == "credited")
        .group_by("week", "team")
        .agg(pl.col("user").n_unique().alias("active"))
        .sort("week", "team")
    )
    span = activity.select(pl.col("first_ts").min().alias("start"), pl.col("last_ts").max())
    teams_df, totals_df, weekly_df, team_weekly_df, span_df = pl.collect_all(
        [by_team, totals_q, weekly, team_weekly, span]
    )
    active_by_week: dict[int, dict[str, int]] = {}
    for row in team_weekly_df.iter_rows(named=True):
        active_by_week.setdefault(row["week"], {})[row["team"]] = row["active"]
    weeks = []
    for row in weekly_df.iter_rows(named=True):
        active = row["active"] or 0
        weeks.append(
            {
                "week_ending": _iso(cutoff.week_end(row["week"])),
                "people": row["people"],
                "active": active,
                "adoption_rate": _ratio(active, row["people"]),
                "credited": row["credited"] or 0,
                "cost_usd": round(float(row["cost_usd"] or 0.0), 6),
                "cost_per_outcome": _ratio(float(row["cost_usd"] or 0.0), row["credited"] or 0),
                "active_by_team": active_by_week.get(row["week"], {}),
            }
        )
    start, end = span_df.row(0) if span_df.height else (None, None)
    unknown = [
        {"line": line, "id": ident, "outcome": outcome}
        for line, ident, outcome in credit.unknown_feedback.iter_rows()
    ]
    return Report(
        read=read,
        unknown_feedback=unknown,
        cutoff=cutoff,
        start=_iso(start),
        end=_iso(end),
        totals=_finish(totals_df.row(0, named=True)) if totals_df.height else {},
        teams=[_finish(row) for row in teams_df.iter_rows(named=True)],
        weeks=weeks,
    )
