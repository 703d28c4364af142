"""The Anthropic provider through the official SDK against the Messages API fake."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from meshclaw.config import ProviderConfig
from meshclaw.errors import ProviderError
from meshclaw.providers.base import Message, ModelRequest, ModelResponse, ToolCall, ToolSpec
from meshclaw.providers.fakes import FakeAnthropic, FakeCall, FakeError, FakeTurn, FakeUsage
from meshclaw.providers.registry import ProviderRegistry

TOOL = ToolSpec(
    name="clock.now",
    description="Current time",
    parameters={"type": "object", "properties": {"tz": {"type": "string"}}},
)


@pytest.fixture
def fake_anthropic() -> Iterator[Any]:
    servers: list[FakeAnthropic] = []

    def start(*turns: FakeTurn, api_key: str | None = None) -> FakeAnthropic:
        server = FakeAnthropic(turns, api_key=api_key).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def complete(server: FakeAnthropic, request: ModelRequest, **config: Any) -> ModelResponse:
    registry = ProviderRegistry(
        {"claude": ProviderConfig(kind="anthropic", base_url=server.base_url, **config)}
    )

    async def go() -> ModelResponse:
        try:
            return await registry.get("claude").complete(request)
        finally:
            await registry.aclose()

    return asyncio.run(go())


def request(stream: bool = False, **params: Any) -> ModelRequest:
    return ModelRequest(
        model="claude-fake-1",
        messages=(
            Message(role="system", content="You help."),
            Message(role="user", content="time?"),
        ),
        tools=(TOOL,),
        parameters={"stream": stream, **params},
    )


CACHED = FakeUsage(
    input_tokens=20,
    output_tokens=30,
    cache_read_tokens=1000,
    cache_write_tokens=50,
    reasoning_tokens=12,
)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_and_exact_usage_with_cache_and_thinking(
    fake_anthropic: Any, stream: bool
) -> None:
    server = fake_anthropic(
        FakeTurn(
            thinking="The user wants the time.",
            text="Checking.",
            calls=(FakeCall(name="clock.now", arguments={"tz": "UTC"}),),
            usage=CACHED,
        )
    )
    response = complete(server, request(stream=stream, cache_system=True))
    assert response.content == "Checking."
    assert response.tool_calls == (
        ToolCall(
            id="toolu_fake_0_0",
            name="clock.now",
            arguments={"tz": "UTC"},
            raw_arguments=response.tool_calls[0].raw_arguments,
        ),
    )
    assert response.finish_reason == "tool_use"
    usage = response.usage
    assert (usage.input_tokens, usage.cached_tokens, usage.cache_write_tokens) == (1020, 1000, 50)
    assert (usage.output_tokens, usage.reasoning_tokens, usage.estimated) == (30, 12, False)
    sent = server.requests[0]
    assert sent["system"] == [
        {"type": "text", "text": "You help.", "cache_control": {"type": "ephemeral"}}
    ]
    assert sent["tools"][0]["name"] == "clock__now"
    assert sent["tools"][0]["input_schema"] == TOOL.parameters
    assert sent["max_tokens"] == 4096
    assert sent.get("stream", False) is stream


def test_tool_results_are_sent_back_as_one_user_turn(fake_anthropic: Any) -> None:
    server = fake_anthropic(FakeTurn(text="one"), FakeTurn(text="Done."))
    calls = (
        ToolCall(id="t1", name="clock.now", arguments={}),
        ToolCall(id="t2", name="notes.write", arguments={"title": "x"}),
    )
    convo = ModelRequest(
        model="claude-fake-1",
        messages=(
            Message(role="user", content="go"),
            Message(role="assistant", content=None, tool_calls=calls),
            Message(role="tool", content="12:00", tool_call_id="t1"),
            Message(role="tool", content="ok", tool_call_id="t2"),
        ),
    )
    assert complete(server, convo).content == "Done."
    sent = server.requests[0]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"][1] == {
        "type": "tool_use",
        "id": "t2",
        "name": "notes__write",
        "input": {"title": "x"},
    }
    assert [b["tool_use_id"] for b in sent[2]["content"]] == ["t1", "t2"]


@pytest.mark.parametrize("stream", [False, True])
def test_missing_usage_is_estimated_and_marked(fake_anthropic: Any, stream: bool) -> None:
    server = fake_anthropic(FakeTurn(text="It is noon in Paris.", usage=None))
    usage = complete(server, request(stream=stream)).usage
    assert usage.estimated
    assert usage.input_tokens > 10 and usage.output_tokens >= 5


@pytest.mark.parametrize(
    ("status", "retryable"), [(429, True), (529, True), (500, True), (400, False)]
)
def test_errors_map_to_provider_errors(fake_anthropic: Any, status: int, retryable: bool) -> None:
    server = fake_anthropic(FakeTurn(text="x", errors_before=(FakeError(status=status),)))
    with pytest.raises(ProviderError) as info:
        complete(server, request())
    assert info.value.retryable is retryable
    assert info.value.status == status


def test_api_key_comes_from_the_named_variable(
    fake_anthropic: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-ant-very-secret"
    server = fake_anthropic(FakeTurn(text="hi"), api_key=secret)
    monkeypatch.setenv("ANTHROPIC_KEY_FOR_TEST", secret)
    assert complete(server, request(), api_key_env="ANTHROPIC_KEY_FOR_TEST").content == "hi"
    monkeypatch.setenv("ANTHROPIC_KEY_FOR_TEST", "wrong")
    with pytest.raises(ProviderError) as info:
        complete(server, request(), api_key_env="ANTHROPIC_KEY_FOR_TEST")
    assert info.value.status == 401
    assert secret not in str(info.value)
