"""The store's history as analytics tables: hourly activity summed in SQL on both engines
gives exactly what summing every usage record in Polars gives."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import polars as pl
from polars.testing import assert_frame_equal
from sqlalchemy import insert, select

from meshclaw.ids import new_id
from meshclaw.store.models import Run, UsageRecord
from tests.conftest import World, agent_yaml


def _usage(world: World) -> None:
    """Model and tool calls of two people (one without a team) over a few hours."""
    agent_id = world.save_agent(agent_yaml())
    run_id = world.start_run("helper")
    with world.platform.db.session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        version = run.agent_version
    base = datetime(2026, 3, 6, 16, 0, tzinfo=UTC)  # a Friday, around the 17:00 cut-off
    rows = []
    for i in range(60):
        who = world.alice if i % 3 else world.admin  # root has no team
        kind = "model" if i % 4 else "tool"
        rows.append(
            {
                "id": new_id("use"), "kind": kind, "org_id": who.org_id,
                "team_id": who.team_id, "user_id": who.user_id, "agent_id": agent_id,
                "agent_version": version, "run_id": run_id, "trigger": "manual",
                "cost_nano_usd": 1_234_567 * i if kind == "model" else 0,
                "created_at": base + timedelta(minutes=7 * i, microseconds=i),
            }
        )  # fmt: skip
    with world.platform.db.session() as session:
        session.execute(insert(UsageRecord), rows)


def _expected_activity(world: World, org_id: str) -> pl.DataFrame:
    """Every usage record summed per team, person and hour in Polars (the reference)."""
    with world.platform.db.session() as session:
        usage = session.execute(
            select(
                UsageRecord.team_id, UsageRecord.user_id, UsageRecord.kind,
                UsageRecord.created_at, UsageRecord.cost_nano_usd,
            ).where(UsageRecord.org_id == org_id)
        ).all()  # fmt: skip
    frame = pl.DataFrame(
        [
            {
                "team": u.team_id or "",
                "user": u.user_id,
                "ts": u.created_at,
                "is_call": u.kind == "model",
                "cost": u.cost_nano_usd / 1e9,
            }
            for u in usage
        ],
        schema={
            "team": pl.String,
            "user": pl.String,
            "ts": pl.Datetime("us", "UTC"),
            "is_call": pl.Boolean,
            "cost": pl.Float64,
        },
    )
    return frame.group_by("team", "user", pl.col("ts").dt.truncate("1h").alias("hour")).agg(
        pl.len().alias("events"),
        pl.col("ts").min().alias("first_ts"),
        pl.col("ts").max().alias("last_ts"),
        pl.col("is_call").sum().alias("llm_calls"),
        pl.col("cost").filter(pl.col("is_call")).sum().alias("cost_usd"),
        pl.lit(0, dtype=pl.UInt32).alias("calls_without_cost"),
    )


def test_hourly_activity_summed_in_sql_equals_summing_every_record(
    database_url: str, make_world: Callable[..., World]
) -> None:
    world = make_world(database_url=database_url)
    _usage(world)
    org_id = world.alice.org_id
    got = world.platform.analytics.tables(org_id).activity.collect()
    want = _expected_activity(world, org_id)
    order = ["team", "user", "hour"]
    assert got.height == want.height > 5
    assert_frame_equal(
        got.sort(order), want.select(got.columns).sort(order), check_exact=False, rel_tol=1e-12
    )


def test_boards_skip_activity_and_rank_the_same(
    database_url: str, make_world: Callable[..., World]
) -> None:
    world = make_world(database_url=database_url)
    _usage(world)
    analytics = world.platform.analytics
    org_id = world.alice.org_id
    assert analytics.tables(org_id, activity=False).activity.collect().height == 0
    _, with_activity = analytics.credit(org_id)
    _, without = analytics.credit(org_id, activity=False)
    assert_frame_equal(with_activity.outcomes, without.outcomes)
