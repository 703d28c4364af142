"""The policy judges the call the server will run, its input schema's defaults included.

A mail read without ``folder`` reads the server's default folder (INBOX). A grant held
to ``folder:Archive`` must therefore refuse it, not wave it through because the model
left the argument out; and the server must receive the folder the policy saw.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from meshclaw.connectors.base import ToolContext, ToolDefinition, ToolResult
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.store.models import RunStep
from tests.conftest import World

Start = Callable[[dict[str, Any]], ScriptedServer]

SPEC = """\
name: archivist
owner: alice
model: {provider: scripted, model: test-model}
instructions: Read the archive.
tools:
  - {name: mailbox.read, scope: read, targets: ["folder:Archive"]}
budget: {max_steps: 6, timeout_seconds: 30}
"""

READ = ToolDefinition(
    name="read",
    description="Read the newest mail of a folder.",
    input_schema={
        "type": "object",
        "properties": {
            "folder": {"type": "string", "default": "INBOX"},
            "limit": {"type": "integer", "default": 20},
        },
    },
    targets={"folder": "folder"},
)


class _Mailbox:
    name = "mailbox"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def list_tools(self) -> list[ToolDefinition]:
        return [READ]

    async def call_tool(self, tool: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        self.calls.append(arguments)
        return ToolResult(content=f"3 messages in {arguments.get('folder', 'INBOX')}")


def _run(scripted: Start, make_world: Callable[..., World], arguments: dict[str, Any]) -> Any:
    server = scripted(
        {
            "turns": [
                {"reply": {"tool_calls": [{"name": "mailbox.read", "arguments": arguments}]}},
                {"reply": {"content": "done"}},
            ]
        }
    )
    world = make_world(server.base_url)
    world.save_agent(SPEC)
    mailbox = _Mailbox()
    run_id = world.start_run("archivist")
    asyncio.run(world.execute(run_id, connectors=ConnectorRegistry([mailbox])))
    with world.platform.db.session() as session:
        step = session.scalars(
            select(RunStep).where(RunStep.run_id == run_id, RunStep.kind == "tool")
        ).one()
        return mailbox.calls, step.status, step.decision


def test_a_left_out_argument_is_judged_by_its_default(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    calls, status, decision = _run(scripted, make_world, {})

    assert calls == []  # INBOX is outside the grant's folders
    assert status == "denied"
    assert decision is not None and "deny" in decision.lower()


def test_the_server_receives_the_arguments_the_policy_judged(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    calls, status, _ = _run(scripted, make_world, {"folder": "Archive"})

    assert status == "ok"
    assert calls == [{"folder": "Archive", "limit": 20}]


def test_with_defaults_fills_only_what_is_left_out() -> None:
    assert READ.with_defaults({"folder": "Sent"}) == {"folder": "Sent", "limit": 20}
    assert READ.policy_context({})["targets"] == ["folder:INBOX"]
    bare = ToolDefinition(name="x", description="", input_schema={"type": "object"})
    arguments = {"a": 1}
    assert bare.with_defaults(arguments) is arguments
