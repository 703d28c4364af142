"""The connector seam: every tool an agent can call sits behind this Protocol.

Built-in tools (``clock``, ``notes``) implement it directly; MCP connectors (the
connectors issue) implement it over the ``mcp`` client. Only the gateway calls ``call_tool``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from meshclaw.policy.arguments import call_targets

Action = Literal["read", "write"]


@dataclass(frozen=True, kw_only=True)
class ToolDefinition:
    name: str
    """Bare tool name; the gateway namespaces it as ``connector.name``."""
    description: str
    input_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    action: Action = "read"
    """``write`` tools change something outside MeshClaw and need a write grant."""
    targets: dict[str, str] = field(default_factory=dict)
    """Arguments that name what the call touches: argument (dotted if nested) -> kind.
    ``{"ticket": "ticket"}`` makes ``{"ticket": "OPS-12"}`` the target ``ticket:OPS-12``,
    which the policy checks against the grant's ``targets`` globs."""

    def with_defaults(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """``arguments`` plus every top-level ``default`` of the input schema left out.

        The policy must judge the call the server will run: a mail read without
        ``folder`` reads the server's default folder, so a grant held to other folders
        must see that folder. The gateway sends the completed arguments, so what was
        judged is what runs.
        """
        properties = self.input_schema.get("properties")
        if not isinstance(properties, dict):
            return arguments
        missing = {
            name: prop["default"]
            for name, prop in properties.items()
            if name not in arguments and isinstance(prop, dict) and "default" in prop
        }
        return {**arguments, **missing} if missing else arguments

    def policy_context(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The Cedar context of a call with ``arguments`` (defaults completed)."""
        completed = self.with_defaults(arguments)
        return {"arguments": completed, "targets": call_targets(self.targets, completed)}


@dataclass(frozen=True, kw_only=True)
class ToolContext:
    """Who is calling, for attribution and delegated credentials."""

    org_id: str
    user_id: str
    agent_id: str
    run_id: str
    step_id: str
    idempotency_key: str
    """Stable per run step: a re-executed step must not repeat its side effect."""


@dataclass(frozen=True, kw_only=True)
class ToolResult:
    content: str
    """Text handed back to the model."""
    is_error: bool = False
    data: dict[str, Any] | None = None
    """Structured result kept in the run trace (e.g. the id of what was written)."""
    untrusted: bool = False
    """The content came from outside the org (mail from outside, a web page): from now
    on the run's policy context says ``untrusted_content_seen``."""


class Connector(Protocol):
    name: str

    async def list_tools(self) -> list[ToolDefinition]: ...

    async def call_tool(self, tool: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Run ``tool``; raise on failure (the gateway turns it into a ToolError)."""
        ...


@runtime_checkable
class ListsToolsAs(Protocol):
    """A connector whose tool list depends on whose credential lists it (MCP servers).

    The registry lists tools as the run's owner, so a server reached only with
    per-user (delegated) credentials can still show its tools.
    """

    async def list_tools_as(self, user_id: str | None) -> list[ToolDefinition]: ...
