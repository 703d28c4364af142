"""A history prepared for the detectors: per-run, per-outcome and per-person tables.

Built once from ``events.load_frame``'s columns; every detector reads these tables and
never the raw events. Partial histories are fine: a run without its ``run`` event is
reconstructed from its calls, an outcome without feedback simply has none, and the
order of lines does not matter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import polars as pl

from meshclaw.events import UNDOING_VERDICTS

WEEK = timedelta(days=7)
_REF_CUTOFF = datetime(2024, 1, 5, 17, 0, tzinfo=UTC)
"""A Friday 17:00 UTC: weeks are numbered by the measurement cut-offs they end at."""


@dataclass(frozen=True, kw_only=True)
class ScanConfig:
    cutoff_weekday: int = 4
    """Weekday of the measurement cut-off (0 = Monday); the org default is Friday."""
    cutoff_hour: int = 17
    threshold: float = 0.5
    """A person is flagged when their combined score reaches this."""
    min_peers: int = 5
    """Smallest peer group used; smaller team+role groups fall back to role, then org."""


@dataclass(kw_only=True)
class History:
    runs: pl.DataFrame
    """One row per run: who, when, trigger, task fingerprint, calls, tokens, reads,
    writes, outcomes."""
    outcomes: pl.DataFrame
    """One row per outcome with its feedback folded in."""
    users: pl.DataFrame
    """One row per person: team, role, first and last event, peer group."""
    reads: pl.DataFrame
    """Read tool calls: user, run, target, ts."""
    writes: pl.DataFrame
    """Write tool calls: user, run, target, recipients."""
    start: datetime
    end: datetime
    config: ScanConfig = field(default_factory=ScanConfig)

    def week_expr(self, column: str = "ts") -> pl.Expr:
        """Week number of a time column: weeks end at the measurement cut-off."""
        ref = _REF_CUTOFF + timedelta(
            days=self.config.cutoff_weekday - 4, hours=self.config.cutoff_hour - 17
        )
        return ((pl.col(column) - pl.lit(ref)).dt.total_seconds() // WEEK.total_seconds()).cast(
            pl.Int64
        )

    def cutoff_of_week(self, week: int) -> datetime:
        ref = _REF_CUTOFF + timedelta(
            days=self.config.cutoff_weekday - 4, hours=self.config.cutoff_hour - 17
        )
        return ref + WEEK * (week + 1)


_COUNTS = (
    "llm_calls", "input_tokens", "tokens", "prompt_words", "prompt_unique", "prompts",
    "distinct_prompts", "reads", "writes", "outcomes",
)  # fmt: skip


HISTORY_COLUMNS = (
    "line", "id", "kind", "ts", "team", "user", "agent", "run", "trigger", "status", "role",
    "task_minhash", "ended_at", "input_tokens", "output_tokens", "prompt_words",
    "prompt_unique", "prompt_hash", "action", "target", "recipients", "type", "ref",
    "beneficiary", "verified", "value", "outcome", "by", "verdict",
)  # fmt: skip
"""The columns of ``events.load_frame`` a ``HistoryBuilder`` reads."""
_PARTS = (
    "skeleton", "run_events", "llm", "tools", "reads", "writes", "outcomes", "feedback",
    "people",
)  # fmt: skip


def reduce_block(block: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """One block folded into the builder's parts (pure: safe on the reading threads)."""
    kind = pl.col("kind")
    lf = block.lazy()
    tools = lf.filter(kind == "tool_call")
    plans = {
        "skeleton": lf.filter(pl.col("run").is_not_null() & (kind != "feedback"))
        .group_by("run")
        .agg(
            pl.col("user").first(),
            pl.col("team").first(),
            pl.col("agent").first(),
            pl.col("ts").min().alias("first_ts"),
            pl.col("ts").max().alias("last_ts"),
        ),
        "run_events": lf.filter(kind == "run").select(
            "run",
            "trigger",
            "status",
            "role",
            "task_minhash",
            pl.col("ts").alias("run_ts"),
            "ended_at",
        ),
        "llm": lf.filter(kind == "llm_call")
        .group_by("run")
        .agg(
            pl.len().alias("llm_calls"),
            pl.col("input_tokens").sum().alias("input_tokens"),
            (pl.col("input_tokens") + pl.col("output_tokens")).sum().alias("tokens"),
            pl.col("prompt_words").sum().alias("prompt_words"),
            pl.col("prompt_unique").sum().alias("prompt_unique"),
            pl.col("prompt_hash").drop_nulls().len().alias("prompts"),
            pl.col("prompt_hash").drop_nulls().n_unique().alias("distinct_prompts"),
        ),
        "tools": tools.group_by("run").agg(
            (pl.col("action") == "read").sum().alias("reads"),
            (pl.col("action") == "write").sum().alias("writes"),
        ),
        "reads": tools.filter(pl.col("action") == "read").select("user", "run", "target", "ts"),
        "writes": tools.filter(pl.col("action") == "write").select(
            "id", "user", "run", "target", "recipients", "ts"
        ),
        "outcomes": lf.filter(kind == "outcome").select(
            "id",
            "run",
            "user",
            "team",
            "agent",
            "type",
            "ref",
            "beneficiary",
            "verified",
            pl.col("value").fill_null(1.0),
            "ts",
        ),
        "feedback": lf.filter(kind == "feedback").select(
            "id",
            pl.col("outcome").alias("outcome_id"),
            "by",
            "verdict",
            pl.col("ts").alias("fb_ts"),
        ),
        "people": lf.group_by("user", "team").agg(
            pl.len().alias("n"),
            pl.col("ts").min().alias("first_ts"),
            pl.col("ts").max().alias("last_ts"),
        ),
    }
    return dict(zip(plans, pl.collect_all(list(plans.values())), strict=True))


class HistoryBuilder:
    """Reduces a history block by block (``events.map_frames``) into a ``History``.

    Model and tool calls, the bulk of any history, are folded into per-run counts as
    each block arrives (``reduce_block``, which may run on the reading threads), so
    memory grows with runs, outcomes and reads, not with calls. A run whose calls
    straddle two blocks is summed across them; ``distinct_prompts`` is then counted per
    block (a repeat that straddles a block boundary counts twice).
    """

    def __init__(self, config: ScanConfig | None = None) -> None:
        self.config = config or ScanConfig()
        self._parts: dict[str, list[pl.DataFrame]] = {k: [] for k in _PARTS}

    def add(self, block: pl.DataFrame) -> None:
        self.add_reduced(reduce_block(block))

    def add_reduced(self, parts: dict[str, pl.DataFrame]) -> None:
        """Add a block already folded by ``reduce_block``."""
        for name in _PARTS:
            self._parts[name].append(parts[name])

    def _all(self, name: str) -> pl.DataFrame:
        frames = self._parts[name]
        return pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]

    def finish(self) -> History:
        if not self._parts["people"]:
            raise ValueError("HistoryBuilder.finish() before any block was added")
        skeleton = (
            self._all("skeleton")
            .group_by("run")
            .agg(
                pl.col("user").first(),
                pl.col("team").first(),
                pl.col("agent").first(),
                pl.col("first_ts").min(),
                pl.col("last_ts").max(),
            )
        )
        run_events = self._all("run_events").unique("run", keep="first", maintain_order=True)
        llm = self._all("llm").group_by("run").agg(pl.col(c).sum() for c in _COUNTS[:7])
        tools = (
            self._all("tools").group_by("run").agg(pl.col("reads").sum(), pl.col("writes").sum())
        )
        outcome_events = self._all("outcomes").unique("id", keep="first", maintain_order=True)
        out_agg = outcome_events.group_by("run").agg(pl.len().alias("outcomes"))
        runs = (
            skeleton.join(run_events, on="run", how="left")
            .with_columns(pl.coalesce("run_ts", "first_ts").alias("ts"))
            .join(llm, on="run", how="left")
            .join(tools, on="run", how="left")
            .join(out_agg, on="run", how="left")
            .with_columns(pl.col(c).fill_null(0) for c in _COUNTS)
            .drop("run_ts", "first_ts")
        )
        feedback = self._all("feedback").unique("id", keep="first", maintain_order=True)
        outcomes = _outcomes(feedback, outcome_events)
        people = self._all("people")
        users = _users(people, runs, self.config)
        history = History(
            runs=runs,
            outcomes=outcomes,
            users=users,
            reads=self._all("reads"),
            writes=self._all("writes"),
            start=users["first_ts"].min() if users.height else _EPOCH,  # type: ignore[arg-type]
            end=users["last_ts"].max() if users.height else _EPOCH,  # type: ignore[arg-type]
            config=self.config,
        )
        history.runs = history.runs.with_columns(history.week_expr().alias("week"))
        return history


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def build_history(frame: pl.DataFrame, config: ScanConfig | None = None) -> History:
    """Prepare the detector tables from a ``load_frame`` result."""
    builder = HistoryBuilder(config)
    builder.add(frame)
    return builder.finish()


def _outcomes(feedback: pl.DataFrame, outcome_events: pl.DataFrame) -> pl.DataFrame:
    base = outcome_events
    joined = (
        feedback.drop("id")
        .rename({"outcome_id": "id"})
        .join(base.select("id", pl.col("user").alias("owner")), on="id", how="inner")
    )
    is_other = ~pl.col("by").is_in(["system"]) & (pl.col("by") != pl.col("owner"))
    accepted = (pl.col("verdict") == "accepted") & is_other
    agg = joined.group_by("id").agg(
        accepted.any().alias("accepted"),
        pl.col("fb_ts").filter(accepted).min().alias("accepted_at"),
        pl.col("by").filter(accepted & ~pl.col("by").is_in(["external"])).alias("accepters"),
        pl.col("verdict").is_in(list(UNDOING_VERDICTS)).any().alias("undone"),
        pl.col("verdict").filter(pl.col("verdict").is_in(list(UNDOING_VERDICTS))).first()
        .alias("undo_verdict"),
        (pl.col("verdict") == "rejected").any().alias("rejected"),
        ((pl.col("verdict") == "accepted") & (pl.col("by") == pl.col("owner"))).any()
        .alias("self_accepted"),
    )  # fmt: skip
    return base.join(agg, on="id", how="left").with_columns(
        pl.col("accepted").fill_null(False),
        pl.col("undone").fill_null(False),
        pl.col("rejected").fill_null(False),
        pl.col("self_accepted").fill_null(False),
        pl.col("accepters").fill_null([]),
    )


def _users(people: pl.DataFrame, runs: pl.DataFrame, config: ScanConfig) -> pl.DataFrame:
    people = people.group_by("user", "team").agg(
        pl.col("n").sum(), pl.col("first_ts").min(), pl.col("last_ts").max()
    )
    people = (
        people.sort("n", "team", descending=[True, False])
        .group_by("user")
        .agg(pl.col("team").first(), pl.col("first_ts").min(), pl.col("last_ts").max())
    )
    roles = runs.group_by("user").agg(pl.col("role").drop_nulls().mode().sort().first())
    users = people.join(roles, on="user", how="left").with_columns(
        pl.col("role").fill_null("unknown")
    )
    n = config.min_peers
    users = users.with_columns(
        pl.len().over("team", "role").alias("_tr"), pl.len().over("role").alias("_r")
    ).with_columns(
        pl.when(pl.col("_tr") >= n)
        .then(pl.concat_str("team", pl.lit("/"), "role"))
        .when(pl.col("_r") >= n)
        .then(pl.concat_str(pl.lit("*/"), "role"))
        .otherwise(pl.lit("*/*"))
        .alias("peer_group")
    )
    return users.drop("_tr", "_r").sort("user")
