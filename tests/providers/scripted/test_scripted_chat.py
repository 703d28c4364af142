"""Non-streaming chat completions through the official OpenAI SDK."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import httpx
import pytest

from meshclaw.providers.scripted import create_app, load_script
from meshclaw.providers.scripted.tokens import completion_tokens, prompt_tokens

from .conftest import Serve

CLOCK_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "clock__now",
            "description": "Current time",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
        },
    }
]

TOOL_TURN = """
    models: [scripted-small, scripted-large]
    turns:
      - reply:
          content: "Let me check the time."
          tool_calls:
            - {name: clock.now, arguments: {tz: UTC}}
      - reply: {content: "It is noon."}
"""


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def test_tool_call_turn(serve: Serve) -> None:
    served = serve(TOOL_TURN)
    messages = _user("What time is it?")
    result = served.client.chat.completions.create(
        model="gpt-whatever", messages=messages, tools=CLOCK_TOOLS
    )
    assert result.object == "chat.completion"
    assert result.model == "gpt-whatever"
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.role == "assistant"
    assert choice.message.content == "Let me check the time."
    [call] = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.id == "call_0_0"
    assert call.function.name == "clock__now"
    assert json.loads(call.function.arguments) == {"tz": "UTC"}

    request = {"model": "gpt-whatever", "messages": messages, "tools": CLOCK_TOOLS}
    assert served.server.requests == [request]
    usage = result.usage
    assert usage is not None
    assert usage.prompt_tokens == prompt_tokens(request)
    assert usage.completion_tokens == completion_tokens(
        "Let me check the time.", [("clock__now", call.function.arguments)]
    )
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_exact_tool_name_is_preferred_to_wire_form(serve: Serve) -> None:
    served = serve(TOOL_TURN)
    tools = [{"type": "function", "function": {"name": "clock.now"}}]
    result = served.client.chat.completions.create(model="m", messages=_user("time?"), tools=tools)
    [call] = result.choices[0].message.tool_calls or []
    assert call.function.name == "clock.now"


def test_cached_and_reasoning_tokens_are_reported(serve: Serve) -> None:
    served = serve(
        """
        turns:
          - reply: {content: "Thought hard.", reasoning_tokens: 40, cached_tokens: 5}
        """
    )
    messages = _user("Think about it.")
    usage = served.client.chat.completions.create(model="m", messages=messages).usage
    assert usage is not None
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 5
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 40
    assert usage.completion_tokens == completion_tokens("Thought hard.") + 40
    assert usage.prompt_tokens == prompt_tokens({"messages": messages})


def test_sequence_mode_keeps_interleaved_conversations_apart(serve: Serve) -> None:
    served = serve(
        """
        turns:
          - reply: {content: first}
          - reply: {content: second}
          - reply: {content: third}
        """
    )

    def ask(history: list[dict[str, Any]]) -> str:
        result = served.client.chat.completions.create(model="m", messages=history)
        content = result.choices[0].message.content or ""
        history.append({"role": "assistant", "content": content})
        history.append({"role": "user", "content": "go on"})
        return content

    alice = _user("Alice here")
    bob = _user("Bob here")
    assert ask(alice) == "first"
    assert ask(bob) == "first"
    assert ask(alice) == "second"
    assert ask(alice) == "third"
    assert ask(bob) == "second"


def test_concurrent_conversations_get_their_own_turns(serve: Serve) -> None:
    served = serve("turns:\n" + "".join(f"  - reply: {{content: turn{i}}}\n" for i in range(4)))

    def ask(done_turns: int) -> str | None:
        history = _user("start")
        for i in range(done_turns):
            history += [{"role": "assistant", "content": f"turn{i}"}, *_user("next")]
        result = served.client.chat.completions.create(model="m", messages=history)
        return result.choices[0].message.content

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, [3, 0, 2, 1] * 4))
    assert answers == ["turn3", "turn0", "turn2", "turn1"] * 4


def test_match_mode_picks_by_last_message(serve: Serve) -> None:
    served = serve(
        """
        mode: match
        turns:
          - match: {last_user: "(?i)deploy"}
            reply: {content: "Deploying."}
          - match: {last_tool: "^status: ok"}
            reply: {content: "Done."}
          - match: {any: true}
            reply: {content: "Fallback."}
        """
    )

    def answer(messages: list[dict[str, Any]]) -> str | None:
        result = served.client.chat.completions.create(model="m", messages=messages)
        return result.choices[0].message.content

    assert answer(_user("Please DEPLOY the app")) == "Deploying."
    after_tool: list[dict[str, Any]] = [
        *_user("deploy"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "d", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "status: ok"},
    ]
    assert answer(after_tool) == "Done."
    assert answer(_user("hello")) == "Fallback."
    text_parts = [{"role": "user", "content": [{"type": "text", "text": "deploy now"}]}]
    assert answer(text_parts) == "Deploying."


def test_models_are_listed(serve: Serve) -> None:
    served = serve(TOOL_TURN)
    models = served.client.models.list()
    assert [m.id for m in models.data] == ["scripted-small", "scripted-large"]
    assert {m.owned_by for m in models.data} == {"meshclaw-scripted"}
    raw = httpx.get(f"{served.server.base_url}/models").json()
    assert raw["object"] == "list"
    assert raw["data"][0] == {
        "id": "scripted-small",
        "object": "model",
        "created": 0,
        "owned_by": "meshclaw-scripted",
    }


def test_reset_forgets_requests(serve: Serve) -> None:
    served = serve(TOOL_TURN)
    served.client.chat.completions.create(model="m", messages=_user("hi"), tools=CLOCK_TOOLS)
    assert len(served.server.wait_for_requests(1)) == 1
    served.server.reset()
    assert served.server.requests == []
    with pytest.raises(TimeoutError):
        served.server.wait_for_requests(1, timeout=0.05)


def test_create_app_serves_over_asgi() -> None:
    app = create_app(load_script("turns:\n  - reply: {content: hello}\n"))

    async def main() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://scripted") as client:
            body = {"model": "m", "messages": _user("hi")}
            response = await client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200
            result: dict[str, Any] = response.json()
            return result

    result = anyio.run(main)
    assert result["choices"][0]["message"]["content"] == "hello"
    assert result["choices"][0]["finish_reason"] == "stop"
