"""Per-model turns (``by_model``) and made-up tool calls (``strict_tools: false``)."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from meshclaw.errors import ConfigError
from meshclaw.providers.scripted import load_script

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

TWO_AGENTS = """
    by_model:
      agent-a:
        - reply: {content: "A speaking."}
      agent-b:
        - reply: {tool_calls: [{name: clock.now, arguments: {tz: Asia/Tokyo}}]}
        - reply:
            content: "B is done."
          errors_before: [{status: 503}]
    turns:
      - reply: {content: "Anyone else."}
"""


def _ask(served_client: openai.OpenAI, model: str, messages: list[dict[str, Any]]) -> Any:
    return served_client.chat.completions.create(
        model=model,
        messages=messages,  # type: ignore[arg-type]
        tools=CLOCK_TOOLS,  # type: ignore[arg-type]
    )


def test_each_model_holds_its_own_conversation(serve: Serve) -> None:
    served = serve(TWO_AGENTS)
    user: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    assert _ask(served.client, "agent-a", user).choices[0].message.content == "A speaking."
    first = _ask(served.client, "agent-b", user).choices[0].message
    [call] = first.tool_calls or []
    assert call.function.name == "clock__now"
    assert json.loads(call.function.arguments) == {"tz": "Asia/Tokyo"}
    # A model without its own turns is answered from ``turns``.
    assert _ask(served.client, "gpt-x", user).choices[0].message.content == "Anyone else."
    # Sequence mode per model: agent-b's second turn, after its scripted 503 once.
    follow: list[dict[str, Any]] = [
        *user,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "clock__now", "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "09:00"},
    ]
    with pytest.raises(openai.InternalServerError):
        _ask(served.client, "agent-b", follow)
    assert _ask(served.client, "agent-b", follow).choices[0].message.content == "B is done."
    # agent-a's first turn has no errors of its own: agent-b's 503 was not counted for it.
    assert _ask(served.client, "agent-a", user).choices[0].message.content == "A speaking."
    assert [r["model"] for r in served.server.requests] == [
        "agent-a",
        "agent-b",
        "gpt-x",
        "agent-b",
        "agent-b",
        "agent-a",
    ]


def test_models_listing_names_the_scripted_models(serve: Serve) -> None:
    served = serve(TWO_AGENTS)
    listed = [m.id for m in served.client.models.list()]
    assert listed == ["scripted", "agent-a", "agent-b"]


def test_a_model_without_turns_is_not_found_when_turns_is_empty(serve: Serve) -> None:
    served = serve("by_model:\n  only: [{reply: {content: hi}}]\n")
    with pytest.raises(openai.NotFoundError) as caught:
        _ask(served.client, "other", [{"role": "user", "content": "go"}])
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["code"] == "model_not_found"
    assert "'other'" in body["message"]


def test_unoffered_tools_are_refused_unless_strict_tools_is_off(serve: Serve) -> None:
    script = "turns:\n  - reply: {tool_calls: [{name: bank.send_money, arguments: {n: 1}}]}\n"
    strict = serve(script)
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(strict.client, "m", [{"role": "user", "content": "go"}])
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "tool_not_offered"
    loose = serve("strict_tools: false\n" + script)
    message = _ask(loose.client, "m", [{"role": "user", "content": "go"}]).choices[0].message
    [call] = message.tool_calls or []
    assert call.function.name == "bank__send_money"  # the wire form, like any tool name
    assert json.loads(call.function.arguments) == {"n": 1}


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("mode: sequence\napi_key: null\n", "turns", "turns, by_model or both"),
        ("by_model:\n  a: []\n", "by_model.a", "at least 1"),
        (
            "by_model:\n  a: [{reply: {content: x}, match: {any: true}}]\n",
            "by_model.a[0].match",
            "mode: match",
        ),
        (
            "mode: match\nby_model:\n  a: [{reply: {content: x}}]\n",
            "by_model.a[0].match",
            "match mode",
        ),
        ("by_model:\n  a: [{reply: {}}]\n", "by_model.a[0].reply", "content or tool_calls"),
        ("strict_tools: maybe\nturns: [{reply: {content: x}}]\n", "strict_tools", "bool"),
    ],
)
def test_invalid_by_model_scripts_name_the_field_path(text: str, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_script(text)
    problems = str(caught.value).splitlines()[1:]
    assert any(p.strip().startswith(f"{path}:") and message in p for p in problems), problems
