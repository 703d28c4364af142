"""No side door: only the gateway calls providers and tools, and it asks every time."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

import meshclaw
from meshclaw.policy.authorizer import AuthzRequest, Decision, SpecGrantAuthorizer
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.store.models import AuditEvent, UsageRecord
from tests.conftest import World, agent_yaml

SRC = Path(meshclaw.__file__).parent
GATEWAY = SRC / "runtime" / "gateway.py"
GUARDED = {"complete", "call_tool"}
"""``ModelProvider.complete`` and ``Connector.call_tool``."""
MCP_WIRE = SRC / "connectors" / "_mcp_session.py"
"""Inside ``McpConnector.call_tool`` (so already behind the gateway), the MCP SDK's own
``Client.call_tool`` sends the request on the wire; only on the SDK client object."""
NOTIFIER = SRC / "notify" / "deliver.py"
"""The platform's own messages (soft caps, approvals waiting): no agent, no run, so no
gateway; limited to ``notify.deliver.MESSAGING_TOOLS`` and audited there."""


def test_only_the_gateway_calls_providers_and_tools() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        if path == GATEWAY:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in GUARDED
            ):
                on_sdk_client = (
                    isinstance(node.func.value, ast.Name) and node.func.value.id == "client"
                )
                if path == MCP_WIRE and node.func.attr == "call_tool" and on_sdk_client:
                    continue
                if path == NOTIFIER and node.func.attr == "call_tool":
                    continue
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} .{node.func.attr}()")
    assert offenders == []
    assert _calls(NOTIFIER, "call_tool") == 1  # the one send, behind the tool allow-list
    gateway_calls = {
        node.func.attr
        for node in ast.walk(ast.parse(GATEWAY.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert "call_tool" in gateway_calls  # the guard is looking at the right names


class RecordingAuthorizer:
    def __init__(self) -> None:
        self.inner = SpecGrantAuthorizer()
        self.calls: list[tuple[str, str, bool]] = []

    def authorize(self, request: AuthzRequest) -> Decision:
        decision = self.inner.authorize(request)
        has_args = "arguments" in request.context
        self.calls.append((request.action, request.resource, has_args))
        return decision


def test_every_model_and_tool_call_is_authorised_metered_and_audited(
    scripted: Callable[[dict[str, Any]], ScriptedServer], make_world: Callable[..., World]
) -> None:
    server = scripted(
        {
            "turns": [
                {"reply": {"tool_calls": [{"name": "clock.now", "arguments": {}}] * 2}},
                {
                    "reply": {
                        "tool_calls": [
                            {"name": "notes.write", "arguments": {"title": "x", "body": "y"}}
                        ]
                    }
                },
                {"reply": {"content": "done"}},
            ]
        }
    )
    world = make_world(server.base_url)
    world.save_agent(agent_yaml())
    authorizer = RecordingAuthorizer()
    info = world.run("helper", authorizer=authorizer)
    assert info.status == "succeeded", info.error

    model_calls = len(server.requests)
    asked = [c for c in authorizer.calls if c[0] == "model.invoke"]
    tool_asks = [c for c in authorizer.calls if c[0].startswith("tool.") and c[2]]
    assert len(asked) == model_calls == 3
    assert sorted(c[1] for c in tool_asks) == [
        "tool:clock.now",
        "tool:clock.now",
        "tool:notes.write",
    ]
    with world.platform.db.session() as session:
        usage = session.scalars(select(UsageRecord.kind).where(UsageRecord.run_id == info.id)).all()
        audited = session.scalars(select(AuditEvent.action)).all()
    assert sorted(usage) == ["model"] * 3 + ["tool"] * 3
    assert audited.count("model.invoke") == 3
    assert audited.count("tool.read") == 2 and audited.count("tool.write") == 1


def _calls(path: Path, name: str) -> int:
    return sum(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == name
        for node in ast.walk(ast.parse(path.read_text()))
    )
