"""One live connection to an MCP server, owned by a supervisor task.

The SDK's ``Client`` is an async context manager whose cancel scopes must be entered and
left by the same task, while the agent loop calls tools from many tasks at once. So a
supervisor task enters the ``Client`` and waits; callers use the connected client from
their own tasks; ``aclose`` tells the supervisor to leave, which stops the server process
(stdio) or ends the HTTP session.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TextIO, cast

import httpx2
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from meshclaw.connectors.config import ConnectorConfig
from meshclaw.connectors.credentials import Credential
from meshclaw.errors import ToolError

MAX_PAGES = 100
"""A server whose tool listing never ends cannot hang a connect."""
CLOSE_TIMEOUT = 10.0

IDEMPOTENCY_META_KEY = "io.meshclaw/idempotency-key"
"""Sent in a call's ``_meta``: stable per run step, so a server can make a re-executed
write a no-op (MeshClaw's built-in servers use it for Message-IDs and event UIDs)."""

OpenClient = Callable[[AsyncExitStack], Awaitable[Client]]


class ServerGone(Exception):
    """The connection closed under a request (the server exited or went away)."""


def describe(exc: BaseException) -> str:
    """A one-line reason, looking inside the exception groups anyio raises."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def client_opener(
    config: ConnectorConfig, credential: Credential | None, errlog: Path | None
) -> OpenClient:
    """How to enter a ``Client`` for this config, with the credential placed where it goes."""

    async def open_stdio(stack: AsyncExitStack) -> Client:
        env = dict(config.env)
        for variable, field in config.credential_env.items():
            if credential is None:
                raise ToolError(f"credential_env needs a 'credentials' reference ({variable})")
            env[variable] = credential.field(field)
        params = StdioServerParameters(
            command=str(config.command), args=list(config.args), env=env or None, cwd=config.cwd
        )
        log: TextIO = sys.stderr
        if errlog is not None:
            errlog.parent.mkdir(parents=True, exist_ok=True)
            log = stack.enter_context(errlog.open("a"))
        transport = _stdio(params, log)
        return await stack.enter_async_context(_client(transport, config))

    async def open_http(stack: AsyncExitStack) -> Client:
        headers: dict[str, str] = {}
        for header, template in config.credential_headers.items():
            if credential is None:
                raise ToolError(f"credential_headers needs a 'credentials' reference ({header})")
            headers[header] = credential.render(template)
        timeout = httpx2.Timeout(config.connect_timeout_seconds, read=300.0)
        http = await stack.enter_async_context(httpx2.AsyncClient(headers=headers, timeout=timeout))
        transport = streamable_http_client(str(config.url), http_client=http)
        return await stack.enter_async_context(_client(transport, config))

    return open_http if config.transport == "http" else open_stdio


def _stdio(params: StdioServerParameters, errlog: TextIO) -> Any:
    from mcp.client.stdio import stdio_client

    return stdio_client(params, errlog=errlog)


def _client(transport: Any, config: ConnectorConfig) -> Client:
    # No response cache: every listing must show what the server says now (rug pulls).
    return Client(transport, read_timeout_seconds=config.call_timeout_seconds, cache=None)


class McpSession:
    """A connected client plus the supervisor task that owns its context."""

    def __init__(self, open_client: OpenClient) -> None:
        self._open = open_client
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.client: Client | None = None
        self.failure: BaseException | None = None

    @property
    def alive(self) -> bool:
        return (
            self.client is not None
            and self._task is not None
            and not self._task.done()
            and not self._stop.is_set()
        )

    def belongs_to_running_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    async def start(self, timeout: float) -> None:
        self._task = self._loop.create_task(self._run())
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            await self.aclose()
            raise ToolError(f"no answer within {timeout:g} s") from None
        if self.client is None:
            await self.aclose()
            raise ToolError(describe(self.failure) if self.failure else "connection failed")

    async def _run(self) -> None:
        try:
            async with AsyncExitStack() as stack:
                self.client = await self._open(stack)
                self._ready.set()
                await self._stop.wait()
        except Exception as exc:  # reported to whoever waits on start() or calls next
            self.failure = exc
        finally:
            self.client = None
            self._ready.set()

    async def aclose(self) -> None:
        self._stop.set()
        task = self._task
        if task is None or task.done():
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def describe_server(self) -> dict[str, str | None]:
        """Who answered: the server's name and version, and the protocol version agreed."""
        client = self._connected()
        info = client.server_info
        return {
            "name": info.name if info else None,
            "version": info.version if info else None,
            "protocol": client.protocol_version,
        }

    def _connected(self) -> Client:
        if self.client is None or not self.alive:
            raise ServerGone(describe(self.failure) if self.failure else "connection closed")
        return self.client

    async def list_tools(self) -> list[types.Tool]:
        client = self._connected()
        tools: list[types.Tool] = []
        cursor: str | None = None
        try:
            for _ in range(MAX_PAGES):
                page = await client.list_tools(cursor=cursor)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if cursor is None:
                    break
        except MCPError as exc:
            raise self._gone_or(exc) from None
        return tools

    async def call(
        self, tool: str, arguments: dict[str, Any], *, idempotency_key: str | None = None
    ) -> types.CallToolResult:
        client = self._connected()
        meta: dict[str, Any] = {}
        if idempotency_key is not None:
            meta[IDEMPOTENCY_META_KEY] = idempotency_key
        try:
            return await client.call_tool(
                tool, arguments, meta=cast(types.RequestParamsMeta, meta) if meta else None
            )
        except MCPError as exc:
            raise self._gone_or(exc) from None

    def _gone_or(self, exc: MCPError) -> Exception:
        if exc.code == types.CONNECTION_CLOSED:
            self._stop.set()
            return ServerGone("the server closed the connection")
        return ToolError(f"server error {exc.code}: {exc.message}")
