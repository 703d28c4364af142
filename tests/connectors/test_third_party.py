"""Third-party MCP servers, unchanged, driven by a real agent run through the gateway.

``mcp-server-time`` comes from PyPI (a dev dependency); the npm servers are installed
into ``tests/connectors/thirdparty/node_modules`` by ``.ci/run`` (``npm ci``). Locally
a missing server skips its test with the command to install it; under CI=true it fails.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshclaw.connectors.approvals import ToolApprovals
from meshclaw.connectors.config import ConnectorConfig
from meshclaw.connectors.mcp import McpConnector
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.providers.scripted import ScriptedServer
from tests.conftest import World, agent_yaml
from tests.connectors.conftest import HERE, require

NPM_BIN = HERE / "thirdparty" / "node_modules" / ".bin"
INSTALL_HINT = "npm ci --prefix tests/connectors/thirdparty"


def npm_server(name: str) -> str:
    path = NPM_BIN / name
    require(shutil.which("node") is not None, "node is not installed")
    require(path.exists(), f"{name} is not installed: run `{INSTALL_HINT}`")
    return str(path)


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def mcp(world: World, name: str, **config: Any) -> McpConnector:
    approvals = ToolApprovals(world.platform.db)
    return McpConnector(
        name,
        ConnectorConfig.model_validate({"approval": "first_use", **config}),
        approvals=approvals,
    )


def tool_steps(world: World, run_id: str) -> dict[str, Any]:
    steps = world.platform.runs.steps(world.alice, run_id)
    return {s.name: s for s in steps if s.kind == "tool"}


def test_an_agent_uses_mcp_server_time_everything_filesystem_and_memory(
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
    tmp_path: Path,
) -> None:
    require(importlib.util.find_spec("mcp_server_time") is not None, "pip install mcp-server-time")
    everything = npm_server("mcp-server-everything")
    filesystem = npm_server("mcp-server-filesystem")
    memory = npm_server("mcp-server-memory")
    files = tmp_path / "files"
    files.mkdir()
    (files / "readme.txt").write_text("hello from a file")

    server = scripted(
        {
            "turns": [
                {
                    "reply": {
                        "tool_calls": [
                            call("time.get_current_time", timezone="Europe/Paris"),
                            call("everything.get-sum", a=2, b=40),
                            call("fs.read_text_file", path=str(files / "readme.txt")),
                        ]
                    }
                },
                {
                    "reply": {
                        "tool_calls": [
                            call("fs.write_file", path=str(files / "out.txt"), content="done"),
                            call(
                                "memory.create_entities",
                                entities=[
                                    {
                                        "name": "release",
                                        "entityType": "event",
                                        "observations": ["ships friday"],
                                    }
                                ],
                            ),
                        ]
                    }
                },
                {"reply": {"tool_calls": [call("memory.search_nodes", query="release")]}},
                {"reply": {"content": "All four servers answered."}},
            ]
        }
    )
    world = make_world(server.base_url)
    world.save_agent(
        agent_yaml(
            tools=(
                ("time.*", "read"),
                ("everything.get-sum", "read"),
                ("fs.*", "write"),
                ("memory.*", "write"),
            ),
            max_steps=6,
            timeout=90,
        )
    )
    registry = ConnectorRegistry(
        [
            mcp(
                world,
                "time",
                command=sys.executable,
                args=["-m", "mcp_server_time", "--local-timezone", "UTC"],
            ),
            mcp(world, "everything", command=everything, args=["stdio"]),
            mcp(world, "fs", command=filesystem, args=[str(files)]),
            mcp(
                world,
                "memory",
                command=memory,
                env={"MEMORY_FILE_PATH": str(tmp_path / "memory.jsonl")},
            ),
        ]
    )
    info = world.run("helper", "use every server", connectors=registry)
    assert info.status == "succeeded", info.error
    assert info.output == "All four servers answered."

    steps = tool_steps(world, info.id)
    assert {name: s.status for name, s in steps.items()} == {
        "time.get_current_time": "ok",
        "everything.get-sum": "ok",
        "fs.read_text_file": "ok",
        "fs.write_file": "ok",
        "memory.create_entities": "ok",
        "memory.search_nodes": "ok",
    }

    def response(name: str) -> dict[str, Any]:
        found = steps[name].response
        assert found is not None
        return found

    time_data = response("time.get_current_time")["data"]["structured"]
    assert time_data["timezone"] == "Europe/Paris"
    assert "42" in response("everything.get-sum")["content"]
    assert response("fs.read_text_file")["content"] == "hello from a file"
    assert (files / "out.txt").read_text() == "done"
    # Writes carry evidence for the outcomes capability.
    assert response("fs.write_file")["data"]["evidence"]["server"] == "fs"
    assert "ships friday" in response("memory.search_nodes")["content"]
    # The model was offered exactly the granted tools, under their namespaced names.
    offered = {t["function"]["name"] for t in server.requests[0]["tools"]}
    assert "time__get_current_time" in offered and "everything__get-sum" in offered
    assert "everything__echo" not in offered  # not granted
    assert "fs__write_file" in offered and "memory__delete_entities" in offered
    json.dumps([s.response for s in steps.values()])  # the trace is plain JSON


def test_a_read_grant_never_offers_a_third_party_write_tool(
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
    tmp_path: Path,
) -> None:
    filesystem = npm_server("mcp-server-filesystem")
    server = scripted({"turns": [{"reply": {"content": "read only"}}]})
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=(("fs.*", "read"),), timeout=60))
    registry = ConnectorRegistry([mcp(world, "fs", command=filesystem, args=[str(tmp_path)])])
    info = world.run("helper", connectors=registry)
    assert info.status == "succeeded", info.error
    offered = {t["function"]["name"] for t in server.requests[0]["tools"]}
    assert "fs__read_text_file" in offered
    assert "fs__write_file" not in offered  # annotated readOnlyHint: false
    assert "fs__move_file" not in offered and "fs__edit_file" not in offered
