"""A fake of the Amazon Bedrock Runtime Converse API, plain and streaming.

Paths and shapes follow the service model boto3 ships (``bedrock-runtime``,
``rest-json``): ``POST /model/{modelId}/converse`` answers
``{"output": {"message": ...}, "stopReason", "usage", "metrics"}``;
``POST /model/{modelId}/converse-stream`` answers ``application/vnd.amazon.eventstream``
binary frames (``messageStart``, ``contentBlockStart``/``Delta``/``Stop``,
``messageStop``, ``metadata`` with the usage). ``usage.inputTokens`` excludes
``cacheReadInputTokens`` and ``cacheWriteInputTokens``. Errors carry
``x-amzn-ErrorType`` and ``{"message": ...}``. Requests are not signature-checked.
"""

from __future__ import annotations

import binascii
import json
import struct
from collections.abc import AsyncIterator, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from meshclaw.providers._names import to_wire_name
from meshclaw.providers.fakes._server import FakeServer
from meshclaw.providers.fakes._turns import FakeError, FakeTurn, TurnBook

_ERROR_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}


def _error(failure: FakeError) -> JSONResponse:
    kind = _ERROR_TYPES.get(failure.status, "InternalServerException")
    return JSONResponse(
        {"message": failure.message},
        status_code=failure.status,
        headers={
            "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"
        },
    )


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event stream message: prelude, prelude CRC, string headers, payload, CRC."""
    raw_headers = b""
    for name, value in headers.items():
        key, val = name.encode(), value.encode()
        raw_headers += struct.pack("!B", len(key)) + key + b"\x07" + struct.pack("!H", len(val))
        raw_headers += val
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack("!II", total, len(raw_headers))
    head = prelude + struct.pack("!I", binascii.crc32(prelude))
    body = head + raw_headers + payload
    return body + struct.pack("!I", binascii.crc32(body))


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    headers = {
        ":event-type": kind,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_frame(headers, json.dumps(payload).encode())


def _usage(turn: FakeTurn) -> dict[str, Any] | None:
    if turn.usage is None:
        return None
    u = turn.usage
    usage = {
        "inputTokens": u.input_tokens,
        "outputTokens": u.output_tokens,
        "totalTokens": u.input_tokens
        + u.output_tokens
        + u.cache_read_tokens
        + u.cache_write_tokens,
    }
    if u.cache_read_tokens:
        usage["cacheReadInputTokens"] = u.cache_read_tokens
    if u.cache_write_tokens:
        usage["cacheWriteInputTokens"] = u.cache_write_tokens
    return usage


def _content(index: int, turn: FakeTurn) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if turn.thinking is not None:
        text = {"text": turn.thinking, "signature": "sig-fake"}
        blocks.append({"reasoningContent": {"reasoningText": text}})
    if turn.text is not None:
        blocks.append({"text": turn.text})
    for i, call in enumerate(turn.calls):
        use = {
            "toolUseId": f"tooluse_fake_{index}_{i}",
            "name": to_wire_name(call.name),
            "input": call.arguments,
        }
        blocks.append({"toolUse": use})
    return blocks


def _stream_frames(index: int, turn: FakeTurn) -> list[bytes]:
    frames = [_event("messageStart", {"role": "assistant"})]
    for i, block in enumerate(_content(index, turn)):
        if "text" in block:
            text = block["text"]
            for piece in (text[: len(text) // 2], text[len(text) // 2 :]):
                frames.append(
                    _event("contentBlockDelta", {"delta": {"text": piece}, "contentBlockIndex": i})
                )
        elif "reasoningContent" in block:
            delta = {
                "reasoningContent": {"text": block["reasoningContent"]["reasoningText"]["text"]}
            }
            frames.append(_event("contentBlockDelta", {"delta": delta, "contentBlockIndex": i}))
        else:
            use = block["toolUse"]
            start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
            frames.append(_event("contentBlockStart", {"start": start, "contentBlockIndex": i}))
            raw = json.dumps(use["input"])
            for piece in (raw[: len(raw) // 2], raw[len(raw) // 2 :]):
                delta = {"toolUse": {"input": piece}}
                frames.append(_event("contentBlockDelta", {"delta": delta, "contentBlockIndex": i}))
        frames.append(_event("contentBlockStop", {"contentBlockIndex": i}))
    stop = "tool_use" if turn.calls else "end_turn"
    frames.append(_event("messageStop", {"stopReason": stop}))
    usage = _usage(turn)
    if usage is not None:
        frames.append(_event("metadata", {"usage": usage, "metrics": {"latencyMs": 7}}))
    return frames


class FakeBedrock(FakeServer):
    """Bedrock Runtime on loopback; pass ``url`` as boto3's ``endpoint_url``."""

    def __init__(self, turns: Sequence[FakeTurn]) -> None:
        self.book = TurnBook(turns)
        self.model_ids: list[str] = []
        super().__init__(self._app())

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.book.requests

    def _app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            if not request.headers.get("authorization", "").startswith("AWS4-HMAC-SHA256"):
                return _error(FakeError(status=403, message="missing SigV4 signature"))
            body = await request.json()
            if not isinstance(body, dict) or not body.get("messages"):
                return _error(FakeError(status=400, message="messages: required"))
            self.model_ids.append(request.path_params["model_id"])
            index, answer = self.book.pick(body)
            if isinstance(answer, FakeError):
                return _error(answer)
            if request.url.path.endswith("/converse-stream"):
                frames = _stream_frames(index, answer)

                async def stream() -> AsyncIterator[bytes]:
                    for frame in frames:
                        yield frame

                return StreamingResponse(stream(), media_type="application/vnd.amazon.eventstream")
            stop = "tool_use" if answer.calls else "end_turn"
            reply: dict[str, Any] = {
                "output": {"message": {"role": "assistant", "content": _content(index, answer)}},
                "stopReason": stop,
                "metrics": {"latencyMs": 7},
            }
            if (usage := _usage(answer)) is not None:
                reply["usage"] = usage
            return JSONResponse(reply)

        routes = [
            Route("/model/{model_id:path}/converse", handle, methods=["POST"]),
            Route("/model/{model_id:path}/converse-stream", handle, methods=["POST"]),
        ]
        return Starlette(routes=routes)
