from __future__ import annotations

import json

from meshclaw.providers.scripted import count_tokens
from meshclaw.providers.scripted.tokens import completion_tokens, prompt_tokens


def test_words_and_punctuation_are_tokens_whitespace_is_free() -> None:
    assert count_tokens("clock.now(UTC)") == 6
    assert count_tokens("  Hello,   world!  ") == 4
    assert count_tokens("snake_case42 déjà-vu") == 4
    assert count_tokens("") == 0
    assert count_tokens(None) == 0


def test_prompt_tokens_follow_the_documented_formula() -> None:
    tools = [{"type": "function", "function": {"name": "clock__now"}}]
    request = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What time?"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_0_0",
                        "type": "function",
                        "function": {"name": "clock__now", "arguments": '{"tz": "UTC"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_0_0", "content": "12:00"},
        ],
        "tools": tools,
    }
    system = 4 + 1 + 3  # "system"; "Be", "brief", "."
    user = 4 + 1 + 3  # "user"; "What", "time", "?"
    assistant = 4 + 1 + 1 + 9  # "assistant"; "clock__now"; {"tz": "UTC"} is 9
    tool = 4 + 1 + 1 + 3  # "tool"; "call_0_0"; "12", ":", "00"
    tools_json = count_tokens(json.dumps(tools, sort_keys=True, ensure_ascii=False))
    assert prompt_tokens(request) == system + user + assistant + tool + tools_json + 3


def test_prompt_tokens_tolerate_odd_bodies() -> None:
    assert prompt_tokens({}) == 3
    assert prompt_tokens({"messages": ["not a message", {"role": 7}]}) == 3 + 4


def test_completion_tokens_add_tool_calls_and_reasoning() -> None:
    assert completion_tokens("It is noon.") == 4
    assert completion_tokens(None, [("clock__now", "{}")], reasoning_tokens=10) == 1 + 2 + 10
