"""A fake of Anthropic's Messages API (``POST /v1/messages``), plain and streaming.

Shapes follow the published API reference: a ``message`` object with ``content``
blocks (``thinking``, ``text``, ``tool_use``) and ``usage`` (``input_tokens`` excludes
``cache_read_input_tokens`` and ``cache_creation_input_tokens``); with ``stream: true``
server-sent events ``message_start`` (input and cache usage) → ``content_block_start``
/ ``_delta`` / ``_stop`` → ``message_delta`` (cumulative ``output_tokens``) →
``message_stop``; errors as ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

import hmac
import json
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
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _error(failure: FakeError) -> JSONResponse:
    kind = _ERROR_TYPES.get(failure.status, "api_error")
    body = {"type": "error", "error": {"type": kind, "message": failure.message}}
    return JSONResponse(body, status_code=failure.status)


def _usage(turn: FakeTurn) -> dict[str, Any] | None:
    if turn.usage is None:
        return None
    usage: dict[str, Any] = {
        "input_tokens": turn.usage.input_tokens,
        "output_tokens": turn.usage.output_tokens,
        "cache_creation_input_tokens": turn.usage.cache_write_tokens,
        "cache_read_input_tokens": turn.usage.cache_read_tokens,
    }
    if turn.usage.reasoning_tokens:
        usage["output_tokens_details"] = {"thinking_tokens": turn.usage.reasoning_tokens}
    return usage


def _blocks(index: int, turn: FakeTurn) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if turn.thinking is not None:
        blocks.append({"type": "thinking", "thinking": turn.thinking, "signature": "sig-fake"})
    if turn.text is not None:
        blocks.append({"type": "text", "text": turn.text})
    for i, call in enumerate(turn.calls):
        blocks.append(
            {
                "type": "tool_use",
                "id": f"toolu_fake_{index}_{i}",
                "name": to_wire_name(call.name),
                "input": call.arguments,
            }
        )
    return blocks


def _message(msg_id: str, model: str, index: int, turn: FakeTurn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _blocks(index, turn),
        "stop_reason": "tool_use" if turn.calls else "end_turn",
        "stop_sequence": None,
    }
    if (usage := _usage(turn)) is not None:
        body["usage"] = usage
    return body


def _sse(event: dict[str, Any]) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


def _events(msg_id: str, model: str, index: int, turn: FakeTurn) -> list[dict[str, Any]]:
    usage = _usage(turn)
    start = _message(msg_id, model, index, turn) | {"content": [], "stop_reason": None}
    if usage is not None:
        # message_start carries the input side; output so far is a token or so.
        start["usage"] = usage | {"output_tokens": 1}
        start["usage"].pop("output_tokens_details", None)
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    for i, block in enumerate(_blocks(index, turn)):
        if block["type"] == "text":
            events.append(
                {"type": "content_block_start", "index": i, "content_block": block | {"text": ""}}
            )
            text = block["text"]
            for piece in (text[: len(text) // 2], text[len(text) // 2 :]):
                delta = {"type": "text_delta", "text": piece}
                events.append({"type": "content_block_delta", "index": i, "delta": delta})
        elif block["type"] == "thinking":
            empty = block | {"thinking": "", "signature": ""}
            events.append({"type": "content_block_start", "index": i, "content_block": empty})
            delta = {"type": "thinking_delta", "thinking": block["thinking"]}
            events.append({"type": "content_block_delta", "index": i, "delta": delta})
            sig = {"type": "signature_delta", "signature": block["signature"]}
            events.append({"type": "content_block_delta", "index": i, "delta": sig})
        else:
            empty = block | {"input": {}}
            events.append({"type": "content_block_start", "index": i, "content_block": empty})
            raw = json.dumps(block["input"])
            for piece in (raw[: len(raw) // 2], raw[len(raw) // 2 :]):
                delta = {"type": "input_json_delta", "partial_json": piece}
                events.append({"type": "content_block_delta", "index": i, "delta": delta})
        events.append({"type": "content_block_stop", "index": i})
    stop = "tool_use" if turn.calls else "end_turn"
    final: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": None},
    }
    if usage is not None:
        final["usage"] = usage  # cumulative, as the API sends it
    events.append(final)
    events.append({"type": "message_stop"})
    return events


def _authorised(request: Request, key: str) -> bool:
    """The SDK sends ``x-api-key`` or ``Authorization: Bearer`` (depending on version)."""
    bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    given = request.headers.get("x-api-key") or bearer
    return hmac.compare_digest(given.encode(), key.encode())


class FakeAnthropic(FakeServer):
    """Anthropic's Messages API on loopback; ``base_url`` is what the SDK takes."""

    def __init__(self, turns: Sequence[FakeTurn], *, api_key: str | None = None) -> None:
        self.book = TurnBook(turns)
        self._api_key = api_key
        super().__init__(self._app())

    @property
    def base_url(self) -> str:
        return self.url

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.book.requests

    def _app(self) -> Starlette:
        async def messages(request: Request) -> Response:
            if self._api_key is not None and not _authorised(request, self._api_key):
                return _error(FakeError(status=401, message="invalid x-api-key"))
            if "anthropic-version" not in request.headers:
                return _error(FakeError(status=400, message="anthropic-version header missing"))
            body = await request.json()
            if not isinstance(body, dict) or "max_tokens" not in body:
                return _error(FakeError(status=400, message="max_tokens: Field required"))
            index, answer = self.book.pick(body)
            if isinstance(answer, FakeError):
                return _error(answer)
            msg_id = f"msg_fake_{self.book.next_id()}"
            model = str(body.get("model", ""))
            if body.get("stream") is True:
                events = _events(msg_id, model, index, answer)

                async def stream() -> AsyncIterator[str]:
                    for event in events:
                        yield _sse(event)

                return StreamingResponse(stream(), media_type="text/event-stream")
            return JSONResponse(_message(msg_id, model, index, answer))

        return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])
