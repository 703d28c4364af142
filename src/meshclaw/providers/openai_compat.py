"""OpenAI-compatible chat completions through the official ``openai`` SDK.

Works with OpenAI, vLLM, Ollama, llama.cpp server, gateways and MeshClaw's scripted
server: anything that speaks ``/v1/chat/completions``. The SDK's own retries are off:
the gateway retries so that every attempt is visible, cancellable and audited.
"""

from __future__ import annotations

import json
from typing import Any

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from meshclaw.errors import ProviderError, ProviderUnavailable
from meshclaw.providers.base import (
    Message,
    ModelRequest,
    ModelResponse,
    ToolCall,
    Usage,
    parse_tool_arguments,
    status_error,
)

WIRE_SEPARATOR = "__"
"""OpenAI function names allow ``[a-zA-Z0-9_-]`` only, so ``mail.send`` goes as ``mail__send``."""


def to_wire_name(name: str) -> str:
    return name.replace(".", WIRE_SEPARATOR, 1)


def from_wire_name(name: str) -> str:
    return name.replace(WIRE_SEPARATOR, ".", 1) if "." not in name else name


def _message_to_wire(message: Message) -> dict[str, Any]:
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        wire["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": to_wire_name(call.name),
                    "arguments": call.raw_arguments or json.dumps(call.arguments),
                },
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        wire["tool_call_id"] = message.tool_call_id
    return wire


def _usage(raw: Any) -> Usage | None:
    if raw is None:
        return None
    prompt_details = getattr(raw, "prompt_tokens_details", None)
    completion_details = getattr(raw, "completion_tokens_details", None)
    return Usage(
        input_tokens=raw.prompt_tokens or 0,
        output_tokens=raw.completion_tokens or 0,
        cached_tokens=(getattr(prompt_details, "cached_tokens", 0) or 0),
        reasoning_tokens=(getattr(completion_details, "reasoning_tokens", 0) or 0),
    )


def _estimate(request: ModelRequest, content: str | None, calls: tuple[ToolCall, ...]) -> Usage:
    """Rough count (about 4 characters per token) when the server omits usage."""
    prompt_chars = sum(len(m.content or "") for m in request.messages)
    output_chars = len(content or "") + sum(len(c.raw_arguments) for c in calls)
    return Usage(
        input_tokens=max(1, prompt_chars // 4),
        output_tokens=max(1, output_chars // 4) if output_chars else 0,
        estimated=True,
    )


def _error(exc: openai.OpenAIError) -> ProviderError:
    """Translate SDK errors without echoing request headers (they carry the key)."""
    if isinstance(exc, openai.APIConnectionError | openai.APITimeoutError):
        return ProviderUnavailable(
            f"model server unreachable: {type(exc).__name__}", retryable=True
        )
    if isinstance(exc, openai.APIStatusError):
        detail = exc.message if isinstance(exc.message, str) else ""
        return status_error("provider", exc.status_code, detail)
    return ProviderError(f"provider error: {type(exc).__name__}: {exc}", retryable=False)


class OpenAICompatibleProvider:
    """A ``ModelProvider`` for any OpenAI-compatible endpoint."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str | None,
        api_key: str | None,
        timeout_seconds: float = 60.0,
    ) -> None:
        self.name = name
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "not-needed",
            timeout=timeout_seconds,
            max_retries=0,
        )

    async def complete(self, request: ModelRequest) -> ModelResponse:
        params = dict(request.parameters)
        stream = bool(params.pop("stream", False))
        # The conversation and the tools go in ``extra_body``, which the SDK sends as they
        # are: they are plain JSON already (``_message_to_wire``), and the SDK's request
        # transform would otherwise walk every message of the conversation against its
        # typed-dict annotations on every call (it renames nothing in chat requests), which
        # cost more than all of MeshClaw's own work per step (benchmarks/overhead.py).
        wire: dict[str, Any] = {"messages": [_message_to_wire(m) for m in request.messages]}
        if request.tools:
            wire["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": to_wire_name(t.name),
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in request.tools
            ]
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": [],
            **params,
            "extra_body": params.get("extra_body", {}) | wire,
        }
        try:
            if stream:
                return await self._stream(request, kwargs)
            completion = await self._client.chat.completions.create(**kwargs)
        except openai.OpenAIError as exc:
            raise _error(exc) from None
        except ValueError as exc:  # the SDK lets a body that is not JSON through as-is
            raise ProviderError(f"provider sent malformed JSON: {exc}", retryable=True) from None
        return self._parse(request, completion)

    def _parse(self, request: ModelRequest, completion: ChatCompletion) -> ModelResponse:
        if not isinstance(completion, ChatCompletion) or not completion.choices:
            raise ProviderError("provider returned a malformed completion", retryable=True)
        choice = completion.choices[0]
        calls = tuple(
            ToolCall(
                id=tc.id,
                name=from_wire_name(tc.function.name),
                arguments=parse_tool_arguments(tc.function.arguments),
                raw_arguments=tc.function.arguments,
            )
            for tc in (choice.message.tool_calls or [])
            if tc.type == "function"
        )
        content = choice.message.content
        usage = _usage(completion.usage) or _estimate(request, content, calls)
        return ModelResponse(
            content=content,
            tool_calls=calls,
            usage=usage,
            finish_reason=choice.finish_reason,
            model=completion.model,
            response_id=completion.id,
        )

    async def _stream(self, request: ModelRequest, kwargs: dict[str, Any]) -> ModelResponse:
        kwargs["stream"] = True
        kwargs["stream_options"] = {"include_usage": True}
        content: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        usage: Usage | None = None
        finish: str | None = None
        model: str | None = None
        response_id: str | None = None
        stream = await self._client.chat.completions.create(**kwargs)
        async with stream:
            async for chunk in stream:
                if not isinstance(chunk, ChatCompletionChunk):
                    raise ProviderError("provider sent a malformed stream chunk", retryable=True)
                model, response_id = chunk.model, chunk.id
                # Usage arrives in the last chunk (with no choices): count it, never guess.
                usage = _usage(chunk.usage) or usage
                for choice in chunk.choices:
                    finish = choice.finish_reason or finish
                    if choice.delta.content:
                        content.append(choice.delta.content)
                    for tc in choice.delta.tool_calls or []:
                        slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                        if tc.id:
                            slot["id"] = tc.id
                        if tc.function and tc.function.name:
                            slot["name"] += tc.function.name
                        if tc.function and tc.function.arguments:
                            slot["arguments"] += tc.function.arguments
        tool_calls = tuple(
            ToolCall(
                id=slot["id"],
                name=from_wire_name(slot["name"]),
                arguments=parse_tool_arguments(slot["arguments"]),
                raw_arguments=slot["arguments"],
            )
            for _, slot in sorted(calls.items())
        )
        text = "".join(content) or None
        return ModelResponse(
            content=text,
            tool_calls=tool_calls,
            usage=usage or _estimate(request, text, tool_calls),
            finish_reason=finish,
            model=model,
            response_id=response_id,
        )

    async def aclose(self) -> None:
        await self._client.close()
