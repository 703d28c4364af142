"""Budgets and rate limits in the call path: hard caps refuse before the call, soft caps
alert once, rate limits, the runaway breaker, permissions, and atomicity under a race."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from meshclaw.errors import PermissionDenied, UserError
from meshclaw.metering.budget import BudgetScope, PlannedCall, RunTotals
from meshclaw.metering.models import BudgetCounter
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.spec.loader import parse_spec
from meshclaw.store.models import AuditEvent, RunStep, UsageRecord
from tests.conftest import World, agent_yaml
from tests.metering.conftest import tool_turns

Start = Callable[[dict[str, Any]], ScriptedServer]


def audit_actions(world: World, action: str) -> list[AuditEvent]:
    with world.platform.db.session() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_who_may_set_budgets(scripted: Start, make_world: Callable[..., World]) -> None:
    world = make_world(scripted(tool_turns()).base_url)
    budgets = world.platform.budgets
    with pytest.raises(PermissionDenied):
        budgets.set(
            world.alice,
            scope="team",
            name="eng",
            metric="cost",
            period="day",
            hard_cap="5",
            soft_cap=None,
        )
    info = budgets.set(
        world.admin,
        scope="team",
        name="eng",
        metric="cost",
        period="week",
        hard_cap="$5",
        soft_cap="4.5",
    )
    assert (info.name, info.hard_cap, info.soft_cap, info.state) == ("eng", "$5", "$4.5", "ok")
    # Setting again replaces; the change is audited each time.
    budgets.set(
        world.admin,
        scope="team",
        name="eng",
        metric="cost",
        period="week",
        hard_cap="6",
        soft_cap=None,
    )
    assert [b.hard_cap for b in budgets.visible(world.admin)] == ["$6"]
    assert len(audit_actions(world, "budget.set")) == 2
    # alice is in eng: she sees her team's budget; bob (ops) does not.
    assert [b.name for b in budgets.visible(world.alice)] == ["eng"]
    assert budgets.visible(world.bob) == []
    with pytest.raises(UserError, match="period"):
        budgets.set(
            world.admin,
            scope="org",
            name="acme",
            metric="cost",
            period="year",
            hard_cap="1",
            soft_cap=None,
        )
    with pytest.raises(UserError, match="whole"):
        budgets.set(
            world.admin,
            scope="user",
            name="alice",
            metric="tokens",
            period="day",
            hard_cap="1.5",
            soft_cap=None,
        )
    budgets.delete(world.admin, info.id)
    assert budgets.visible(world.admin) == []


def test_hard_cap_refuses_the_next_call_before_it_is_made(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted(tool_turns())
    world = make_world(server.base_url)
    world.save_agent(agent_yaml())
    # Any spend reaches this cap: the first call is admitted, the second refused.
    world.platform.budgets.set(
        world.admin,
        scope="user",
        name="alice",
        metric="cost",
        period="day",
        hard_cap="0.000000001",
        soft_cap=None,
    )
    info = world.run("helper")
    assert info.status == "failed"
    assert "user budget: the daily cost hard cap $0.000000001 is reached" in (info.error or "")
    assert len(server.requests) == 1  # the refused call never reached the model
    steps = world.platform.runs.steps(world.alice, info.id)
    assert [(s.kind, s.status) for s in steps] == [
        ("model", "ok"),
        ("tool", "ok"),
        ("model", "denied"),
    ]
    (denied,) = audit_actions(world, "model.budget")
    assert denied.outcome == "denied"
    (budget,) = world.platform.budgets.visible(world.admin)
    assert budget.state == "hard" and budget.in_flight == "$0"
    registry = world.platform.telemetry.registry
    assert registry is not None
    team = world.alice.team_id
    labels = {"org": world.alice.org_id, "agent": "helper", "kind": "model", "reason": "budget",
              "team": str(team)}  # fmt: skip
    assert registry.get_sample_value("meshclaw_denials_total", labels) == 1.0


def test_soft_cap_alerts_once_per_window(scripted: Start, make_world: Callable[..., World]) -> None:
    server = scripted(tool_turns())
    world = make_world(server.base_url)
    world.save_agent(agent_yaml())
    world.platform.budgets.set(
        world.admin,
        scope="team",
        name="eng",
        metric="tokens",
        period="month",
        hard_cap=None,
        soft_cap="1",
    )
    assert world.run("helper").status == "succeeded"
    assert world.run("helper").status == "succeeded"
    (alert,) = audit_actions(world, "budget.soft_cap")
    assert alert.details["metric"] == "tokens" and alert.details["scope"] == "team"
    (budget,) = world.platform.budgets.visible(world.admin)
    with world.platform.db.session() as session:
        used = session.scalar(
            select(func.sum(UsageRecord.input_tokens + UsageRecord.output_tokens))
        )
    assert budget.spent == f"{used} tokens" and budget.state == "soft"


def test_calls_per_minute_rate_limit(scripted: Start, make_world: Callable[..., World]) -> None:
    server = scripted(tool_turns())
    world = make_world(server.base_url)
    world.save_agent(agent_yaml())
    world.platform.budgets.set(
        world.admin,
        scope="agent",
        name="helper",
        metric="calls",
        period="minute",
        hard_cap="3",
        soft_cap=None,
    )
    assert world.run("helper").status == "succeeded"  # 2 model calls
    second = world.run("helper")  # 1 more is admitted, then the 4th is refused
    assert second.status == "failed" and "per-minute calls hard cap 3 calls" in (second.error or "")


def test_circuit_breaker_stops_a_run_repeating_the_same_tool_call(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    same = {"name": "clock.now", "arguments": {"tz": "UTC"}}
    server = scripted({"turns": [{"reply": {"content": "again", "tool_calls": [same]}}] * 9})
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(max_steps=20))
    world.platform.budget_guard._max_identical = 3
    info = world.run("helper")
    assert info.status == "failed"
    assert "circuit breaker: the same tool call was already made 3 times" in (info.error or "")
    steps = world.platform.runs.steps(world.alice, info.id)
    assert [s.status for s in steps if s.kind == "tool"] == ["ok", "ok", "ok", "denied"]


@pytest.mark.postgres
@pytest.mark.slow
def test_fifty_runs_racing_a_cap_overshoot_by_at_most_one_call(
    scripted: Start, make_world: Callable[..., World], pg_url: str
) -> None:
    server = scripted(tool_turns())
    world = make_world(server.base_url, database_url=pg_url)
    world.save_agent(
        agent_yaml(extra="", tools=(("clock.now", "read"),)).replace(
            "model: {provider: scripted, model: test-model}",
            "model: {provider: scripted, model: test-model, parameters: {max_tokens: 40}}",
        )
    )
    # Calibrate: what one run's calls cost, then cap at roughly 30 calls' worth.
    probe = world.run("helper")
    assert probe.status == "succeeded", probe.error
    with world.platform.db.session() as session:
        costs = list(
            session.scalars(select(UsageRecord.cost_nano_usd).where(UsageRecord.kind == "model"))
        )
        spent_before = sum(costs)
    largest = max(costs)
    cap_nano = spent_before + 30 * largest
    world.platform.budgets.set(
        world.admin,
        scope="org",
        name="acme",
        metric="cost",
        period="day",
        hard_cap=f"{cap_nano / 1e9:.9f}",
        soft_cap=None,
    )
    run_ids = [world.start_run("helper") for _ in range(50)]
    barrier = threading.Barrier(len(run_ids))

    def execute(run_id: str) -> None:
        barrier.wait()
        asyncio.run(world.execute(run_id))

    threads = [threading.Thread(target=execute, args=(r,)) for r in run_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    infos = [world.platform.runs.get(world.alice, r) for r in run_ids]
    refused = [i for i in infos if i.status == "failed"]
    assert refused and all("hard cap" in (i.error or "") for i in refused)
    assert any(i.status == "succeeded" for i in infos)
    with world.platform.db.session() as session:
        total = session.scalar(select(func.sum(UsageRecord.cost_nano_usd)))
        (counter,) = session.scalars(select(BudgetCounter))
        denied = session.scalar(
            select(func.count()).select_from(RunStep).where(RunStep.status == "denied")
        )
    assert total is not None
    assert total <= cap_nano + largest, (total, cap_nano, largest)
    assert counter.reserved == 0
    assert counter.spent == total  # the probe run's spend counts: it is in today's window
    assert denied == len(refused)


def test_several_budgets_apply_together_and_the_first_at_its_cap_refuses(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted(tool_turns())
    world = make_world(server.base_url)
    world.save_agent(agent_yaml())
    budgets = world.platform.budgets
    budgets.set(
        world.admin,
        scope="org",
        name="acme",
        metric="cost",
        period="month",
        hard_cap="100",
        soft_cap="0.000000001",
    )
    budgets.set(
        world.admin,
        scope="team",
        name="eng",
        metric="tokens",
        period="day",
        hard_cap=None,
        soft_cap="1",
    )
    budgets.set(
        world.admin,
        scope="user",
        name="alice",
        metric="calls",
        period="hour",
        hard_cap="1",
        soft_cap=None,
    )
    info = world.run("helper")
    assert info.status == "failed"
    assert "user budget: the hourly calls hard cap 1 calls is reached" in (info.error or "")
    assert len(server.requests) == 1
    assert len(audit_actions(world, "budget.soft_cap")) == 2  # org cost and team tokens
    with world.platform.db.session() as session:
        counters = list(session.scalars(select(BudgetCounter)))
        used = session.scalar(
            select(func.sum(UsageRecord.input_tokens + UsageRecord.output_tokens))
        )
        cost = session.scalar(select(func.sum(UsageRecord.cost_nano_usd)))
    assert sorted(c.spent for c in counters) == sorted([1, used, cost])
    assert all(c.reserved == 0 for c in counters)  # the refused call held nothing


def test_a_settlement_that_rolls_back_gives_the_reservation_back(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world = make_world(scripted(tool_turns()).base_url)
    world.save_agent(agent_yaml())
    budgets = world.platform.budgets
    for scope, name in (("org", "acme"), ("user", "alice")):
        budgets.set(
            world.admin,
            scope=scope,
            name=name,
            metric="cost",
            period="day",
            hard_cap="10",
            soft_cap=None,
        )
    guard = world.platform.budget_guard
    agent = world.platform.agents.get(world.alice, "helper")
    scope = BudgetScope(
        org_id=world.alice.org_id,
        team_id=world.alice.team_id,
        user_id=world.alice.user_id,
        agent_id=agent.id,
        run_id="run_x",
    )
    spec = parse_spec(agent_yaml())
    call = PlannedCall(kind="model", scope=scope, fingerprint="f", estimate_nano_usd=1000)

    def counters() -> list[tuple[int, int]]:
        with world.platform.db.session() as session:
            return sorted((c.spent, c.reserved) for c in session.scalars(select(BudgetCounter)))

    reservation = guard.reserve(call, spec, RunTotals())
    assert counters() == [(0, 1000), (0, 1000)]
    with pytest.raises(RuntimeError), world.platform.db.session() as session:
        guard.settle(session, reservation, cost_nano_usd=700, tokens=10)
        raise RuntimeError("the usage record could not be stored")
    assert counters() == [(0, 0), (0, 0)]
    reservation = guard.reserve(call, spec, RunTotals())
    with world.platform.db.session() as session:
        guard.settle(session, reservation, cost_nano_usd=700, tokens=10)
    assert counters() == [(700, 0), (700, 0)]
