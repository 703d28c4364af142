"""The built-in ``chat`` MCP server: one set of chat tools over Slack or Matrix.

``MESHCLAW_CHAT_KIND`` picks the chat system (``ChatSettings``): ``slack`` (the default:
Slack's Web API through ``slack_sdk``, or MeshClaw's ``connectors.fakes.slack``) or
``matrix`` (the Matrix Client-Server API of any homeserver). ``base_url`` points at the
Slack API or the homeserver. The tools, their arguments and their results are the same
for each (``_chat_base``); a Matrix message's ``ts`` is its event id.

Writes return **evidence**: the channel id and the message ``ts``. A post is idempotent
per run step: Slack carries the caller's idempotency key in message ``metadata``, Matrix
derives the send's transaction id from it (``_chat_matrix``).

On Matrix, messages from users of homeservers other than the org's (federation) are
**untrusted**: such a read marks each of them ``outside_org`` and carries
``_meta["io.meshclaw/untrusted"] = true``, as the mail server does for mail from outside.
"""

from __future__ import annotations

from typing import Annotated, Any

import pydantic_core
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations

from meshclaw.connectors.servers._chat_base import (
    UNTRUSTED_META_KEY,
    Backend,
    ChatError,
    ChatSettings,
)
from meshclaw.connectors.servers._chat_slack import Chat, SlackChat

__all__ = ["Chat", "ChatError", "ChatSettings", "backend_for", "build"]

IDEMPOTENCY_META_KEY = "io.meshclaw/idempotency-key"
READ = ToolAnnotations(read_only_hint=True, open_world_hint=True)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True)
INSTRUCTIONS = {
    "slack": "Team chat (Slack Web API): read channels and threads, post, reply, react.",
    "matrix": "Team chat (Matrix rooms; a message's ts is its event id): read rooms and "
    "threads, post, reply in a thread, react.",
}


def _key(ctx: Context[Any, Any]) -> str | None:
    meta = ctx.request_context.meta or {}
    key = meta.get(IDEMPOTENCY_META_KEY) if isinstance(meta, dict) else None
    return key if isinstance(key, str) else None


def backend_for(settings: ChatSettings) -> Backend:
    settings.check()
    if settings.kind == "matrix":
        from meshclaw.connectors.servers._chat_matrix import MatrixChat

        return MatrixChat(settings)
    return SlackChat(settings)


def _read(payload: dict[str, Any]) -> CallToolResult:
    """The result a plain dict would give (same text, same structured content), flagged
    untrusted in ``_meta`` when a message in it is from outside the org."""
    untrusted = any(m.get("outside_org") for m in payload.get("messages", []))
    text = pydantic_core.to_json(payload, fallback=str, indent=2).decode()
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=payload,
        _meta={UNTRUSTED_META_KEY: True} if untrusted else None,
    )


def build(settings: ChatSettings | None = None) -> MCPServer:
    cfg = settings or ChatSettings()  # read from the environment
    chat = backend_for(cfg)
    server = MCPServer("meshclaw-chat", instructions=INSTRUCTIONS[cfg.kind], log_level="WARNING")

    @server.tool(description="Channels the bot can see.", annotations=READ)
    async def list_channels() -> dict[str, Any]:
        return {"channels": await chat.channels()}

    # Reads are annotated with the same output schema as a plain dict, so the tools'
    # approved definitions do not change with the ``_meta`` a Matrix read may carry.
    @server.tool(description="The newest messages of a channel.", annotations=READ)
    async def read_channel(
        channel: str, limit: int = 20
    ) -> Annotated[CallToolResult, dict[str, Any]]:
        messages = await chat.history(channel, max(1, min(limit, 200)))
        return _read({"channel": channel, "messages": messages})

    @server.tool(description="A thread: its first message and every reply.", annotations=READ)
    async def read_thread(channel: str, ts: str) -> Annotated[CallToolResult, dict[str, Any]]:
        return _read({"channel": channel, "messages": await chat.thread(channel, ts)})

    @server.tool(description="Post a message to a channel.", annotations=WRITE)
    async def post_message(channel: str, text: str, ctx: Context[Any, Any]) -> dict[str, Any]:
        return {"evidence": await chat.post(channel, text, None, _key(ctx))}

    @server.tool(description="Reply in a message's thread.", annotations=WRITE)
    async def reply_in_thread(
        channel: str, thread_ts: str, text: str, ctx: Context[Any, Any]
    ) -> dict[str, Any]:
        return {"evidence": await chat.post(channel, text, thread_ts, _key(ctx))}

    @server.tool(description="Add an emoji reaction to a message.", annotations=WRITE)
    async def react(channel: str, ts: str, emoji: str) -> dict[str, Any]:
        return {"evidence": await chat.react(channel, ts, emoji)}

    return server
