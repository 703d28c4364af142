"""Built-in connectors that need no outside app: ``clock`` and ``notes``."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select

from meshclaw.clock import utcnow
from meshclaw.connectors.base import ToolContext, ToolDefinition, ToolResult
from meshclaw.errors import ToolError
from meshclaw.store.db import Database
from meshclaw.store.models import Note


class ClockConnector:
    """``clock.now``: the current time, optionally in a time zone."""

    name = "clock"

    async def list_tools(self) -> list[ToolDefinition]:
        return [
            ToolDefinition(
                name="now",
                description="Current date and time (ISO 8601). Optional IANA time zone.",
                input_schema={
                    "type": "object",
                    "properties": {"tz": {"type": "string", "description": "e.g. Europe/Paris"}},
                },
            )
        ]

    async def call_tool(self, tool: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        if tool != "now":
            raise ToolError(f"clock has no tool {tool!r}")
        tz_name = str(arguments.get("tz") or "UTC")
        try:
            now: datetime = utcnow().astimezone(ZoneInfo(tz_name))
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolError(f"unknown time zone {tz_name!r}") from None
        return ToolResult(content=now.isoformat(), data={"now": now.isoformat(), "tz": tz_name})


class NotesConnector:
    """``notes.write`` / ``notes.list``: short notes kept in MeshClaw's own store."""

    name = "notes"

    def __init__(self, db: Database) -> None:
        self._db = db

    async def list_tools(self) -> list[ToolDefinition]:
        return [
            ToolDefinition(
                name="write",
                description="Save a note with a title and a body.",
                input_schema={
                    "type": "object",
                    "properties": {"title": {"type": "string"}, "body": {"type": "string"}},
                    "required": ["title", "body"],
                },
                action="write",
            ),
            ToolDefinition(
                name="list",
                description="List the titles of your latest notes.",
                input_schema={"type": "object", "properties": {"limit": {"type": "integer"}}},
            ),
        ]

    async def call_tool(self, tool: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        if tool == "write":
            return self._write(arguments, ctx)
        if tool == "list":
            return self._list(arguments, ctx)
        raise ToolError(f"notes has no tool {tool!r}")

    def _write(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        title, body = arguments.get("title"), arguments.get("body")
        if not isinstance(title, str) or not title or not isinstance(body, str):
            raise ToolError("notes.write needs a non-empty 'title' and a 'body' string")
        with self._db.session() as session:
            # The idempotency key is the note id: a re-executed step finds its note.
            existing = session.get(Note, ctx.idempotency_key)
            if existing is None:
                session.add(
                    Note(
                        id=ctx.idempotency_key,
                        org_id=ctx.org_id,
                        user_id=ctx.user_id,
                        agent_id=ctx.agent_id,
                        run_id=ctx.run_id,
                        title=title[:300],
                        body=body,
                    )
                )
        return ToolResult(content=f"saved note {title!r}", data={"note_id": ctx.idempotency_key})

    def _list(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        limit = arguments.get("limit", 10)
        limit = limit if isinstance(limit, int) and 0 < limit <= 100 else 10
        with self._db.session() as session:
            rows = session.scalars(
                select(Note)
                .where(Note.org_id == ctx.org_id, Note.user_id == ctx.user_id)
                .order_by(Note.created_at.desc())
                .limit(limit)
            ).all()
        titles = [n.title for n in rows]
        return ToolResult(content="\n".join(titles) or "(no notes)", data={"titles": titles})
