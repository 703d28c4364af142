"""A run continues from its persisted steps: nothing done twice, nothing lost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from meshclaw.connectors.base import ToolContext, ToolDefinition, ToolResult
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.metering.budget import CallKind, PlannedCall
from meshclaw.providers.base import Message, ModelRequest
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.runtime.context import RunContext
from meshclaw.runtime.gateway import Gateway
from meshclaw.store.models import RunStep, UsageRecord
from tests.conftest import FAST_RETRY, World, agent_yaml

Start = Callable[[dict[str, Any]], ScriptedServer]


class CountingConnector:
    """Counts side effects by idempotency key, like a careful real app would."""

    name = "counter"

    def __init__(self) -> None:
        self.keys: list[str] = []

    async def list_tools(self) -> list[ToolDefinition]:
        return [ToolDefinition(name="bump", description="Bump.", action="write")]

    async def call_tool(self, tool: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        self.keys.append(ctx.idempotency_key)
        return ToolResult(content=f"bumped {len(set(self.keys))}")

    async def aclose(self) -> None:
        return None


def first_turn(world: World, ctx: RunContext) -> ModelRequest:
    return ModelRequest(
        model="test-model",
        messages=(
            Message(role="system", content=ctx.spec.instructions),
            Message(role="user", content="go"),
        ),
    )


def setup(scripted: Start, make_world: Callable[..., World]) -> tuple[World, ScriptedServer, str]:
    server = scripted(
        {
            "turns": [
                {"reply": {"tool_calls": [{"name": "counter.bump", "arguments": {}}]}},
                {"reply": {"content": "done"}},
            ]
        }
    )
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=(("counter.bump", "write"),)))
    return world, server, world.start_run("helper")


def gateway(world: World, counter: CountingConnector) -> Gateway:
    return world.platform.build_gateway(retry=FAST_RETRY, connectors=ConnectorRegistry([counter]))


def planned(gateway: Gateway, ctx: RunContext, kind: CallKind) -> PlannedCall:
    """A call as the gateway plans it, for starting its step by hand (a crash test)."""
    return PlannedCall(kind=kind, scope=gateway._scope(ctx), fingerprint=f"{kind}:crash")


def steps(world: World, run_id: str) -> list[tuple[int, str, str]]:
    with world.platform.db.session() as session:
        rows = session.scalars(
            select(RunStep).where(RunStep.run_id == run_id).order_by(RunStep.seq)
        )
        return [(s.seq, s.kind, s.status) for s in rows]


def model_usage(world: World, run_id: str) -> int:
    with world.platform.db.session() as session:
        rows = session.scalars(
            select(UsageRecord).where(UsageRecord.run_id == run_id, UsageRecord.kind == "model")
        )
        return len(list(rows))


def test_a_tool_call_cut_off_by_a_crash_is_retried_with_the_same_idempotency_key(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world, server, run_id = setup(scripted, make_world)
    counter = CountingConnector()

    async def crash_then_resume() -> None:
        first = gateway(world, counter)
        ctx = world.platform.executor(first)._context(run_id)
        tools = await first.offered_tools(ctx)
        request = first_turn(world, ctx)
        reply = await first.invoke_model(ctx, ModelRequest(**{**request.__dict__, "tools": tools}))
        # The worker dies while the tool call is in flight: the step is started, never ended.
        (call,) = reply.tool_calls
        seq = ctx.take_step_number()
        first._start_step(
            ctx, seq, "tool", call.name, {"tool_call_id": call.id, "arguments": {}},
            planned(first, ctx, "tool"), f"tool:{call.name}",
        )  # fmt: skip
        counter.keys.append(ctx.idempotency_key(seq))  # the side effect did happen
        await first.aclose()

        second = gateway(world, counter)  # another worker picks the run up
        end = await world.platform.executor(second).execute(run_id)
        await second.aclose()
        assert end.status == "succeeded", end.error

    asyncio.run(crash_then_resume())
    assert len(counter.keys) == 2 and len(set(counter.keys)) == 1  # retried, same key
    assert steps(world, run_id) == [(1, "model", "ok"), (2, "tool", "ok"), (3, "model", "ok")]
    assert len(server.requests) == 2  # the first model turn was not made again
    assert model_usage(world, run_id) == 2
    assert server.requests[1]["messages"][-1]["content"] == "bumped 1"


def test_a_model_call_cut_off_by_a_crash_is_made_again_and_metered_once(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world, _server, run_id = setup(scripted, make_world)
    counter = CountingConnector()

    async def crash_then_resume() -> None:
        first = gateway(world, counter)
        ctx = world.platform.executor(first)._context(run_id)
        request = first_turn(world, ctx)
        from meshclaw.runtime.trace import request_summary

        first._start_step(
            ctx, ctx.take_step_number(), "model", "test-model", request_summary(request),
            planned(first, ctx, "model"), "model:scripted/test-model",
        )  # fmt: skip
        await first.aclose()
        second = gateway(world, counter)
        end = await world.platform.executor(second).execute(run_id)
        await second.aclose()
        assert end.status == "succeeded", end.error

    asyncio.run(crash_then_resume())
    assert steps(world, run_id) == [
        (1, "model", "lost"),
        (2, "model", "ok"),
        (3, "tool", "ok"),
        (4, "model", "ok"),
    ]
    assert model_usage(world, run_id) == 2
    assert len(counter.keys) == 1


def test_a_run_whose_last_turn_answered_just_ends(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world, server, run_id = setup(scripted, make_world)
    counter = CountingConnector()
    asyncio.run(world.execute(run_id, connectors=ConnectorRegistry([counter])))
    assert world.platform.runs.get(world.alice, run_id).status == "succeeded"
    requests_before = len(server.requests)

    async def again() -> None:
        gw = gateway(world, counter)
        end = await world.platform.executor(gw).execute(run_id)
        await gw.aclose()
        assert (end.status, end.output) == ("succeeded", "done")

    asyncio.run(again())
    assert len(server.requests) == requests_before
    assert len(counter.keys) == 1
