"""One AgentDojo suite's tools as an MCP server (the official ``mcp`` SDK, stdio).

    python -m benchmarks._agentdojo.server banking [--version v1.2.2]

Each tool keeps AgentDojo's name, description and JSON Schema; annotations say what
``catalog`` declares: ``readOnlyHint`` (MeshClaw needs a write grant otherwise) and
``openWorldHint`` (results from outside the org). A call runs AgentDojo's own function
on the suite's default environment.

Environments: a run (the part of the call's idempotency key before the last ``:``)
gets its own fresh copy of the suite's environment, so one server serves every task of
a replay without one task's writes leaking into the next.
"""

from __future__ import annotations

import argparse
from typing import Any

import anyio
import mcp_types as types
from agentdojo.agent_pipeline.tool_execution import tool_result_to_str
from agentdojo.functions_runtime import FunctionsRuntime, TaskEnvironment
from agentdojo.task_suite.load_suites import get_suite
from agentdojo.task_suite.task_suite import TaskSuite
from benchmarks._agentdojo.catalog import tool
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

IDEMPOTENCY_META_KEY = "io.meshclaw/idempotency-key"
UNTRUSTED_META_KEY = "io.meshclaw/untrusted"
DEFAULT_VERSION = "v1.2.2"


def tool_list(suite: TaskSuite[Any], suite_name: str) -> list[types.Tool]:
    out = []
    for function in suite.tools:
        declared = tool(suite_name, function.name)
        out.append(
            types.Tool(
                name=function.name,
                description=function.description,
                input_schema=function.parameters.model_json_schema(),
                annotations=types.ToolAnnotations(
                    read_only_hint=not declared.write,
                    destructive_hint=declared.write,
                    open_world_hint=declared.outside,
                ),
            )
        )
    return out


def build(suite_name: str, version: str = DEFAULT_VERSION) -> Server[Any]:
    suite = get_suite(version, suite_name)
    runtime = FunctionsRuntime(suite.tools)
    tools = tool_list(suite, suite_name)
    environments: dict[str, TaskEnvironment] = {}

    def environment(key: str) -> TaskEnvironment:
        run = key.rpartition(":")[0] or key
        if run not in environments:
            environments.clear()  # one run at a time is all a replay needs
            environments[run] = suite.load_and_inject_default_environment({})
        return environments[run]

    async def list_tools(
        ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        meta: dict[str, Any] = dict(params.meta or {})
        key = str(meta.get(IDEMPOTENCY_META_KEY) or "default:0")
        result, error = runtime.run_function(environment(key), params.name, params.arguments or {})
        text = error if error is not None else tool_result_to_str(result)
        outside = tool(suite_name, params.name).outside
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)],
            is_error=error is not None,
            # Outside content, per result: McpConnector turns this into ``untrusted``.
            meta={UNTRUSTED_META_KEY: True} if outside else None,
        )

    return Server(
        f"agentdojo-{suite_name}",
        version=version,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def serve(suite_name: str, version: str) -> None:
    server = build(suite_name, version)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=["workspace", "slack", "banking", "travel"])
    parser.add_argument("--version", default=DEFAULT_VERSION)
    args = parser.parse_args()
    anyio.run(serve, args.suite, args.version)


if __name__ == "__main__":
    main()
