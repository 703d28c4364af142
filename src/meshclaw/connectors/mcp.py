"""``McpConnector``: any MCP server, over stdio or streamable HTTP, as a MeshClaw connector.

What it adds on top of the SDK's client:

- **Approval** (rug-pull defence): every listing is hashed and recorded in
  ``ToolApprovals``; only tools whose current definition is the approved one are offered,
  and a call re-lists first, so a definition changed mid-session is caught before the
  call reaches the server.
- **Least privilege**: ``readOnlyHint: true`` makes a tool ``read``; anything else is
  ``write`` and needs a write grant.
- **Validation** of arguments against the tool's JSON Schema before the call.
- **Limits**: connect and call timeouts, result truncation with a marker.
- **Reconnects**: a server that died is started again on the next call; a read tool
  whose server died mid-call is retried once on a fresh connection, a write tool is not
  (its side effect may have happened).
- **Credentials** by reference, resolved in the connector's org per agent owner (for
  listing tools as well as calling them), handed to the server as environment (stdio)
  or headers (HTTP) and never put into messages.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from meshclaw.connectors._mcp_convert import (
    action_of,
    definition_of,
    tool_definition,
    tool_result,
    validate_arguments,
)
from meshclaw.connectors._mcp_session import McpSession, ServerGone, client_opener
from meshclaw.connectors.approvals import ToolApprovals, ToolState, definition_hash
from meshclaw.connectors.base import ToolContext, ToolDefinition, ToolResult
from meshclaw.connectors.config import ConnectorConfig
from meshclaw.connectors.credentials import Credential, CredentialStore
from meshclaw.errors import ConfigError, ToolError

Definitions = dict[str, dict[str, Any]]
WIRE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What OpenAI-style function names allow; ``connector.tool`` travels as ``connector__tool``."""


class McpConnector:
    """A connector backed by one MCP server (one connection per distinct credential)."""

    def __init__(
        self,
        name: str,
        config: ConnectorConfig,
        *,
        approvals: ToolApprovals,
        credentials: CredentialStore | None = None,
        org_id: str | None = None,
        errlog: Path | None = None,
    ) -> None:
        self.name = name
        self.org_id = org_id
        """The org the connector belongs to: its credential references resolve there."""
        self.config = config
        self._approvals = approvals
        self._credentials = credentials
        self._errlog = errlog
        self._sessions: dict[str, McpSession] = {}
        self.server: dict[str, str | None] = {}
        """Name, version and protocol version of the server at the last listing."""
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    # -- the Connector protocol ---------------------------------------------------------

    async def list_tools(self) -> list[ToolDefinition]:
        return await self.list_tools_as(None)

    async def list_tools_as(self, user_id: str | None) -> list[ToolDefinition]:
        """The approved tools only: a pending or changed tool is never shown to a model.

        Listed with ``user_id``'s delegated credential (else the reference's default),
        as calls are. A tool whose name a model API cannot carry (``[A-Za-z0-9_-]``, 64
        at most with the connector's prefix) is left out as well.
        """
        definitions, states = await self.refresh(user_id)
        return [
            tool_definition(definitions[name], self.config.targets.get(name))
            for name, state in sorted(states.items())
            if state.status == "approved" and WIRE_NAME.match(f"{self.name}__{name}")
        ]

    async def call_tool(self, tool: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        qualified = f"{self.name}.{tool}"
        for attempt in (1, 2):
            session = await self._session(ctx.user_id)
            definition: dict[str, Any] | None = None
            try:
                definition = await self._approved_definition(session, tool)
                validate_arguments(qualified, definition.get("inputSchema") or {}, arguments)
                try:
                    async with asyncio.timeout(self.config.call_timeout_seconds):
                        result = await session.call(
                            tool, arguments, idempotency_key=ctx.idempotency_key
                        )
                except TimeoutError:
                    raise ToolError(
                        f"{qualified} did not answer within {self.config.call_timeout_seconds:g} s"
                    ) from None
            except ServerGone as exc:
                await self._drop(session)
                # Nothing was sent yet, or a read (no side effect): once more, freshly connected.
                safe = definition is None or action_of(definition) == "read"
                if attempt == 1 and safe:
                    continue
                raise ToolError(
                    f"MCP server {self.name!r} went away during {qualified} ({exc}); "
                    "the call may not have completed; it reconnects on the next call"
                ) from None
            assert definition is not None
            return tool_result(
                result,
                action=action_of(definition),
                max_chars=self.config.max_result_chars,
                server=self.name,
                untrusted=self.config.untrusted,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            if session.belongs_to_running_loop():
                await session.aclose()

    # -- listing and approval -----------------------------------------------------------

    async def refresh(self, user_id: str | None = None) -> tuple[Definitions, dict[str, ToolState]]:
        """List the server's tools now, record them, and return definitions and states."""
        session = await self._session(user_id)
        try:
            definitions = await self._definitions(session)
            self.server = session.describe_server()
        except ServerGone as exc:
            await self._drop(session)
            raise ToolError(
                f"MCP server {self.name!r} went away while listing tools: {exc}"
            ) from None
        states = self._approvals.observe(
            self.name, definitions, first_use=self.config.approval == "first_use"
        )
        return definitions, states

    async def _definitions(self, session: McpSession) -> Definitions:
        async with asyncio.timeout(self.config.call_timeout_seconds):
            tools = await session.list_tools()
        return {tool.name: definition_of(tool) for tool in tools}

    async def _approved_definition(self, session: McpSession, tool: str) -> dict[str, Any]:
        """The tool's definition as the server states it now, if that is the approved one."""
        qualified = f"{self.name}.{tool}"
        definitions = await self._definitions(session)
        definition = definitions.get(tool)
        if definition is None:
            raise ToolError(f"the MCP server behind {self.name!r} no longer offers {tool!r}")
        state = self._approvals.observe(
            self.name, {tool: definition}, first_use=self.config.approval == "first_use"
        )[tool]
        if state.status == "pending":
            raise ToolError(
                f"{qualified} is not approved yet: an admin must run "
                f"`meshclaw connector approve {self.name} --tool {tool}`"
            )
        if state.status == "changed" or state.approved_hash != definition_hash(definition):
            raise ToolError(
                f"{qualified} is blocked: its definition changed since it was approved "
                f"(now {state.definition_hash[:12]}, approved {str(state.approved_hash)[:12]}); "
                f"an admin must review and re-approve it"
            )
        return definition

    # -- connections --------------------------------------------------------------------

    def _credential(self, user_id: str | None) -> Credential | None:
        if self.config.credentials is None:
            return None
        if self._credentials is None:
            raise ConfigError(f"connector {self.name!r} names credentials but no store is set")
        return self._credentials.resolve(
            self.config.credentials, user_id=user_id, org_id=self.org_id
        )

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            # Sessions of a finished event loop cannot be used (or closed) from this one.
            live = self._sessions.items()
            self._sessions = {k: s for k, s in live if s.belongs_to_running_loop()}
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def _session(self, user_id: str | None) -> McpSession:
        credential = self._credential(user_id)
        key = credential.fingerprint() if credential is not None else "-"
        async with self._loop_lock():
            session = self._sessions.get(key)
            if session is not None and session.alive:
                return session
            if session is not None:
                await self._drop(session)
            session = McpSession(client_opener(self.config, credential, self._errlog))
            try:
                await session.start(self.config.connect_timeout_seconds)
            except ToolError as exc:
                raise ToolError(
                    f"cannot connect to MCP server {self.name!r} "
                    f"({self.config.transport} {self.config.target()}): {exc}"
                ) from None
            self._sessions[key] = session
            return session

    async def _drop(self, session: McpSession) -> None:
        self._sessions = {k: s for k, s in self._sessions.items() if s is not session}
        await session.aclose()
