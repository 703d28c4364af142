"""Amazon Bedrock's Converse and ConverseStream APIs through ``boto3``.

boto3 is synchronous, so each call runs in a worker thread (``asyncio.to_thread``); the
SDK's own retries are off (``total_max_attempts: 1``): the gateway retries.
Credentials come from the standard AWS chain (environment, profile, instance role),
optionally a named ``aws_profile``; ``endpoint_url`` points at a VPC endpoint, a proxy
or a fake on loopback.

Usage is exact: Bedrock's ``inputTokens`` excludes ``cacheReadInputTokens`` and
``cacheWriteInputTokens``, so MeshClaw's ``input_tokens`` adds the cache reads (cached
reads are *included*, as for every provider) and ``cache_write_tokens`` carries the
writes. Bedrock reports no separate reasoning count (reasoning is inside
``outputTokens``). When streaming, usage arrives in the final ``metadata`` event.

Spec parameters: ``max_tokens``, ``temperature``, ``top_p`` and ``stop`` map to
``inferenceConfig``; ``stream`` selects ConverseStream; anything else goes to
``additionalModelRequestFields`` (e.g. ``top_k``, ``thinking``).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import boto3
import botocore.exceptions
from botocore.config import Config

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

if TYPE_CHECKING:
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient

_INFERENCE = {"max_tokens": "maxTokens", "temperature": "temperature", "top_p": "topP"}
_RETRYABLE_CODES = {
    "ThrottlingException",
    "ServiceUnavailableException",
    "InternalServerException",
    "ModelTimeoutException",
    "ModelNotReadyException",
    "ModelStreamErrorException",
}


def _messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    wire: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        blocks: list[dict[str, Any]] = []
        role = "assistant" if message.role == "assistant" else "user"
        if message.role == "tool":
            result = {
                "toolUseId": message.tool_call_id or "",
                "content": [{"text": message.content or ""}],
            }
            blocks.append({"toolResult": result})
        else:
            if message.content:
                blocks.append({"text": message.content})
            for call in message.tool_calls:
                use = {
                    "toolUseId": call.id,
                    "name": to_wire_name(call.name),
                    "input": call.arguments,
                }
                blocks.append({"toolUse": use})
        if not blocks:
            blocks.append({"text": " "})  # Bedrock rejects empty content
        if wire and wire[-1]["role"] == role:
            wire[-1]["content"].extend(blocks)  # roles must alternate
        else:
            wire.append({"role": role, "content": blocks})
    return wire


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict) or "outputTokens" not in raw:
        return None
    cache_read = int(raw.get("cacheReadInputTokens") or 0)
    return Usage(
        input_tokens=int(raw.get("inputTokens") or 0) + cache_read,
        output_tokens=int(raw["outputTokens"]),
        cached_tokens=cache_read,
        cache_write_tokens=int(raw.get("cacheWriteInputTokens") or 0),
    )


def _error(exc: Exception) -> ProviderError:
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) or None
        # Bedrock names its retryable errors (throttling included): the code decides.
        return status_error(
            "Bedrock",
            status,
            error.get("Message", ""),
            retryable_statuses=(),
            code=code,
            retryable=code in _RETRYABLE_CODES,
        )
    if isinstance(
        exc,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectionClosedError
        | botocore.exceptions.ReadTimeoutError
        | botocore.exceptions.ConnectTimeoutError,
    ):
        return ProviderUnavailable(f"Bedrock unreachable: {type(exc).__name__}", retryable=True)
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return ProviderError("Bedrock: no AWS credentials found", retryable=False)
    return ProviderError(f"Bedrock error: {type(exc).__name__}: {exc}", retryable=False)


class BedrockProvider:
    """A ``ModelProvider`` for Amazon Bedrock's Converse API."""

    def __init__(
        self,
        *,
        name: str,
        region: str | None = None,
        endpoint_url: str | None = None,
        profile: str | None = None,
        timeout_seconds: float = 60.0,
    ) -> None:
        self.name = name
        session = boto3.session.Session(profile_name=profile, region_name=region)
        config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            read_timeout=timeout_seconds,
            connect_timeout=min(timeout_seconds, 10.0),
        )
        self._client: BedrockRuntimeClient = session.client(
            "bedrock-runtime", endpoint_url=endpoint_url, config=config
        )

    def _kwargs(self, request: ModelRequest, params: dict[str, Any]) -> dict[str, Any]:
        inference: dict[str, Any] = {}
        for key, wire in _INFERENCE.items():
            if key in params:
                inference[wire] = params.pop(key)
        if "stop" in params:
            stop = params.pop("stop")
            inference["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
        kwargs: dict[str, Any] = {"modelId": request.model, "messages": _messages(request.messages)}
        system = [{"text": m.content} for m in request.messages if m.role == "system" and m.content]
        if system:
            kwargs["system"] = system
        if inference:
            kwargs["inferenceConfig"] = inference
        if params:
            kwargs["additionalModelRequestFields"] = params
        if request.tools:
            kwargs["toolConfig"] = {
                "tools": [
                    {
                        "toolSpec": {
                            "name": to_wire_name(t.name),
                            "description": t.description or t.name,
                            "inputSchema": {"json": t.parameters},
                        }
                    }
                    for t in request.tools
                ]
            }
        return kwargs

    async def complete(self, request: ModelRequest) -> ModelResponse:
        params = dict(request.parameters)
        stream = bool(params.pop("stream", False))
        kwargs = self._kwargs(request, params)
        try:
            if stream:
                return await asyncio.to_thread(self._stream, request, kwargs)
            response = await asyncio.to_thread(lambda: self._client.converse(**kwargs))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise _error(exc) from None
        return self._parse(request, dict(response))

    def _parse(self, request: ModelRequest, response: dict[str, Any]) -> ModelResponse:
        message = response.get("output", {}).get("message")
        if not isinstance(message, dict):
            raise ProviderError("Bedrock returned a malformed response", retryable=True)
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in message.get("content", []):
            if "text" in block:
                texts.append(block["text"])
            elif "toolUse" in block:
                use = block["toolUse"]
                arguments = use.get("input") if isinstance(use.get("input"), dict) else {}
                calls.append(
                    ToolCall(
                        id=use["toolUseId"],
                        name=from_wire_name(use["name"]),
                        arguments=arguments,
                        raw_arguments=json.dumps(arguments),
                    )
                )
        content = "".join(texts) or None
        usage = _usage(response.get("usage"))
        metadata = response.get("ResponseMetadata", {})
        return ModelResponse(
            content=content,
            tool_calls=tuple(calls),
            usage=usage or estimate_usage(request, content, calls),
            finish_reason=response.get("stopReason"),
            model=request.model,
            response_id=metadata.get("RequestId"),
        )

    def _stream(self, request: ModelRequest, kwargs: dict[str, Any]) -> ModelResponse:
        response = self._client.converse_stream(**kwargs)
        texts: list[str] = []
        tools: dict[int, dict[str, str]] = {}
        usage: Usage | None = None
        stop: str | None = None
        for event in response["stream"]:
            if "contentBlockStart" in event:
                start = event["contentBlockStart"]
                use = start.get("start", {}).get("toolUse")
                if use:
                    index = start["contentBlockIndex"]
                    tools[index] = {"id": use["toolUseId"], "name": use["name"], "json": ""}
            elif "contentBlockDelta" in event:
                delta = event["contentBlockDelta"]
                index = delta["contentBlockIndex"]
                if "text" in delta["delta"]:
                    texts.append(delta["delta"]["text"])
                elif "toolUse" in delta["delta"] and index in tools:
                    tools[index]["json"] += delta["delta"]["toolUse"].get("input", "")
            elif "messageStop" in event:
                stop = event["messageStop"].get("stopReason")
            elif "metadata" in event:
                usage = _usage(event["metadata"].get("usage"))
        calls = tuple(
            ToolCall(
                id=slot["id"],
                name=from_wire_name(slot["name"]),
                arguments=parse_tool_arguments(slot["json"]),
                raw_arguments=slot["json"] or "{}",
            )
            for _, slot in sorted(tools.items())
        )
        content = "".join(texts) or None
        return ModelResponse(
            content=content,
            tool_calls=calls,
            usage=usage or estimate_usage(request, content, calls),
            finish_reason=stop,
            model=request.model,
            response_id=response.get("ResponseMetadata", {}).get("RequestId"),
        )

    async def aclose(self) -> None:
        self._client.close()
