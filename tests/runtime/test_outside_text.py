"""Text from outside that PostgreSQL would refuse to store, where SQLite keeps it: NUL
characters (a model's answer, a tool's result, a trigger's message), replaced by U+FFFD
where they enter, and a tool name longer than a step's name column, clipped. Both failed
the run on PostgreSQL; now a run ends the same on either engine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from meshclaw.connectors.base import ToolContext, ToolDefinition, ToolResult
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.providers.base import ToolCall
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.runtime.gateway import MAX_CALLED_NAME
from meshclaw.store.models import Note
from meshclaw.text import REPLACEMENT, without_nul_in
from tests.conftest import World, agent_yaml

Start = Callable[[dict[str, Any]], ScriptedServer]
R = REPLACEMENT


def test_without_nul_in_replaces_every_nul_and_copies_only_what_held_one() -> None:
    clean = {"a": ["b", ("c",)], "n": 1, "none": None}
    assert without_nul_in(clean) is clean
    dirty = {"k\x00": ["x\x00y", ("\x00",), 2], "same": ["ok"]}
    cleaned = without_nul_in(dirty)
    assert cleaned == {f"k{R}": [f"x{R}y", (R,), 2], "same": ["ok"]}
    assert cleaned["same"] is dirty["same"]
    assert dirty == {"k\x00": ["x\x00y", ("\x00",), 2], "same": ["ok"]}  # not changed


def test_nul_from_the_model_and_the_input_is_stored_as_the_replacement_character(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted(
        {
            "turns": [
                {"reply": {"tool_calls": [
                    {"name": "notes.write", "arguments": {"title": "t\x00", "body": "b\x00b"}}
                ]}},
                {"reply": {"content": "All\x00done."}},
            ]
        }
    )  # fmt: skip
    world = make_world(server.base_url)
    world.save_agent(agent_yaml())
    info = world.run("helper", "note\x00this")

    assert info.status == "succeeded", info.error
    assert (info.input, info.output) == (f"note{R}this", f"All{R}done.")
    with world.platform.db.session() as session:
        note = session.scalars(select(Note).where(Note.run_id == info.id)).one()
        assert (note.title, note.body) == (f"t{R}", f"b{R}b")
    model_step = world.platform.runs.steps(world.alice, info.id)[0]
    assert model_step.response is not None
    (asked,) = model_step.response["tool_calls"]
    assert asked["arguments"] == {"title": f"t{R}", "body": f"b{R}b"}
    assert world.platform.audit_log.verify().ok


class NulConnector:
    """A tool whose result (and whose error) holds NUL, as a binary file's text might."""

    name = "disk"

    async def list_tools(self) -> list[ToolDefinition]:
        return [
            ToolDefinition(name="read", description="Read.", action="read"),
            ToolDefinition(name="fail", description="Fail.", action="read"),
        ]

    async def call_tool(self, tool: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        if tool == "fail":
            raise RuntimeError("bad\x00block")
        return ToolResult(content="PK\x03\x04\x00\x00", data={"name\x00": "a\x00b"})


def test_nul_in_a_tools_result_or_error_is_stored_and_shown_to_the_model_replaced(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted(
        {
            "turns": [
                {"reply": {"tool_calls": [{"name": "disk.read", "arguments": {}}]}},
                {"reply": {"tool_calls": [{"name": "disk.fail", "arguments": {}}]}},
                {"reply": {"content": "read it"}},
            ]
        }
    )
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=(("disk.read", "read"), ("disk.fail", "read"))))
    info = world.run("helper", connectors=ConnectorRegistry([NulConnector()]))

    assert info.status == "succeeded", info.error
    steps = world.platform.runs.steps(world.alice, info.id)
    read, failed = steps[1], steps[3]
    assert read.response is not None
    assert (read.response["content"], read.response["data"]) == (
        f"PK\x03\x04{R}{R}",
        {f"name{R}": f"a{R}b"},
    )
    assert (failed.status, failed.error) == ("error", f"error: bad{R}block")
    tool_messages = [m for body in server.requests for m in body["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages[-2:]] == [
        f"PK\x03\x04{R}{R}",
        f"error: bad{R}block",
    ]
    assert world.platform.audit_log.verify().ok


def test_a_call_to_a_tool_name_too_long_to_store_is_denied_and_stored_clipped(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    # A model may answer with any name; the step's name holds 200 characters on
    # PostgreSQL, where storing the denial failed the run.
    server = scripted({"turns": [{"reply": {"content": "ok"}}]})
    world = make_world(server.base_url)
    world.save_agent(agent_yaml())
    run_id = world.start_run("helper")

    async def call_a_long_name() -> ToolResult:
        gateway = world.platform.build_gateway()
        try:
            ctx = world.platform.executor(gateway)._context(run_id)
            await gateway.offered_tools(ctx)
            return await gateway.invoke_tool(ctx, ToolCall(id="c1", name="x" * 500, arguments={}))
        finally:
            await gateway.aclose()

    result = asyncio.run(call_a_long_name())
    clipped = "x" * (MAX_CALLED_NAME - 1) + "\N{HORIZONTAL ELLIPSIS}"
    assert result.is_error and result.content == f"error: no tool named {clipped}"
    (step,) = world.platform.runs.steps(world.alice, run_id)
    assert (step.name, step.status) == (clipped, "denied")
