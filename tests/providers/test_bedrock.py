"""The Bedrock provider through boto3 against the Converse / ConverseStream fake."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer

from meshclaw.config import ProviderConfig
from meshclaw.errors import ProviderError
from meshclaw.providers.base import Message, ModelRequest, ModelResponse, ToolCall, ToolSpec
from meshclaw.providers.fakes import FakeBedrock, FakeCall, FakeError, FakeTurn, FakeUsage
from meshclaw.providers.fakes.bedrock import encode_frame
from meshclaw.providers.registry import ProviderRegistry

MODEL = "anthropic.claude-fake-v1:0"
TOOL = ToolSpec(
    name="clock.now",
    description="Current time",
    parameters={"type": "object", "properties": {"tz": {"type": "string"}}},
)


@pytest.fixture
def fake_bedrock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    # Static test credentials: boto3 signs requests; the fake only checks they are signed.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    servers: list[FakeBedrock] = []

    def start(*turns: FakeTurn) -> FakeBedrock:
        server = FakeBedrock(turns).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def complete(server: FakeBedrock, request: ModelRequest) -> ModelResponse:
    config = ProviderConfig(kind="bedrock", base_url=server.url, region="eu-west-1")
    registry = ProviderRegistry({"bedrock": config})

    async def go() -> ModelResponse:
        try:
            return await registry.get("bedrock").complete(request)
        finally:
            await registry.aclose()

    return asyncio.run(go())


def request(stream: bool = False, **params: Any) -> ModelRequest:
    return ModelRequest(
        model=MODEL,
        messages=(
            Message(role="system", content="You help."),
            Message(role="user", content="time?"),
        ),
        tools=(TOOL,),
        parameters={"stream": stream, **params},
    )


def test_event_stream_frames_parse_with_botocore() -> None:
    frame = encode_frame({":event-type": "messageStart", ":message-type": "event"}, b'{"a":1}')
    buffer = EventStreamBuffer()
    buffer.add_data(frame)
    (message,) = list(buffer)
    assert message.headers[":event-type"] == "messageStart"
    assert message.payload == b'{"a":1}'


@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_and_exact_usage_with_cache(fake_bedrock: Any, stream: bool) -> None:
    server = fake_bedrock(
        FakeTurn(
            text="Checking.",
            calls=(FakeCall(name="clock.now", arguments={"tz": "UTC"}),),
            usage=FakeUsage(
                input_tokens=20, output_tokens=30, cache_read_tokens=1000, cache_write_tokens=50
            ),
        )
    )
    response = complete(server, request(stream=stream, max_tokens=256, top_k=5))
    assert response.content == "Checking."
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        ("tooluse_fake_0_0", "clock.now", {"tz": "UTC"})
    ]
    assert response.finish_reason == "tool_use"
    usage = response.usage
    assert (usage.input_tokens, usage.cached_tokens, usage.cache_write_tokens) == (1020, 1000, 50)
    assert (usage.output_tokens, usage.estimated) == (30, False)
    assert server.model_ids == [MODEL]
    sent = server.requests[0]
    assert sent["system"] == [{"text": "You help."}]
    assert sent["inferenceConfig"] == {"maxTokens": 256}
    assert sent["additionalModelRequestFields"] == {"top_k": 5}
    assert sent["toolConfig"]["tools"][0]["toolSpec"]["name"] == "clock__now"


def test_tool_results_go_back_in_one_user_turn(fake_bedrock: Any) -> None:
    server = fake_bedrock(FakeTurn(text="one"), FakeTurn(text="Done."))
    calls = (
        ToolCall(id="t1", name="clock.now", arguments={}),
        ToolCall(id="t2", name="notes.write", arguments={"title": "x"}),
    )
    convo = ModelRequest(
        model=MODEL,
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
    assert [b["toolResult"]["toolUseId"] for b in sent[2]["content"]] == ["t1", "t2"]


@pytest.mark.parametrize("stream", [False, True])
def test_missing_usage_is_estimated_and_marked(fake_bedrock: Any, stream: bool) -> None:
    server = fake_bedrock(FakeTurn(text="It is noon in Paris.", usage=None))
    usage = complete(server, request(stream=stream)).usage
    assert usage.estimated
    assert usage.input_tokens > 10 and usage.output_tokens >= 5


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (503, True), (400, False)])
def test_errors_map_to_provider_errors(fake_bedrock: Any, status: int, retryable: bool) -> None:
    server = fake_bedrock(FakeTurn(text="x", errors_before=(FakeError(status=status),)))
    with pytest.raises(ProviderError) as info:
        complete(server, request())
    assert info.value.retryable is retryable
    assert info.value.status == status
