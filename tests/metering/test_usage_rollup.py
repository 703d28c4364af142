"""The daily usage roll-up (``metering.rollup``): every report built on it equals the sum
of the raw records, across day boundaries, partial days, scopes and periods, and stays
equal when past days change (late records, re-pricing, moves and deletions)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import product
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import delete, func, select, update

from meshclaw.accounts.service import Caller
from meshclaw.analytics.boards import Boards
from meshclaw.analytics.series import WINDOW, UsageSeries, period_starts
from meshclaw.metering.models import UsageDaily, UsageDailyDay
from meshclaw.metering.prices import from_nano, load_price_table
from meshclaw.metering.reprice import reprice
from meshclaw.metering.rollup import UsageRollup, midnight
from meshclaw.metering.usage import (
    ORG_WIDE_ROLES,
    GroupBy,
    Period,
    UsageRow,
    period_start,
    usage_report,
)
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.store.db import Database
from meshclaw.store.models import Agent, Org, Team, UsageRecord, User
from tests.conftest import World, agent_yaml
from tests.metering.conftest import tool_turns

GROUPS: tuple[GroupBy, ...] = ("user", "team", "agent", "model")
PERIODS: tuple[Period, ...] = ("day", "week", "month")
SUMS = ("input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens")


@dataclass
class History:
    world: World
    tina: Caller
    """A team admin of alice's team."""
    now: datetime
    agents: list[str]
    run_id: str


@pytest.fixture
def history(
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
    database_url: str,
) -> History:
    """Usage of four people (one without a team), two agents, model and tool calls, over
    the last 45 days, with records on both sides of each midnight."""
    world = make_world(scripted(tool_turns()).base_url, database_url)
    agents = [world.save_agent(agent_yaml()), world.save_agent(agent_yaml("writer"))]
    info = world.run("helper")
    assert info.status == "succeeded", info.error
    accounts = world.platform.accounts
    tina = accounts.caller_for(
        accounts.create_user(
            world.alice.org_id, "tina", team_id=world.alice.team_id, role="team_admin"
        )
    )
    people = [world.alice, world.bob, world.admin, tina]
    now = datetime.now(UTC)
    rng = random.Random(7)
    times = [timedelta(0), timedelta(microseconds=1), timedelta(hours=12)]
    times.append(timedelta(days=1, microseconds=-1))
    with world.platform.db.session() as session:
        for back, at in product(range(46), times):
            when = midnight(now.date() - timedelta(days=back)) + at
            if when >= now:
                continue
            for _ in range(rng.randint(0, 3)):
                session.add(_record(rng, world, rng.choice(people), agents, info.id, when))
    return History(world=world, tina=tina, now=now, agents=agents, run_id=info.id)


def _record(
    rng: random.Random, world: World, who: Caller, agents: list[str], run_id: str, at: datetime
) -> UsageRecord:
    model = rng.random() < 0.7
    return UsageRecord(
        id=f"use_{uuid4().hex[:24]}",
        kind="model" if model else "tool",
        org_id=who.org_id,
        team_id=who.team_id,
        user_id=who.user_id,
        agent_id=rng.choice(agents),
        agent_version=1,
        run_id=run_id,
        trigger="cli",
        provider=rng.choice(["scripted", "acme"]) if model else None,
        model=rng.choice(["test-model", "big-1"]) if model else None,
        tool=None if model else "clock.now",
        input_tokens=rng.randint(0, 5000) if model else 0,
        output_tokens=rng.randint(0, 900) if model else 0,
        cached_tokens=rng.randint(0, 300) if model else 0,
        cache_write_tokens=rng.randint(0, 50) if model else 0,
        reasoning_tokens=rng.randint(0, 70) if model else 0,
        cost_nano_usd=rng.randint(0, 10**12),
        created_at=at,
    )


# ---- the reference: the raw records summed in Python ------------------------------------


def _records(world: World) -> list[tuple[UsageRecord, str, str, str]]:
    with world.platform.db.session() as session:
        rows = session.execute(
            select(UsageRecord, User.handle, Team.name, Agent.name)
            .join(User, User.id == UsageRecord.user_id)
            .join(Agent, Agent.id == UsageRecord.agent_id)
            .outerjoin(Team, Team.id == UsageRecord.team_id)
        ).all()
    return [(r, handle, team or "(no team)", agent) for r, handle, team, agent in rows]


def raw_report(
    world: World,
    caller: Caller,
    group_by: GroupBy,
    since: datetime | None,
    until: datetime | None,
    period: Period | None,
    user_id: str | None,
) -> list[UsageRow]:
    sums: dict[tuple[str, str | None], dict[str, int]] = {}
    for r, handle, team, agent in _records(world):
        if caller.role == "team_admin" and r.team_id != caller.team_id:
            continue
        if caller.role not in (*ORG_WIDE_ROLES, "team_admin") and r.user_id != caller.user_id:
            continue
        if (user_id and r.user_id != user_id) or (group_by == "model" and r.kind != "model"):
            continue
        if (since and r.created_at < since) or (until and r.created_at >= until):
            continue
        key = {"user": handle, "team": team, "agent": agent}.get(group_by)
        key = key or f"{r.provider or ''}/{r.model or ''}"
        bucket = period_start(r.created_at.date(), period).isoformat() if period else None
        row = sums.setdefault((key, bucket), dict.fromkeys([*SUMS, "m", "t", "c"], 0))
        for name in SUMS:
            row[name] += getattr(r, name)
        row["m" if r.kind == "model" else "t"] += 1
        row["c"] += r.cost_nano_usd
    return sorted(
        (
            UsageRow(
                key=key,
                period=bucket,
                model_calls=s["m"],
                tool_calls=s["t"],
                cost_usd=from_nano(s["c"]),
                **{name: s[name] for name in SUMS},
            )
            for (key, bucket), s in sums.items()
        ),
        key=lambda r: (r.period or "", r.key),
    )


def _rolled_days(world: World) -> dict[date, bool]:
    with world.platform.db.session() as session:
        rows = session.execute(select(UsageDailyDay.day, UsageDailyDay.stale))
        return {day: stale for day, stale in rows}


def _closed_stale_days(world: World) -> set[date]:
    """The stale days a read should have rolled up: yesterday stays stale (its records
    were inserted late) until it closes ``SETTLE`` after midnight, so a run in that hour
    must not count it."""
    closed_before = UsageRollup(world.platform.db).closed_before()
    return {day for day, stale in _rolled_days(world).items() if stale and day < closed_before}


def _ranges(now: datetime) -> list[tuple[datetime | None, datetime | None]]:
    today = midnight(now.date())
    day, hour = timedelta(days=1), timedelta(hours=1)
    return [
        (None, None),
        (today - 30 * day, None),  # whole days, then today
        (today - 30 * day + 6 * hour, today - 3 * day + 12 * hour),  # partial at both ends
        (today - 10 * day - timedelta(microseconds=1), today - 9 * day),  # a day and an instant
        (today - 5 * day + hour, today - 5 * day + 2 * hour),  # inside one day
        (today - 2 * day, today + day),  # ends in the future
        (now - hour, None),  # today only
        (today - 90 * day, today - 44 * day + 12 * hour),  # starts before the first record
        (None, today - 20 * day),
        (today + day, None),  # the future: nothing
    ]


# ---- the reports equal the raw sums ------------------------------------------------------


def test_usage_reports_equal_the_raw_records_across_days_scopes_and_periods(
    history: History,
) -> None:
    world = history.world
    db = world.platform.db
    viewers: list[tuple[Caller, str | None]] = [
        (world.admin, None),
        (world.admin, world.bob.user_id),
        (world.alice, None),
        (history.tina, None),
        (history.tina, world.alice.user_id),
        (history.tina, world.bob.user_id),  # outside her team: nothing
    ]
    checked = 0
    for (since, until), (caller, user_id) in product(_ranges(history.now), viewers):
        shapes = [(g, None) for g in GROUPS] + [("team", p) for p in PERIODS]
        shapes += [("model", "day"), ("user", "month")]
        for group_by, period in shapes:
            got = usage_report(
                db, caller, group_by=group_by, since=since, until=until, period=period,
                user_id=user_id,
            )  # fmt: skip
            want = raw_report(world, caller, group_by, since, until, period, user_id)
            assert got == want, (since, until, caller.handle, user_id, group_by, period)
            checked += bool(want)
    assert checked > 100
    assert len(_rolled_days(world)) >= 44  # every closed day rolled
    assert not _closed_stale_days(world)
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(UsageDaily)) > 0


def test_series_and_board_spend_equal_the_raw_records(history: History) -> None:
    world = history.world
    platform = world.platform
    with platform.db.session() as session:  # small enough groups to be shown
        session.execute(
            update(Org).where(Org.id == world.alice.org_id).values(settings={"analytics": {"k": 2}})
        )
    reader = UsageSeries(platform.db, platform.access, clock=lambda: history.now)
    records = _records(world)
    scopes = [
        (world.alice, "me", lambda r: r.user_id == world.alice.user_id),
        (history.tina, f"team:{world.alice.team_id}", lambda r: r.team_id == world.alice.team_id),
        (world.admin, "org", lambda r: True),
    ]
    for (caller, scope, keep), period in product(scopes, PERIODS):
        series = reader.series(caller, scope, period)
        starts = period_starts(history.now.date(), period, WINDOW[period])
        want = dict.fromkeys(starts, 0)
        for r, *_ in records:
            start = period_start(r.created_at.date(), period)
            if keep(r) and start >= starts[0]:
                want[start] += r.cost_nano_usd
        assert [p.cost_usd for p in series.points] == [from_nano(n) for n in want.values()]

    boards = Boards(platform.db, platform.analytics)
    for by, column in (("team", "team_id"), ("user", "user_id")):
        ids = sorted({getattr(r, column) for r, *_ in records if getattr(r, column)})
        want_spent = {i: 0 for i in ids}
        for r, *_ in records:
            if getattr(r, column) in want_spent:
                want_spent[getattr(r, column)] += r.cost_nano_usd
        assert boards._spent(world.alice.org_id, by, ids) == want_spent


# ---- past days that change are rolled up again -------------------------------------------


def _org_report(history: History) -> tuple[list[UsageRow], list[UsageRow]]:
    world = history.world
    args: dict[str, Any] = {"group_by": "model", "period": "day"}
    got = usage_report(world.platform.db, world.admin, **args)
    return got, raw_report(world, world.admin, "model", None, None, "day", None)


def test_late_records_moves_and_deletions_make_their_day_stale(history: History) -> None:
    world = history.world
    db = world.platform.db
    got, want = _org_report(history)
    assert got == want
    three_ago = history.now.date() - timedelta(days=3)
    assert _rolled_days(world)[three_ago] is False

    late = _record(random.Random(1), world, world.bob, history.agents, history.run_id,
                   midnight(three_ago) + timedelta(hours=23))  # fmt: skip
    late.kind, late.provider, late.model = "model", "acme", "late-model"
    with db.session() as session:  # e.g. a worker that was down at midnight
        session.add(late)
    assert _rolled_days(world)[three_ago] is True
    got, want = _org_report(history)
    assert got == want and any(r.key == "acme/late-model" for r in got)
    assert _rolled_days(world)[three_ago] is False

    ten_ago = history.now.date() - timedelta(days=10)
    with db.session() as session:  # moved to another day: both days change
        session.execute(
            update(UsageRecord)
            .where(UsageRecord.id == late.id)
            .values(created_at=midnight(ten_ago) + timedelta(hours=1))
        )
    days = _rolled_days(world)
    assert days[three_ago] is True and days[ten_ago] is True
    assert _org_report(history)[0] == _org_report(history)[1]

    with db.session() as session:
        session.execute(delete(UsageRecord).where(UsageRecord.id == late.id))
    assert _rolled_days(world)[ten_ago] is True
    got, want = _org_report(history)
    assert got == want and not any(r.key == "acme/late-model" for r in got)


def test_records_of_today_leave_rolled_days_alone(history: History) -> None:
    world = history.world
    _org_report(history)
    before = _rolled_days(world)
    with world.platform.db.session() as session:  # a call metered now
        session.add(_record(random.Random(2), world, world.bob, history.agents, history.run_id,
                            datetime.now(UTC)))  # fmt: skip
    assert _rolled_days(world) == before
    got, want = _org_report(history)
    assert got == want


def test_repricing_past_days_rolls_them_up_again(history: History, tmp_path: Path) -> None:
    world = history.world
    platform = world.platform
    before, _ = _org_report(history)
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        'version: "v2"\nprices:\n'
        '  - {provider: acme, model: "*", input: "5.00", cached_input: "0.50", output: "15"}\n'
    )
    since = midnight(history.now.date() - timedelta(days=20))
    until = midnight(history.now.date() - timedelta(days=5)) + timedelta(hours=12)
    result = reprice(
        platform.db, platform.audit, load_price_table(prices), world.admin,
        since=since, until=until,
    )  # fmt: skip
    assert result.changed > 0
    stale = _closed_stale_days(world)
    assert stale and min(stale) >= since.date() and max(stale) <= until.date()
    after, want = _org_report(history)
    assert after == want and after != before
    assert sum((r.cost_usd for r in after), Decimal(0)) == sum(
        (r.cost_usd for r in want), Decimal(0)
    )


def test_the_scheduler_entry_point_is_idempotent(history: History) -> None:
    world = history.world
    rollup = UsageRollup(world.platform.db, clock=lambda: history.now)
    first = rollup.roll_closed_days()
    assert first >= 44  # 45 closed days, 44 in the hour after midnight
    assert rollup.roll_closed_days() == 0
    with world.platform.db.session() as session:
        session.execute(
            update(UsageRecord)
            .where(UsageRecord.created_at < midnight(history.now.date() - timedelta(days=7)))
            .where(UsageRecord.created_at >= midnight(history.now.date() - timedelta(days=8)))
            .values(cost_nano_usd=UsageRecord.cost_nano_usd + 1)
        )
    assert rollup.roll_closed_days() == 1
    assert _org_report(history)[0] == _org_report(history)[1]


def test_a_day_closes_an_hour_after_midnight(database_url: str) -> None:
    db = Database(database_url)
    today = date(2026, 11, 27)
    try:
        for minutes, closed_before in ((10, today - timedelta(days=1)), (61, today)):
            at = midnight(today) + timedelta(minutes=minutes)
            assert UsageRollup(db, clock=lambda at=at: at).closed_before() == closed_before
    finally:
        db.dispose()
