"""Anthropic's Messages API through the official ``anthropic`` SDK.

Translation: ``system`` messages become the ``system`` parameter; assistant tool calls
become ``tool_use`` blocks and ``tool`` messages ``tool_result`` blocks (consecutive
results share one user turn, as the API requires). Usage is exact: Anthropic's
``input_tokens`` excludes cache reads and writes, so MeshClaw's ``input_tokens`` is
``input_tokens + cache_read_input_tokens`` (cached reads are *included*, as for every
provider) and ``cache_write_tokens`` is ``cache_creation_input_tokens`` (billed on its
own). Reasoning is ``output_tokens_details.thinking_tokens`` when sent. When streaming,
input and cache usage arrive in ``message_start`` and cumulative counts in
``message_delta``; both are read, never estimated unless absent.

Spec parameters pass through (``temperature``, ``top_p``, ``stop_sequences``,
``thinking``, ...) with two of MeshClaw's own: ``stream`` and ``cache_system`` (mark the
system prompt with ``cache_control: ephemeral``). ``max_tokens`` defaults to 4096.
The SDK's own retries are off: the gateway retries.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic

from meshclaw.errors import ProviderError, ProviderUnavailable
from meshclaw.providers._estimate import estimate_usage
from meshclaw.providers._names import from_wire_name, to_wire_name
from meshclaw.providers.base import (
    Message,
    ModelRequest,
    ModelResponse,
    ToolCall,
    Usage,
    parse_tool_arguments,
    status_error,
)

DEFAULT_MAX_TOKENS = 4096


def _system(request: ModelRequest, cache: bool) -> str | list[dict[str, Any]] | None:
    text = "\n\n".join(m.content or "" for m in request.messages if m.role == "system")
    if not text:
        return None
    if cache:
        return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]
    return text


def _messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    wire: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        if message.role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id or "",
                "content": message.content or "",
            }
            last = wire[-1] if wire else None
            if last and last["role"] == "user" and isinstance(last["content"], list):
                last["content"].append(block)
            else:
                wire.append({"role": "user", "content": [block]})
            continue
        if message.role == "assistant":
            blocks: list[dict[str, Any]] = []
            if message.content:
                blocks.append({"type": "text", "text": message.content})
            for call in message.tool_calls:
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.id,
                        "name": to_wire_name(call.name),
                        "input": call.arguments,
                    }
                )
            wire.append({"role": "assistant", "content": blocks or ""})
            continue
        wire.append({"role": "user", "content": message.content or ""})
    return wire


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _usage(raw: Any) -> Usage | None:
    """MeshClaw usage from an Anthropic ``usage`` object (or None if there is none)."""
    if raw is None or getattr(raw, "output_tokens", None) is None:
        return None
    cache_read = _int(getattr(raw, "cache_read_input_tokens", 0))
    details = getattr(raw, "output_tokens_details", None)
    return Usage(
        input_tokens=_int(getattr(raw, "input_tokens", 0)) + cache_read,
        output_tokens=_int(raw.output_tokens),
        cached_tokens=cache_read,
        cache_write_tokens=_int(getattr(raw, "cache_creation_input_tokens", 0)),
        reasoning_tokens=_int(getattr(details, "thinking_tokens", 0)),
    )


def _error(exc: anthropic.AnthropicError) -> ProviderError:
    if isinstance(exc, anthropic.APIConnectionError | anthropic.APITimeoutError):
        return ProviderUnavailable(f"Anthropic unreachable: {type(exc).__name__}", retryable=True)
    if isinstance(exc, anthropic.APIStatusError):
        # A request timeout (408) is worth another try too; 529 (overloaded) is a 5xx.
        return status_error(
            "Anthropic", exc.status_code, exc.message, retryable_statuses=(408, 429)
        )
    return ProviderError(f"Anthropic error: {type(exc).__name__}: {exc}", retryable=False)


class AnthropicProvider:
    """A ``ModelProvider`` for Anthropic's Messages API (or any endpoint speaking it)."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str | None,
        api_key: str | None,
        timeout_seconds: float = 60.0,
    ) -> None:
        self.name = name
        self._client = anthropic.AsyncAnthropic(
            base_url=base_url,
            api_key=api_key or "not-needed",
            timeout=timeout_seconds,
            max_retries=0,
        )

    def _kwargs(self, request: ModelRequest, params: dict[str, Any]) -> dict[str, Any]:
        cache = bool(params.pop("cache_system", False))
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": _messages(request.messages),
            "max_tokens": int(params.pop("max_tokens", DEFAULT_MAX_TOKENS)),
            **params,
        }
        if (system := _system(request, cache)) is not None:
            kwargs["system"] = system
        if request.tools:
            kwargs["tools"] = [
                {
                    "name": to_wire_name(t.name),
                    "description": t.description,
                    "input_schema": t.parameters,
                }
                for t in request.tools
            ]
        return kwargs

    async def complete(self, request: ModelRequest) -> ModelResponse:
        params = dict(request.parameters)
        stream = bool(params.pop("stream", False))
        kwargs = self._kwargs(request, params)
        try:
            if stream:
                return await self._stream(request, kwargs)
            message = await self._client.messages.create(**kwargs)
        except anthropic.AnthropicError as exc:
            raise _error(exc) from None
        except ValueError as exc:
            raise ProviderError(f"Anthropic sent malformed JSON: {exc}", retryable=True) from None
        return self._parse(request, message)

    def _parse(self, request: ModelRequest, message: Any) -> ModelResponse:
        blocks = getattr(message, "content", None)
        if not isinstance(blocks, list):
            raise ProviderError("Anthropic returned a malformed message", retryable=True)
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in blocks:
            kind = getattr(block, "type", None)
            if kind == "text":
                texts.append(block.text)
            elif kind == "tool_use":
                raw = json.dumps(block.input)
                calls.append(
                    ToolCall(
                        id=block.id,
                        name=from_wire_name(block.name),
                        arguments=dict(block.input) if isinstance(block.input, dict) else {},
                        raw_arguments=raw,
                    )
                )
        content = "".join(texts) or None
        usage = _usage(getattr(message, "usage", None))
        return ModelResponse(
            content=content,
            tool_calls=tuple(calls),
            usage=usage or estimate_usage(request, content, calls),
            finish_reason=getattr(message, "stop_reason", None),
            model=getattr(message, "model", None),
            response_id=getattr(message, "id", None),
        )

    async def _stream(self, request: ModelRequest, kwargs: dict[str, Any]) -> ModelResponse:
        texts: list[str] = []
        blocks: dict[int, dict[str, str]] = {}
        start_usage: Any = None
        final_usage: Any = None
        stop: str | None = None
        model: str | None = None
        message_id: str | None = None
        stream = await self._client.messages.create(**kwargs, stream=True)
        async with stream:
            async for event in stream:
                kind = getattr(event, "type", None)
                if kind == "message_start":
                    model, message_id = event.message.model, event.message.id
                    start_usage = getattr(event.message, "usage", None)
                elif kind == "content_block_start":
                    block = event.content_block
                    if block.type == "tool_use":
                        blocks[event.index] = {"id": block.id, "name": block.name, "json": ""}
                elif kind == "content_block_delta":
                    delta = event.delta
                    if delta.type == "text_delta":
                        texts.append(delta.text)
                    elif delta.type == "input_json_delta" and event.index in blocks:
                        blocks[event.index]["json"] += delta.partial_json
                elif kind == "message_delta":
                    stop = event.delta.stop_reason or stop
                    final_usage = getattr(event, "usage", None) or final_usage
        calls = tuple(
            ToolCall(
                id=slot["id"],
                name=from_wire_name(slot["name"]),
                arguments=parse_tool_arguments(slot["json"]),
                raw_arguments=slot["json"] or "{}",
            )
            for _, slot in sorted(blocks.items())
        )
        content = "".join(texts) or None
        usage = _merge_stream_usage(start_usage, final_usage)
        return ModelResponse(
            content=content,
            tool_calls=calls,
            usage=usage or estimate_usage(request, content, calls),
            finish_reason=stop,
            model=model,
            response_id=message_id,
        )

    async def aclose(self) -> None:
        await self._client.close()


def _merge_stream_usage(start: Any, final: Any) -> Usage | None:
    """``message_delta`` counts are cumulative and win; ``message_start`` fills the rest."""
    first, last = _usage(start), _usage(final)
    if last is None:
        return first
    if first is None:
        return last

    # A field the delta left out (None) keeps the value message_start reported.
    def pick(name: str) -> Any:
        value = getattr(final, name, None)
        return value if value is not None else getattr(start, name, None)

    cache_read = _int(pick("cache_read_input_tokens"))
    return Usage(
        input_tokens=_int(pick("input_tokens")) + cache_read,
        output_tokens=last.output_tokens,
        cached_tokens=cache_read,
        cache_write_tokens=_int(pick("cache_creation_input_tokens")),
        reasoning_tokens=last.reasoning_tokens or first.reasoning_tokens,
    )
