"""OpenAI's JSON shapes for the scripted server: completions, stream chunks, errors.

Kept apart from ``_replay`` so the decision (which turn, which failure) and the
rendering (what OpenAI's published API looks like) can change independently. Shapes
follow the Chat Completions reference closely enough for the official SDK to parse them.
"""

from __future__ import annotations

import re
from typing import Any, Final

from meshclaw.providers.scripted._replay import Answer, Failure, Usage

__all__ = [
    "CREATED",
    "MALFORMED_JSON",
    "MALFORMED_SSE",
    "completion_body",
    "error_body",
    "stream_chunks",
]

CREATED: Final = 0
"""``created`` timestamp of every object: fixed, so recorded responses are reproducible."""

MALFORMED_JSON: Final = '{"id": "chatcmpl-malformed", "object": "chat.completion", "choices": ['
MALFORMED_SSE: Final = f"data: {MALFORMED_JSON}\n\ndata: [DONE]\n\n"

_PIECE = re.compile(r"\S+\s*|\s+")
_CONTENT_CHUNKS = 3


def error_body(failure: Failure) -> dict[str, Any]:
    return {
        "error": {
            "message": failure.message,
            "type": failure.type,
            "param": failure.param,
            "code": failure.code,
        }
    }


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def completion_body(completion_id: str, model: str, answer: Answer) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    message: dict[str, Any] = {"role": "assistant", "content": answer.content, "refusal": None}
    if answer.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in answer.tool_calls
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": answer.finish_reason,
            }
        ],
        "usage": _usage(answer.usage),
    }


def _split(text: str, parts: int) -> list[str]:
    """Split ``text`` at word boundaries into at most ``parts`` pieces that join back."""
    pieces = _PIECE.findall(text)
    size = max(1, -(-len(pieces) // parts))
    return ["".join(pieces[i : i + size]) for i in range(0, len(pieces), size)]


def _deltas(answer: Answer) -> list[tuple[dict[str, Any], str | None]]:
    deltas: list[tuple[dict[str, Any], str | None]] = [
        ({"role": "assistant", "content": "", "refusal": None}, None)
    ]
    deltas += [
        ({"content": piece}, None) for piece in _split(answer.content or "", _CONTENT_CHUNKS)
    ]
    for index, call in enumerate(answer.tool_calls):
        head = {"index": index, "id": call.id, "type": "function"}
        function = {"name": call.name, "arguments": ""}
        deltas.append(({"tool_calls": [{**head, "function": function}]}, None))
        for piece in _split(call.arguments, 2):
            deltas.append(
                ({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, None)
            )
    deltas.append(({}, answer.finish_reason))
    return deltas


def stream_chunks(
    completion_id: str, model: str, answer: Answer, *, include_usage: bool
) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed reply, in order.

    As OpenAI does: the role comes first, then content and tool call deltas, then a chunk
    with ``finish_reason``; with ``include_usage`` every chunk carries ``usage: null`` and
    a last chunk with no choices carries the usage.
    """
    base: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
    }
    extra: dict[str, Any] = {"usage": None} if include_usage else {}
    chunks = [
        {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            **extra,
        }
        for delta, finish in _deltas(answer)
    ]
    if include_usage:
        chunks.append({**base, "choices": [], "usage": _usage(answer.usage)})
    return chunks
