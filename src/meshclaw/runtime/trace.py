"""How model turns are written into run steps: enough to replay the conversation.

A model step keeps only the messages added since the previous model turn (not the
whole prompt again), so a trace grows linearly with the run.
"""

from __future__ import annotations

from typing import Any

from meshclaw.providers.base import Message, ModelRequest, ModelResponse, ToolCall


def _call(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "name": call.name, "arguments": call.arguments}


def message_dict(message: Message) -> dict[str, Any]:
    data: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        data["tool_calls"] = [_call(c) for c in message.tool_calls]
    if message.tool_call_id:
        data["tool_call_id"] = message.tool_call_id
    return data


def request_summary(request: ModelRequest) -> dict[str, Any]:
    messages = request.messages
    last_assistant = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
    return {
        "model": request.model,
        "message_count": len(messages),
        "new_messages": [message_dict(m) for m in messages[last_assistant + 1 :]],
        "tools": [t.name for t in request.tools],
    }


def response_summary(response: ModelResponse) -> dict[str, Any]:
    usage = response.usage
    return {
        "content": response.content,
        "tool_calls": [_call(c) for c in response.tool_calls],
        "finish_reason": response.finish_reason,
        "usage": {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "estimated": usage.estimated,
        },
    }
