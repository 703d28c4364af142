"""How steps are written: every call's end is stored before the run's next call is made,
at once while another call is in flight, and a crash in between loses only that call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, text, update

from meshclaw.connectors.base import ToolContext, ToolDefinition, ToolResult
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.metering.models import BudgetCounter
from meshclaw.providers.base import Message, ModelRequest
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.store.models import AuditEvent, Run, RunStep, UsageRecord
from meshclaw.workers.leases import Leases
from tests.conftest import FAST_RETRY, World, agent_yaml

Start = Callable[[dict[str, Any]], ScriptedServer]


def tool(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def stored(world: World, run_id: str) -> dict[str, Any]:
    """What another connection sees of a run: steps, usage per step, audited steps."""
    with world.platform.db.session() as session:
        steps = session.execute(
            select(RunStep.id, RunStep.seq, RunStep.kind, RunStep.status)
            .where(RunStep.run_id == run_id)
            .order_by(RunStep.seq)
        ).all()
        metered = set(
            session.scalars(select(UsageRecord.step_id).where(UsageRecord.run_id == run_id))
        )
        audited = {
            e.details["step"]
            for e in session.scalars(select(AuditEvent).where(AuditEvent.resource != ""))
            if e.details.get("run_id") == run_id and "step" in e.details
        }
    return {
        "steps": [(s.seq, s.kind, s.status) for s in steps],
        "metered": [s.seq for s in steps if s.id in metered],
        "audited": sorted(audited),
    }


class Probe:
    """Tools that look at the store while they run, through another connection."""

    name = "probe"

    def __init__(self, world: World) -> None:
        self.world = world
        self.seen: list[dict[str, Any]] = []
        self.slow_started = asyncio.Event()

    async def list_tools(self) -> list[ToolDefinition]:
        return [
            ToolDefinition(name="look", description="Look."),
            ToolDefinition(name="fast", description="Fast."),
            ToolDefinition(name="slow", description="Slow."),
        ]

    async def call_tool(self, tool: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        if tool == "look":
            self.seen.append(stored(self.world, ctx.run_id))
            return ToolResult(content="looked")
        if tool == "fast":  # ends while the slow call is in flight
            async with asyncio.timeout(5):
                await self.slow_started.wait()
            return ToolResult(content="fast")
        self.slow_started.set()
        async with asyncio.timeout(5):  # until the fast call's end is stored
            while ("tool", "ok") not in {
                (kind, status) for _, kind, status in stored(self.world, ctx.run_id)["steps"]
            }:
                await asyncio.sleep(0.01)
        return ToolResult(content="saw the fast call's end")

    async def aclose(self) -> None:
        return None


def test_each_call_is_stored_metered_and_audited_before_the_next_call_is_made(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted(
        {
            "turns": [
                {"reply": {"tool_calls": [tool("probe.look")]}},
                {"reply": {"tool_calls": [tool("probe.look", again=True)]}},
                {"reply": {"content": "done"}},
            ]
        }
    )
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=(("probe.*", "read"),)))
    probe = Probe(world)
    info = world.run("helper", connectors=ConnectorRegistry([probe]))
    assert info.status == "succeeded", info.error

    first, second = probe.seen
    # Each tool call sees every earlier call ended, metered and audited, and itself running.
    assert first == {
        "steps": [(1, "model", "ok"), (2, "tool", "running")],
        "metered": [1],
        "audited": [1],
    }
    assert second == {
        "steps": [
            (1, "model", "ok"),
            (2, "tool", "ok"),
            (3, "model", "ok"),
            (4, "tool", "running"),
        ],
        "metered": [1, 2, 3],
        "audited": [1, 2, 3],
    }
    # The last call's end is stored with the run's end.
    assert stored(world, info.id) == {
        "steps": [(seq, kind, "ok") for seq, kind, _ in second["steps"]] + [(5, "model", "ok")],
        "metered": [1, 2, 3, 4, 5],
        "audited": [1, 2, 3, 4, 5],
    }
    assert info.step_count == 5


def test_a_call_that_ends_while_another_is_in_flight_is_stored_at_once(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted(
        {
            "turns": [
                {"reply": {"tool_calls": [tool("probe.fast"), tool("probe.slow")]}},
                {"reply": {"content": "done"}},
            ]
        }
    )
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=(("probe.*", "read"),)))
    info = world.run("helper", connectors=ConnectorRegistry([Probe(world)]))
    assert info.status == "succeeded", info.error
    assert server.requests[1]["messages"][-1]["content"] == "saw the fast call's end"


def test_a_crash_right_after_a_model_call_loses_only_that_call(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted(
        {
            "turns": [
                {"reply": {"tool_calls": [tool("clock.now")]}},
                {"reply": {"content": "done"}},
            ]
        }
    )
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=(("clock.now", "read"),)))
    run_id = world.start_run("helper")

    async def crash_then_resume() -> str:
        first = world.platform.build_gateway(retry=FAST_RETRY)
        ctx = world.platform.executor(first)._context(run_id)
        ctx.journal.write_behind = True  # as the executor runs it
        request = ModelRequest(
            model="test-model",
            messages=(
                Message(role="system", content="You help."),
                Message(role="user", content="go"),
            ),
            tools=await first.offered_tools(ctx),
        )
        await first.invoke_model(ctx, request)
        assert ctx.journal.pending is not None  # ended, to be stored with the next write
        await first.aclose()  # ... which never comes: the worker dies here

        second = world.platform.build_gateway(retry=FAST_RETRY)
        try:
            end = await world.platform.executor(second).execute(run_id)
        finally:
            await second.aclose()
        return end.status

    assert asyncio.run(crash_then_resume()) == "succeeded"
    # The call whose end was not stored is made again and metered once, like a call cut off.
    assert stored(world, run_id) == {
        "steps": [(1, "model", "lost"), (2, "model", "ok"), (3, "tool", "ok"), (4, "model", "ok")],
        "metered": [2, 3, 4],
        "audited": [2, 3, 4],
    }
    assert len(server.requests) == 3
    with world.platform.db.engine.connect() as conn:  # SQL NULL, not the JSON text null
        lost = conn.execute(text("SELECT response IS NULL FROM run_steps WHERE seq = 1")).scalar()
    assert lost == 1


class HeldLease:
    owner = "worker-a"
    attempt = 1  # the first claim

    async def keep(self) -> None:
        await asyncio.sleep(3600)

    def release(self) -> bool:
        return True


def test_a_call_taken_over_by_another_worker_gives_its_budget_back(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted({"turns": [{"reply": {"content": "late"}, "delay_ms": 1000}]})
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=()))
    world.platform.budgets.set(
        world.admin,
        scope="user",
        name="alice",
        metric="cost",
        period="day",
        hard_cap="10",
        soft_cap=None,
    )
    run_id = world.platform.runs.create(world.alice, "helper", "go").id
    assert Leases(world.platform.db).claim(run_id, "worker-a") is not None

    async def superseded() -> str:
        gateway = world.platform.build_gateway(retry=FAST_RETRY)
        try:
            task = asyncio.create_task(
                world.platform.executor(gateway).execute(run_id, lease=HeldLease())
            )
            async with asyncio.timeout(5):
                while not server.requests:  # the model call is in flight, its budget held
                    await asyncio.sleep(0.01)
            with world.platform.db.session() as session:  # worker B takes the run over
                session.execute(update(Run).where(Run.id == run_id).values(lease_owner="worker-b"))
                session.execute(
                    update(RunStep).where(RunStep.run_id == run_id).values(status="lost")
                )
                assert [c.reserved > 0 for c in session.scalars(select(BudgetCounter))] == [True]
            return (await task).status
        finally:
            await gateway.aclose()

    assert asyncio.run(superseded()) == "lost"
    with world.platform.db.session() as session:
        assert [(c.spent, c.reserved) for c in session.scalars(select(BudgetCounter))] == [(0, 0)]
    assert stored(world, run_id) == {"steps": [(1, "model", "lost")], "metered": [], "audited": []}
