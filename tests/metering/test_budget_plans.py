"""The budget guard's cached plans (the budgets that apply to a caller and their counters
for the current windows), on both engines: windows rolling over, budgets deleted by
another process, counters created by a reservation that was refused; and the connections
and driver-level statements the guard writes with."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Table, delete, insert, select
from sqlalchemy.exc import IntegrityError

from meshclaw.errors import BudgetExceeded
from meshclaw.metering.budget import BudgetScope, PlannedCall, RunTotals
from meshclaw.metering.limits import LimitGuard
from meshclaw.metering.models import Budget, BudgetCounter, UsageDailyDay
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.spec.loader import parse_spec
from meshclaw.spec.models import AgentSpec
from meshclaw.store.db import Database, Prepared, migrate
from tests.conftest import World, agent_yaml
from tests.metering.conftest import tool_turns

Start = Callable[[dict[str, Any]], ScriptedServer]


def _world(
    scripted: Start, make_world: Callable[..., World], database_url: str
) -> tuple[World, PlannedCall, AgentSpec]:
    world = make_world(scripted(tool_turns()).base_url, database_url=database_url)
    world.save_agent(agent_yaml())
    agent = world.platform.agents.get(world.alice, "helper")
    scope = BudgetScope(
        org_id=world.alice.org_id,
        team_id=world.alice.team_id,
        user_id=world.alice.user_id,
        agent_id=agent.id,
        run_id="run_x",
    )
    call = PlannedCall(kind="model", scope=scope, fingerprint="f", estimate_nano_usd=1000)
    return world, call, parse_spec(agent_yaml())


def _counters(world: World) -> list[tuple[datetime, int, int]]:
    with world.platform.db.session() as session:
        rows = session.execute(
            select(BudgetCounter.window_start, BudgetCounter.spent, BudgetCounter.reserved)
        )
        return sorted((w.replace(tzinfo=None), s, r) for w, s, r in rows)


def _settle(world: World, guard: LimitGuard, call: PlannedCall, spec: AgentSpec) -> None:
    reservation = guard.reserve(call, spec, RunTotals())
    with world.platform.db.session() as session:
        guard.settle(session, reservation, cost_nano_usd=700, tokens=10)


def test_a_rate_limit_starts_again_in_the_next_window(
    scripted: Start, make_world: Callable[..., World], database_url: str
) -> None:
    world, call, spec = _world(scripted, make_world, database_url)
    now = [datetime(2026, 11, 27, 10, 0, 30, tzinfo=UTC)]
    guard = LimitGuard(world.platform.db, world.platform.audit, clock=lambda: now[0])
    for scope, name, metric, cap in (("user", "alice", "calls", "2"), ("org", "acme", "cost", "5")):
        world.platform.budgets.set(
            world.admin,
            scope=scope,
            name=name,
            metric=metric,
            period="minute" if metric == "calls" else "month",
            hard_cap=cap,
            soft_cap=None,
        )
    _settle(world, guard, call, spec)
    _settle(world, guard, call, spec)
    with pytest.raises(BudgetExceeded, match="per-minute calls hard cap 2 calls is reached"):
        guard.reserve(call, spec, RunTotals())
    now[0] += timedelta(seconds=40)  # 10:01:10, same month: a new minute only
    guard.reserve(call, spec, RunTotals())  # held, not settled
    assert _counters(world) == [
        (datetime(2026, 11, 1), 1400, 1000),  # the month: two calls settled, one held
        (datetime(2026, 11, 27, 10, 0), 2, 0),
        (datetime(2026, 11, 27, 10, 1), 0, 1),
    ]


def test_a_budget_deleted_by_another_process_is_noticed_at_once(
    scripted: Start, make_world: Callable[..., World], database_url: str
) -> None:
    world, call, spec = _world(scripted, make_world, database_url)
    guard = world.platform.budget_guard
    for scope, name in (("org", "acme"), ("user", "alice")):
        world.platform.budgets.set(
            world.admin,
            scope=scope,
            name=name,
            metric="cost",
            period="day",
            hard_cap="10",
            soft_cap=None,
        )
    _settle(world, guard, call, spec)  # the guard now remembers both budgets
    other = Database(world.platform.db.url)  # another process: this guard is not told
    try:
        with other.session() as session:
            session.execute(delete(Budget).where(Budget.scope == "user"))
    finally:
        other.dispose()
    reservation = guard.reserve(call, spec, RunTotals())  # within the 2 s the list is kept
    assert len(reservation.holds) == 1
    assert [(s, r) for _, s, r in _counters(world)] == [(700, 1000)]


def test_a_refused_call_that_created_its_counter_is_refused_again(
    scripted: Start, make_world: Callable[..., World], database_url: str
) -> None:
    world, call, spec = _world(scripted, make_world, database_url)
    assert world.run("helper").status == "succeeded"  # usage in today's windows
    for scope, name in (("org", "acme"), ("user", "alice")):
        world.platform.budgets.set(
            world.admin,
            scope=scope,
            name=name,
            metric="cost",
            period="day",
            hard_cap="0.000000001",  # below what the run already spent
            soft_cap=None,
        )
    guard = world.platform.budget_guard
    for _ in range(2):  # the counters the first refusal created were rolled back with it
        with pytest.raises(BudgetExceeded, match=r"daily cost hard cap \$0.000000001"):
            guard.reserve(call, spec, RunTotals())
    assert _counters(world) == []


def test_driver_statements_raise_sqlalchemy_errors_and_bad_connections_are_not_kept(
    database_url: str,
) -> None:
    migrate(database_url)
    db = Database(database_url)
    try:
        table = cast(Table, UsageDailyDay.__table__)
        add = Prepared(insert(table), ["org_id", "day", "stale"])
        row = {"org_id": "org_1", "day": date(2026, 11, 27), "stale": False}
        kept = db.kept_connections(keep=1)
        with kept.begin() as conn:
            assert add.run(conn, row) == 1
        assert db.engine.pool.checkedout() == 1  # kept for the next transaction
        with pytest.raises(IntegrityError), kept.begin() as conn:
            add.run(conn, row)  # the same key again: the driver's error, as SQLAlchemy's
        assert db.engine.pool.checkedout() == 0  # a connection whose statement failed is closed
        with pytest.raises(RuntimeError), kept.begin() as conn:
            add.run(conn, row | {"day": date(2026, 11, 28)})
            raise RuntimeError("rolled back")
        assert db.engine.pool.checkedout() == 1  # rolled back, and kept
        with db.engine.connect() as conn:
            days = conn.execute(select(UsageDailyDay.day, UsageDailyDay.stale)).all()
        assert [tuple(d) for d in days] == [(date(2026, 11, 27), False)]
    finally:
        db.dispose()
    assert db.engine.pool.checkedout() == 0


def test_a_reservation_in_the_callers_transaction_holds_every_counter_or_none(
    scripted: Start, make_world: Callable[..., World], database_url: str
) -> None:
    """The gateway reserves inside the transaction that starts the call's step: a refusal
    must leave no partial hold on the other counters and must not undo what that
    transaction wrote before (the run's previous call end); a hold commits with it."""
    world, call, spec = _world(scripted, make_world, database_url)
    guard = LimitGuard(world.platform.db, world.platform.audit)
    for scope, name, metric, cap in (("user", "alice", "calls", "1"), ("org", "acme", "cost", "5")):
        world.platform.budgets.set(
            world.admin, scope=scope, name=name, metric=metric, period="day", hard_cap=cap,
            soft_cap=None,
        )  # fmt: skip
    db = world.platform.db

    with db.session() as session:
        guard.reserve(call, spec, RunTotals(), conn=session.connection())
    assert sorted((s, r) for _, s, r in _counters(world)) == [(0, 1), (0, 1000)]  # committed

    with db.session() as session:  # the user's single call is held: refused
        conn = session.connection()
        conn.execute(delete(UsageDailyDay))  # stands for the earlier write of the transaction
        conn.execute(insert(UsageDailyDay).values(org_id="o", day=date(2026, 1, 1), stale=True))
        with pytest.raises(BudgetExceeded, match="calls hard cap 1 call"):
            guard.reserve(call, spec, RunTotals(), conn=conn)
    assert sorted((s, r) for _, s, r in _counters(world)) == [(0, 1), (0, 1000)]  # untouched
    with db.session() as session:
        assert session.scalars(select(UsageDailyDay.org_id)).all() == ["o"]

    with pytest.raises(RuntimeError), db.session() as session:  # rolled back: no hold left
        world.platform.budgets.set(
            world.admin, scope="user", name="alice", metric="calls", period="day",
            hard_cap="5", soft_cap=None,
        )  # fmt: skip
        guard.forget()
        guard.reserve(call, spec, RunTotals(), conn=session.connection())
        raise RuntimeError("the step-start transaction failed")
    assert sorted((s, r) for _, s, r in _counters(world)) == [(0, 1), (0, 1000)]
