"""The agent loop end to end against the real scripted model server on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from meshclaw.connectors.base import ToolContext, ToolDefinition, ToolResult
from meshclaw.connectors.builtin import ClockConnector
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.metering.prices import to_nano
from meshclaw.providers.base import Usage
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.providers.scripted.tokens import completion_tokens, prompt_tokens
from meshclaw.store.models import AuditEvent, RunStep, UsageRecord
from tests.conftest import World, agent_yaml

Start = Callable[[dict[str, Any]], ScriptedServer]


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def usage_rows(world: World, run_id: str) -> list[UsageRecord]:
    with world.platform.db.session() as session:
        return list(
            session.scalars(
                select(UsageRecord)
                .where(UsageRecord.run_id == run_id)
                .order_by(UsageRecord.created_at)
            )
        )


def test_run_calls_tools_and_meters_the_exact_tokens_served(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted(
        {
            "turns": [
                {"reply": {"content": "checking", "tool_calls": [call("clock.now", tz="UTC")]}},
                {
                    "reply": {
                        "tool_calls": [call("notes.write", title="t", body="b")],
                        "reasoning_tokens": 7,
                    }
                },
                {"reply": {"content": "All done."}},
            ]
        }
    )
    world = make_world(server.base_url)
    world.save_agent(agent_yaml())
    info = world.run("helper", "write a note")

    assert info.status == "succeeded", info.error
    assert info.output == "All done."
    steps = world.platform.runs.steps(world.alice, info.id)
    assert [(s.kind, s.name, s.status) for s in steps] == [
        ("model", "test-model", "ok"),
        ("tool", "clock.now", "ok"),
        ("model", "test-model", "ok"),
        ("tool", "notes.write", "ok"),
        ("model", "test-model", "ok"),
    ]
    served = server.requests
    assert len(served) == 3
    model_rows = [r for r in usage_rows(world, info.id) if r.kind == "model"]
    expected_in = [prompt_tokens(body) for body in served]
    assert [r.input_tokens for r in model_rows] == expected_in
    args = json.dumps({"title": "t", "body": "b"})
    assert model_rows[1].output_tokens == completion_tokens(None, [("notes__write", args)], 7)
    assert model_rows[1].reasoning_tokens == 7
    price = world.platform.prices
    for row in model_rows:
        usage = Usage(input_tokens=row.input_tokens, output_tokens=row.output_tokens)
        cost = price.cost_usd("scripted", "test-model", usage)
        assert cost is not None and row.cost_nano_usd == to_nano(cost)
    assert info.input_tokens == sum(expected_in)
    assert all(r.org_id and r.team_id and r.user_id and r.agent_version == 1 for r in model_rows)
    assert all(r.trigger == "manual" for r in model_rows)


def test_streaming_usage_comes_from_the_last_chunk(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted({"turns": [{"reply": {"content": "streamed answer", "cached_tokens": 3}}]})
    world = make_world(server.base_url)
    spec = agent_yaml(tools=()).replace(
        "model: test-model}", "model: test-model, parameters: {stream: true}}"
    )
    world.save_agent(spec)
    info = world.run("helper")
    assert info.status == "succeeded", info.error
    assert info.output == "streamed answer"
    (row,) = usage_rows(world, info.id)
    assert row.input_tokens == prompt_tokens(server.requests[0])
    assert row.cached_tokens == 3
    assert row.output_tokens == completion_tokens("streamed answer")
    assert not row.estimated


def test_retries_a_scripted_429_and_meters_once(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted(
        {
            "turns": [
                {"errors_before": [{"status": 429, "retry_after": 0}], "reply": {"content": "ok"}}
            ]
        }
    )
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=()))
    info = world.run("helper")
    assert info.status == "succeeded", info.error
    assert len(server.requests) == 2
    (step,) = world.platform.runs.steps(world.alice, info.id)
    assert step.response is not None
    assert [a["status"] for a in step.response["attempts"]] == [429]
    assert len(usage_rows(world, info.id)) == 1


def test_gives_up_after_repeated_server_errors_without_half_written_usage(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted(
        {"turns": [{"errors_before": [{"status": 500}] * 6, "reply": {"content": "x"}}]}
    )
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=()))
    info = world.run("helper")
    assert info.status == "failed"
    assert info.error is not None and "gave up after 4 attempts" in info.error
    assert "HTTP 500" in info.error
    (step,) = world.platform.runs.steps(world.alice, info.id)
    assert step.status == "error"
    assert usage_rows(world, info.id) == []


def test_malformed_reply_is_retried(scripted: Start, make_world: Callable[..., World]) -> None:
    server = scripted(
        {"turns": [{"errors_before": [{"malformed": True}], "reply": {"content": "ok"}}]}
    )
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=()))
    info = world.run("helper")
    assert info.status == "succeeded", info.error
    assert len(server.requests) == 2


def test_unreachable_model_server_fails_with_a_clear_reason(
    make_world: Callable[..., World],
) -> None:
    world = make_world("http://127.0.0.1:9/v1")  # discard port: nothing listens
    world.save_agent(agent_yaml(tools=()))
    info = world.run("helper")
    assert info.status == "failed"
    assert info.error is not None and "unreachable" in info.error


def test_unknown_provider_fails_the_run_clearly(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted({"turns": [{"reply": {"content": "x"}}]})
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=()).replace("provider: scripted", "provider: nope"))
    info = world.run("helper")
    assert info.status == "failed"
    assert info.error is not None and "unknown provider 'nope'" in info.error
    assert server.requests == []


class ExplodingConnector:
    name = "disk"

    async def list_tools(self) -> list[ToolDefinition]:
        return [ToolDefinition(name="save", description="Save.", action="write")]

    async def call_tool(self, tool: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        raise RuntimeError("disk full")


def test_a_tool_that_raises_is_reported_to_the_model_and_the_run_goes_on(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted(
        {"turns": [{"reply": {"tool_calls": [call("disk.save")]}}, {"reply": {"content": "sorry"}}]}
    )
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=(("disk.save", "write"),)))
    info = world.run("helper", connectors=ConnectorRegistry([ExplodingConnector()]))
    assert info.status == "succeeded"
    steps = world.platform.runs.steps(world.alice, info.id)
    assert steps[1].status == "error" and steps[1].error == "error: disk full"
    tool_message = server.requests[1]["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["content"] == "error: disk full"


class BarrierConnector:
    """Two tools that only finish if both are in flight at once."""

    name = "pair"

    def __init__(self) -> None:
        self.barrier = asyncio.Barrier(2)

    async def list_tools(self) -> list[ToolDefinition]:
        return [
            ToolDefinition(name="left", description="L"),
            ToolDefinition(name="right", description="R"),
        ]

    async def call_tool(self, tool: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        async with asyncio.timeout(5):
            await self.barrier.wait()
        return ToolResult(content=tool)


def test_parallel_tool_calls_run_concurrently(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted(
        {
            "turns": [
                {"reply": {"tool_calls": [call("pair.left"), call("pair.right")]}},
                {"reply": {"content": "both"}},
            ]
        }
    )
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=(("pair.*", "read"),)))
    info = world.run("helper", connectors=ConnectorRegistry([BarrierConnector()]))
    assert info.status == "succeeded", info.error
    statuses = [s.status for s in world.platform.runs.steps(world.alice, info.id)]
    assert statuses == ["ok", "ok", "ok", "ok"]
    assert [m["content"] for m in server.requests[1]["messages"][-2:]] == ["left", "right"]


def test_cancellation_mid_run_stops_the_model_call(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted({"turns": [{"delay_ms": 20_000, "reply": {"content": "too late"}}]})
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=()))
    run_id = world.start_run("helper")

    async def scenario() -> None:
        task = asyncio.create_task(world.execute(run_id))
        async with asyncio.timeout(10):
            while not server.requests:  # the model call is in flight
                await asyncio.sleep(0.01)
            world.platform.runs.cancel(world.alice, run_id)
            await task

    asyncio.run(scenario())
    info = world.platform.runs.get(world.alice, run_id)
    assert info.status == "cancelled"
    assert info.output is None
    (step,) = world.platform.runs.steps(world.alice, run_id)
    assert step.status == "cancelled"


def test_wall_clock_timeout_fails_the_run(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted({"turns": [{"delay_ms": 20_000, "reply": {"content": "slow"}}]})
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=(), timeout=0.5))
    info = world.run("helper")
    assert info.status == "failed"
    assert info.error == "timed out after 0.5 s"


def test_token_budget_refuses_the_next_call_before_it_is_made(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted(
        {"turns": [{"reply": {"tool_calls": [call("clock.now")]}}, {"reply": {"content": "never"}}]}
    )
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=(("clock.now", "read"),), extra=", max_tokens_per_run: 10"))
    info = world.run("helper")
    assert info.status == "failed"
    assert info.error is not None and "BudgetExceeded" in info.error
    assert len(server.requests) == 1
    steps = world.platform.runs.steps(world.alice, info.id)
    assert steps[-1].status == "denied" and steps[-1].error is not None
    assert steps[-1].error.startswith("budget:")


def test_max_steps_ends_a_tool_loop(scripted: Start, make_world: Callable[..., World]) -> None:
    server = scripted(
        {
            "mode": "match",
            "turns": [{"match": {"any": True}, "reply": {"tool_calls": [call("clock.now")]}}],
        }
    )
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=(("clock.now", "read"),), max_steps=3))
    info = world.run("helper")
    assert info.status == "failed"
    assert info.error is not None and "after 3 turns" in info.error
    assert len(server.requests) == 3


def test_read_only_grant_hides_write_tools_from_the_model(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted({"turns": [{"reply": {"content": "ok"}}]})
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=(("notes.*", "read"), ("clock.now", "read"))))
    world.run("helper")
    offered = sorted(t["function"]["name"] for t in server.requests[0]["tools"])
    assert offered == ["clock__now", "notes__list"]


def test_model_calling_an_unoffered_tool_is_denied_and_audited(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted({"turns": [{"reply": {"content": "ok"}}]})
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=(("clock.now", "read"),)))
    run_id = world.start_run("helper")

    async def scenario() -> None:
        from meshclaw.providers.base import ToolCall
        from meshclaw.runtime.executor import RunExecutor

        gateway = world.platform.build_gateway()
        executor: RunExecutor = world.platform.executor(gateway)
        ctx = executor._context(run_id)
        await gateway.offered_tools(ctx)
        result = await gateway.invoke_tool(ctx, ToolCall(id="c1", name="notes.write", arguments={}))
        assert result.is_error and "no tool named notes.write" in result.content
        await gateway.aclose()

    asyncio.run(scenario())
    (step,) = world.platform.runs.steps(world.alice, run_id)
    assert step.status == "denied"
    with world.platform.db.session() as session:
        denied = session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.outcome == "denied")
        )
    assert denied == 1


@pytest.mark.parametrize("tz", ["Mars/Olympus"])
def test_clock_rejects_unknown_zone(tz: str) -> None:
    ctx = ToolContext(
        org_id="o", user_id="u", agent_id="a", run_id="r", step_id="s", idempotency_key="k"
    )
    with pytest.raises(Exception, match="unknown time zone"):
        asyncio.run(ClockConnector().call_tool("now", {"tz": tz}, ctx))


def test_every_step_is_persisted_while_the_run_is_in_flight(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted(
        {
            "turns": [
                {"reply": {"tool_calls": [call("clock.now")]}},
                {"delay_ms": 20_000, "reply": {"content": "x"}},
            ]
        }
    )
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=(("clock.now", "read"),)))
    run_id = world.start_run("helper")

    async def scenario() -> list[tuple[int, str]]:
        task = asyncio.create_task(world.execute(run_id))
        async with asyncio.timeout(10):
            while len(server.requests) < 2:
                await asyncio.sleep(0.01)
            with world.platform.db.session() as session:
                seen = [
                    (s.seq, s.status)
                    for s in session.scalars(
                        select(RunStep).where(RunStep.run_id == run_id).order_by(RunStep.seq)
                    )
                ]
            world.platform.runs.cancel(world.alice, run_id)
            await task
        return seen

    seen = asyncio.run(scenario())
    assert seen == [(1, "ok"), (2, "ok"), (3, "running")]
