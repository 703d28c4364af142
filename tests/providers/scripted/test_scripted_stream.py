"""Streamed chat completions, reassembled with the official OpenAI SDK."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from openai.types.chat import ChatCompletionChunk

from meshclaw.providers.scripted.tokens import completion_tokens, prompt_tokens

from .conftest import Serve

SCRIPT = """
    turns:
      - reply:
          content: "Checking the clock and the calendar for you now."
          tool_calls:
            - {name: clock.now, arguments: {tz: UTC}}
            - {name: calendar.list, arguments: {day: "2025-01-01", limit: 5}}
          reasoning_tokens: 7
          cached_tokens: 3
"""

TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": "clock__now"}},
    {"type": "function", "function": {"name": "calendar__list"}},
]
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "What's on today?"},
]


def _reassemble(chunks: list[ChatCompletionChunk]) -> tuple[str, dict[int, dict[str, str]]]:
    content = ""
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                if delta.function is not None:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
    return content, calls


def test_stream_with_usage_reassembles_to_the_reply(serve: Serve) -> None:
    served = serve(SCRIPT)
    stream = served.client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        chunks = list(stream)

    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 1, "content should arrive in several deltas"

    content, calls = _reassemble(chunks)
    assert content == "Checking the clock and the calendar for you now."
    assert calls == {
        0: {"id": "call_0_0", "name": "clock__now", "arguments": '{"tz": "UTC"}'},
        1: {
            "id": "call_0_1",
            "name": "calendar__list",
            "arguments": '{"day": "2025-01-01", "limit": 5}',
        },
    }

    *body, finish, usage_chunk = chunks
    assert finish.choices[0].finish_reason == "tool_calls"
    assert all(c.choices[0].finish_reason is None for c in body)
    assert all(c.usage is None for c in [*body, finish])
    assert usage_chunk.choices == []
    usage = usage_chunk.usage
    assert usage is not None
    expected_prompt = prompt_tokens({"messages": MESSAGES, "tools": TOOLS})
    expected_completion = completion_tokens(
        content, [(c["name"], c["arguments"]) for c in calls.values()], reasoning_tokens=7
    )
    assert usage.prompt_tokens == expected_prompt
    assert usage.completion_tokens == expected_completion
    assert usage.total_tokens == expected_prompt + expected_completion
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 3
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 7


def test_stream_matches_the_non_streamed_reply(serve: Serve) -> None:
    served = serve(SCRIPT)
    whole = served.client.chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS)
    with served.client.chat.completions.create(
        model="m", messages=MESSAGES, tools=TOOLS, stream=True
    ) as stream:
        chunks = list(stream)
    content, calls = _reassemble(chunks)
    message = whole.choices[0].message
    assert content == message.content
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        (c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []
    ]


def test_stream_without_include_usage_has_no_usage_chunk(serve: Serve) -> None:
    served = serve("turns:\n  - reply: {content: 'Short answer.'}\n")
    with served.client.chat.completions.create(model="m", messages=MESSAGES, stream=True) as stream:
        chunks = list(stream)
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert _reassemble(chunks)[0] == "Short answer."


def test_raw_stream_is_server_sent_events_ending_with_done(serve: Serve) -> None:
    served = serve("turns:\n  - reply: {content: ''}\n")
    with served.client.chat.completions.with_streaming_response.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        text = "".join(raw.iter_text())
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    usage = json.loads(events[-2].removeprefix("data: "))
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 0


@pytest.mark.parametrize("stream", [False, True])
def test_delay_is_waited_before_or_during_the_reply(serve: Serve, stream: bool) -> None:
    served = serve("turns:\n  - reply: {content: 'one two three four'}\n    delay_ms: 300\n")
    started = time.monotonic()
    if stream:
        with served.client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True
        ) as chunks:
            content = _reassemble(list(chunks))[0]
    else:
        result = served.client.chat.completions.create(model="m", messages=MESSAGES)
        content = result.choices[0].message.content or ""
    assert time.monotonic() - started >= 0.3
    assert content == "one two three four"
