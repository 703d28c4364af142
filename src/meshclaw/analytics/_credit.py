"""Outcome credit: which outcomes earn, and how much (the rules every board and report use).

An outcome *earns credit* when all of these hold:

1. it is ``verified`` (the connector produced evidence; the agent's claim is not enough);
2. its ``beneficiary`` is not its owner (``user``): outputs to oneself earn nothing;
3. at least one *person other than the owner* accepted it (``feedback`` with verdict
   ``accepted`` whose ``by`` is neither the owner nor ``system``; ``external`` counts);
4. nothing undid it since: no ``rejected``, ``reverted``, ``reopened``, ``rolled_back``
   or ``cancelled`` feedback (by anyone, ``system`` included) comes after the last such
   acceptance. Order is by ``ts``, then by line in the file.

It earns once: several acceptances do not add up, and outcomes of the same owner, type
and ``ref`` (the same ticket, the same document) earn once, at the highest ``value``.

**Points** (the leaderboard's score is the sum of a person's points)::

    points = type_weight(type) * value / sqrt(k)

where ``value`` is the outcome's ``value`` (1.0 when absent), ``type_weight`` is the
admin-set weight of its type (1.0 offline unless given) and ``k`` is its rank among the
same person's credited outcomes *of the same type in the same measurement week*,
highest value first (ties: earlier first). So n outcomes of one type in one week earn
about ``2 * sqrt(n)`` times one, not n times; splitting one task of value 1 into n parts
of value 1/n earns less than the task (about ``2 / sqrt(n)``), and even n parts at full
value earn only ``~2 * sqrt(n)``. Different outcome types and different weeks do not
discount each other, so steady, varied, real work keeps paying.

Weeks end at the measurement cut-off (``Cutoff``; the org default is Friday 17:00 UTC).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from meshclaw.analytics._load import Tables, tables_from_frame
from meshclaw.integrity.scope import Withholding
from meshclaw.outcomes._rules import NOT_A_PERSON as NOT_A_PERSON
from meshclaw.outcomes._rules import UNDOING as UNDOING

STATUSES = ("credited", "unverified", "self", "unaccepted", "undone", "duplicate")
"""An outcome's status: why it earns or does not."""

WEEK = timedelta(days=7)
_REF_FRIDAY = datetime(2024, 1, 5, tzinfo=UTC)
"""A Friday: weeks are counted from the cut-off on this day (any fixed one would do)."""


@dataclass(frozen=True, kw_only=True)
class Cutoff:
    """When a measurement week ends (an org setting; default Friday 17:00 UTC)."""

    weekday: int = 4
    """0 = Monday ... 6 = Sunday."""
    hour: int = 17
    """Hour of day, UTC."""

    def __post_init__(self) -> None:
        if not 0 <= self.weekday <= 6 or not 0 <= self.hour <= 23:
            raise ValueError("cut-off weekday must be 0-6 and hour 0-23")

    @property
    def reference(self) -> datetime:
        return _REF_FRIDAY + timedelta(days=self.weekday - 4, hours=self.hour)

    def week_expr(self, column: str = "ts") -> pl.Expr:
        """Week number of a time column: week w ends at ``week_end(w)``."""
        seconds = (pl.col(column) - pl.lit(self.reference)).dt.total_seconds()
        return (seconds // WEEK.total_seconds()).cast(pl.Int64) + 1

    def week_end(self, week: int) -> datetime:
        return self.reference + WEEK * week

    def label(self) -> str:
        day = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
        return f"{day[self.weekday]} {self.hour:02d}:00 UTC"


@dataclass(frozen=True, kw_only=True)
class CreditRules:
    """How outcomes become points."""

    weights: Mapping[str, float] = field(default_factory=dict)
    """Weight per outcome type (admin-set); types not listed weigh ``default_weight``."""
    default_weight: float = 1.0
    cutoff: Cutoff = field(default_factory=Cutoff)
    withheld: frozenset[Withholding] = frozenset()
    """The credit integrity findings concern (``integrity.scope``): outcomes an open or
    under-review finding covers are ``pending`` (shown as "pending review"), not score;
    those a confirmed finding covers are neither (``held`` says which)."""


@dataclass(kw_only=True)
class Credit:
    """Every outcome with its status and points, and feedback that matched no outcome."""

    outcomes: pl.DataFrame
    """One row per outcome: ``OUTCOME_COLUMNS`` plus ``accepted``, ``durable``,
    ``status`` (one of ``STATUSES``), ``week``, ``points`` (counted in the score),
    ``pending`` (withheld pending review) and ``held`` (``"pending_review"`` or
    ``"confirmed"`` when an integrity finding covers it, else null)."""
    unknown_feedback: pl.DataFrame
    """Feedback whose ``outcome`` is not in the history: ``line``, ``id``, ``outcome``."""
    cutoff: Cutoff = field(default_factory=Cutoff)
    """The measurement cut-off ``week`` is counted by."""


def compute_credit(
    source: Tables | pl.DataFrame | pl.LazyFrame, rules: CreditRules | None = None
) -> Credit:
    """Apply the credit rules to a history (``Tables``, or ``load_frame``-style events)."""
    rules = rules or CreditRules()
    tables = source if isinstance(source, Tables) else tables_from_frame(source)
    if tables.status is not None and tables.unknown is not None:
        status, unknown = tables.status, tables.unknown
    else:
        status, unknown = outcome_status(tables)
    table = _points(status.with_columns(rules.cutoff.week_expr().alias("week")), rules)
    out, unknown_df = pl.collect_all([table, unknown])
    return Credit(outcomes=out, unknown_feedback=unknown_df, cutoff=rules.cutoff)


def outcome_status(tables: Tables) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """The part of the rules no setting changes: every outcome with ``accepted``,
    ``durable`` and ``status``; and the feedback about unknown outcomes.

    The columnar cache stores both, so later commands only weigh, rank and sum.
    """
    outcomes = tables.outcomes.with_columns(
        pl.col("value").fill_null(1.0),
        pl.col("verified").fill_null(False),
    )
    feedback = tables.feedback.select(
        pl.col("id").alias("fb_id"),
        pl.col("line").alias("fb_line"),
        pl.col("ts").alias("fb_ts"),
        "outcome",
        "by",
        "verdict",
    )
    owners = outcomes.select(pl.col("id").alias("outcome"), pl.col("user").alias("owner"))
    accepting = (
        (pl.col("verdict") == "accepted")
        & ~pl.col("by").is_in(NOT_A_PERSON)
        & (pl.col("by") != pl.col("owner"))
    )
    undoing = pl.col("verdict").is_in(UNDOING)
    # Order of feedback: time, then line (one global sort). An outcome is durable when its
    # latest acceptance comes after its latest undo.
    per_outcome = (
        feedback.join(owners, on="outcome", how="inner")
        .sort("fb_ts", "fb_line")
        .with_row_index("_seq")
        .group_by("outcome")
        .agg(
            pl.col("_seq").filter(accepting).max().alias("_a"),
            pl.col("_seq").filter(undoing).max().alias("_u"),
        )
    )
    accepted = pl.col("_a").is_not_null()
    table = (
        outcomes.join(per_outcome, left_on="id", right_on="outcome", how="left")
        .with_columns(
            accepted.alias("accepted"),
            (pl.col("_u").is_null() | (accepted & (pl.col("_a") > pl.col("_u")))).alias("durable"),
        )
        .with_columns(
            pl.when(~pl.col("verified"))
            .then(pl.lit("unverified"))
            .when(pl.col("beneficiary") == pl.col("user"))
            .then(pl.lit("self"))
            .when(~pl.col("durable"))
            .then(pl.lit("undone"))
            .when(~pl.col("accepted"))
            .then(pl.lit("unaccepted"))
            .otherwise(pl.lit("credited"))
            .alias("status")
        )
        .drop("_a", "_u")
    )
    unknown = (
        feedback.join(owners, on="outcome", how="anti")
        .select(pl.col("fb_line").alias("line"), pl.col("fb_id").alias("id"), "outcome")
        .sort("line")
    )
    return _dedupe_refs(table), unknown


_BEST_FIRST = (["value", "ts", "id"], [True, False, False])
"""Order within a group: highest value, then earliest, then smallest id."""


def _dedupe_refs(table: pl.LazyFrame) -> pl.LazyFrame:
    """Credited outcomes of one owner, type and ref earn once, at the highest value."""
    credited = pl.col("status") == "credited"
    key = pl.struct("user", "type", "ref")
    # Repeated refs are rare: find them by hashing, and sort only those.
    losers = (
        table.filter(credited)
        .filter(key.is_duplicated())
        .sort(_BEST_FIRST[0], descending=_BEST_FIRST[1])
        .filter(~key.is_first_distinct())
        .select("id")
        .collect()
        .to_series()
    )
    return table.with_columns(
        pl.when(credited & pl.col("id").is_in(losers.implode()))
        .then(pl.lit("duplicate"))
        .otherwise(pl.col("status"))
        .alias("status")
    )


def _points(table: pl.LazyFrame, rules: CreditRules) -> pl.LazyFrame:
    """``weight * value / sqrt(k)``, k = rank in (person, type, week), highest value first.

    Ties in value may take their ranks in any order: the group's sum is the same.
    """
    credited = pl.col("status") == "credited"
    weight = pl.col("type").replace_strict(
        dict(rules.weights), default=rules.default_weight, return_dtype=pl.Float64
    )
    group = pl.struct("user", "type", "week", credited).hash()
    k = pl.col("value").rank("ordinal", descending=True).over(group).cast(pl.Float64)
    raw = pl.when(credited).then(weight * pl.col("value") / k.sqrt()).otherwise(0.0)
    held = pl.col("held").is_not_null()
    pending = pl.col("held") == "pending_review"
    return (
        _held(table, rules.withheld)
        .with_columns(raw.alias("_raw"))
        .with_columns(
            pl.when(held).then(0.0).otherwise(pl.col("_raw")).alias("points"),
            pl.when(pending).then(pl.col("_raw")).otherwise(0.0).alias("pending"),
        )
        .drop("_raw")
    )


_SCOPE_SCHEMA: dict[str, Any] = {
    "user": pl.String,
    "_outcome": pl.String,
    "_from": pl.Datetime("us", "UTC"),
    "_until": pl.Datetime("us", "UTC"),
    "_confirmed": pl.Boolean,
}


def _held(table: pl.LazyFrame, withheld: frozenset[Withholding]) -> pl.LazyFrame:
    """``held`` per outcome: ``"confirmed"`` when a confirmed finding covers it,
    ``"pending_review"`` when only open ones do, null when none does
    (``Withholding.covers``, as a join on the person)."""
    if not withheld:
        return table.with_columns(pl.lit(None, dtype=pl.String).alias("held"))
    rows = [
        (w.user, outcome, p.start if p else None, p.until if p else None, w.confirmed)
        for w in withheld
        for outcome in (sorted(w.outcomes) if w.outcomes is not None else [None])
        for p in (w.periods if w.periods is not None else [None])
    ]
    scopes = pl.LazyFrame(rows, schema=_SCOPE_SCHEMA, orient="row")
    covered = (
        table.select("id", "line", "user", "ts")
        .join(scopes, on="user", how="inner")
        .filter(
            (pl.col("_outcome").is_null() | (pl.col("_outcome") == pl.col("id")))
            & (pl.col("_from").is_null() | (pl.col("ts") >= pl.col("_from")))
            & (pl.col("_until").is_null() | (pl.col("ts") < pl.col("_until")))
        )
        .group_by("id", "line")
        .agg(
            pl.when(pl.col("_confirmed").any())
            .then(pl.lit("confirmed"))
            .otherwise(pl.lit("pending_review"))
            .alias("held")
        )
    )
    return table.join(
        covered, on=["id", "line"], how="left", nulls_equal=True, maintain_order="left"
    )
