"""Pure translations between MCP's wire types and MeshClaw's connector types.

Nothing here does I/O: tool definitions (what is hashed and approved), the read/write
action from annotations, argument validation against the tool's JSON Schema, and results
(text for the model, structured data and evidence for the run trace, with truncation).
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types as types
from jsonschema import Draft202012Validator, SchemaError, validators
from jsonschema.exceptions import ValidationError, best_match

from meshclaw.connectors.base import Action, ToolDefinition, ToolResult
from meshclaw.errors import ToolError
from meshclaw.text import without_nul_in

TRUNCATION_MARKER = "[truncated by MeshClaw: {dropped} of {total} characters not shown]"
UNTRUSTED_META_KEY = "io.meshclaw/untrusted"
"""A result's ``_meta`` flag a server sets when the result holds content from outside the
org (the built-in mail server: mail from other domains). It can only add to the
connector's own ``untrusted`` setting, never clear it."""


def definition_of(tool: types.Tool) -> dict[str, Any]:
    """The parts of a tool that decide what the model is told and what the call may do.

    ``_meta`` and icons are left out: they change without changing the tool. A server's
    NUL characters become U+FFFD (``meshclaw.text``): a tool is stored by its name.
    """
    dumped = tool.model_dump(mode="json", by_alias=True, exclude_none=True)
    keep = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
    return without_nul_in({key: dumped[key] for key in keep if key in dumped})


def action_of(definition: dict[str, Any]) -> Action:
    """``read`` only when the server says ``readOnlyHint: true``; anything else is a write.

    Annotations are hints from a server we may not trust, but the mistake they can cause
    here is only in the safe direction: a missing or false hint makes the tool need a
    write grant.
    """
    annotations = definition.get("annotations") or {}
    return "read" if annotations.get("readOnlyHint") is True else "write"


def tool_definition(
    definition: dict[str, Any], targets: dict[str, str] | None = None
) -> ToolDefinition:
    description = definition.get("description") or definition.get("title") or ""
    return ToolDefinition(
        name=definition["name"],
        description=str(description),
        input_schema=definition.get("inputSchema") or {"type": "object"},
        action=action_of(definition),
        targets=dict(targets or {}),
    )


def validate_arguments(qualified: str, schema: dict[str, Any], arguments: dict[str, Any]) -> None:
    """Reject arguments that do not match the tool's input schema, naming the path."""
    cls = validators.validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise ToolError(f"{qualified} has an invalid input schema: {exc.message}") from None
    error: ValidationError | None = best_match(cls(schema).iter_errors(arguments))
    if error is not None:
        where = error.json_path
        raise ToolError(
            f"arguments for {qualified} do not match its input schema at {where}: {error.message}"
        )


def _block_text(block: types.ContentBlock) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.ImageContent | types.AudioContent):
        kind = "image" if isinstance(block, types.ImageContent) else "audio"
        return f"[{kind} {block.mime_type}, {len(block.data) * 3 // 4} bytes]"
    if isinstance(block, types.ResourceLink):
        return f"[resource {block.uri}{f' ({block.name})' if block.name else ''}]"
    if isinstance(block, types.EmbeddedResource):
        resource = block.resource
        if isinstance(resource, types.TextResourceContents):
            return resource.text
        return f"[resource {resource.uri}, {resource.mime_type or 'binary'}]"
    return f"[{getattr(block, 'type', 'content')}]"


def truncate(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    marker = TRUNCATION_MARKER.format(dropped=len(text) - limit, total=len(text))
    return f"{text[:limit]}\n{marker}", True


def tool_result(
    result: types.CallToolResult,
    *,
    action: Action,
    max_chars: int,
    server: str | None,
    untrusted: bool = False,
) -> ToolResult:
    """Text for the model, and data for the trace: structured content and, for writes, evidence."""
    text = "\n".join(_block_text(block) for block in result.content)
    structured = result.structured_content
    if not text and structured is not None:
        text = json.dumps(structured, ensure_ascii=False)
    content, cut = truncate(text, max_chars)
    data: dict[str, Any] = {}
    if cut:
        data["truncated"] = {"original_chars": len(text), "kept_chars": max_chars}
    if structured is not None:
        encoded = json.dumps(structured, ensure_ascii=False)
        if len(encoded) <= max_chars:
            data["structured"] = structured
        else:
            data["structured_truncated"] = {"original_chars": len(encoded)}
    if action == "write" and not result.is_error:
        evidence = structured.get("evidence") if isinstance(structured, dict) else None
        data["evidence"] = (
            evidence
            if isinstance(evidence, dict)
            else {"server": server, "result": data.get("structured") or content[:500]}
        )
    marked = isinstance(result.meta, dict) and result.meta.get(UNTRUSTED_META_KEY) is True
    return ToolResult(
        content=content,
        is_error=bool(result.is_error),
        data=data or None,
        untrusted=untrusted or marked,
    )
