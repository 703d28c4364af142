"""Scripted failures and the server's own refusals, as the OpenAI SDK sees them."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from .conftest import Serve

USER: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]


def _code(exc: openai.APIStatusError) -> object:
    assert isinstance(exc.body, dict)
    return exc.body.get("code")


def test_rate_limit_then_success(serve: Serve) -> None:
    served = serve(
        """
        turns:
          - reply: {content: "finally"}
            errors_before:
              - {status: 429, message: "rate limited", retry_after: 0}
        """
    )
    with pytest.raises(openai.RateLimitError) as caught:
        served.client.chat.completions.create(model="m", messages=USER)
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "0"
    assert caught.value.body == {
        "message": "rate limited",
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    result = served.client.chat.completions.create(model="m", messages=USER)
    assert result.choices[0].message.content == "finally"
    assert len(served.server.requests) == 2


def test_errors_come_in_order_and_reset_rewinds_them(serve: Serve) -> None:
    served = serve(
        """
        turns:
          - reply: {content: ok}
            errors_before:
              - {status: 500}
              - {status: 503, message: "overloaded", retry_after: 1.5}
        """
    )
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as first:
            served.client.chat.completions.create(model="m", messages=USER)
        assert first.value.status_code == 500
        assert first.value.message.endswith("Internal Server Error")
        with pytest.raises(openai.InternalServerError) as second:
            served.client.chat.completions.create(model="m", messages=USER)
        assert second.value.status_code == 503
        assert second.value.response.headers["retry-after"] == "1.5"
        assert second.value.response.headers["retry-after-ms"] == "1500"
        served.client.chat.completions.create(model="m", messages=USER)
        served.server.reset()


def test_sdk_retries_through_scripted_errors(serve: Serve) -> None:
    served = serve(
        """
        turns:
          - reply: {content: "after retries"}
            errors_before: [{status: 429, retry_after: 0.01}, {status: 500, retry_after: 0.01}]
        """
    )
    retrying = served.client.with_options(max_retries=2)
    result = retrying.chat.completions.create(model="m", messages=USER)
    assert result.choices[0].message.content == "after retries"
    assert len(served.server.requests) == 3


def test_malformed_reply(serve: Serve) -> None:
    served = serve(
        """
        turns:
          - reply: {content: ok}
            errors_before: [{malformed: true}, {malformed: true}]
        """
    )
    raw = httpx.post(
        f"{served.server.base_url}/chat/completions", json={"model": "m", "messages": USER}
    )
    assert raw.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        raw.json()
    with (
        pytest.raises(json.JSONDecodeError),
        served.client.chat.completions.create(model="m", messages=USER, stream=True) as stream,
    ):
        list(stream)
    assert served.client.chat.completions.create(model="m", messages=USER).choices


def test_malformed_reply_breaks_the_sdk(serve: Serve) -> None:
    served = serve("turns:\n  - reply: {content: ok}\n    errors_before: [{malformed: true}]\n")
    with pytest.raises(ValueError):
        served.client.chat.completions.create(model="m", messages=USER)


def test_api_key_is_enforced(serve: Serve) -> None:
    served = serve(
        "api_key: sk-right\nmodels: [a]\nturns:\n  - reply: {content: ok}\n", api_key="sk-wrong"
    )
    with pytest.raises(openai.AuthenticationError) as caught:
        served.client.chat.completions.create(model="m", messages=USER)
    assert _code(caught.value) == "invalid_api_key"
    assert "sk-right" not in caught.value.response.text
    assert "sk-wrong" not in caught.value.response.text
    with pytest.raises(openai.AuthenticationError):
        served.client.models.list()
    assert served.server.requests == []

    anonymous = httpx.get(f"{served.server.base_url}/models")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "invalid_request_error"

    authorised = served.client.with_options(api_key="sk-right")
    assert authorised.chat.completions.create(model="m", messages=USER).choices
    assert [m.id for m in authorised.models.list().data] == ["a"]


def test_tool_not_offered(serve: Serve) -> None:
    served = serve("turns:\n  - reply: {tool_calls: [{name: mail.send, arguments: {to: bob}}]}\n")
    tools = [{"type": "function", "function": {"name": "clock__now"}}]
    with pytest.raises(openai.BadRequestError) as caught:
        served.client.chat.completions.create(model="m", messages=USER, tools=tools)
    assert _code(caught.value) == "tool_not_offered"
    assert "mail.send" in caught.value.message
    with pytest.raises(openai.BadRequestError, match="no tools"):
        served.client.chat.completions.create(model="m", messages=USER)


def test_script_exhausted(serve: Serve) -> None:
    served = serve("turns:\n  - reply: {content: only}\n")
    history = [*USER, {"role": "assistant", "content": "only"}, {"role": "user", "content": "?"}]
    with pytest.raises(openai.BadRequestError) as caught:
        served.client.chat.completions.create(model="m", messages=history)
    assert _code(caught.value) == "script_exhausted"
    assert caught.value.body == {
        "message": "script exhausted: the conversation has 1 assistant message(s) but the "
        "script has only 1 turn(s)",
        "type": "invalid_request_error",
        "param": None,
        "code": "script_exhausted",
    }


def test_no_matching_turn(serve: Serve) -> None:
    served = serve("mode: match\nturns:\n  - {match: {last_tool: done}, reply: {content: ok}}\n")
    with pytest.raises(openai.BadRequestError) as caught:
        served.client.chat.completions.create(model="m", messages=USER)
    assert _code(caught.value) == "no_matching_turn"


def test_cached_tokens_above_prompt_are_refused(serve: Serve) -> None:
    served = serve("turns:\n  - reply: {content: ok, cached_tokens: 1000}\n")
    with pytest.raises(openai.BadRequestError) as caught:
        served.client.chat.completions.create(model="m", messages=USER)
    assert _code(caught.value) == "cached_tokens_exceed_prompt"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"messages": USER}, "model"),
        ({"model": "m", "messages": [{"content": "x"}]}, "messages[0].role"),
    ],
)
def test_invalid_requests_are_400(serve: Serve, body: dict[str, Any], param: str) -> None:
    served = serve("turns:\n  - reply: {content: ok}\n")
    response = httpx.post(f"{served.server.base_url}/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_non_json_body_and_unknown_route(serve: Serve) -> None:
    served = serve("turns:\n  - reply: {content: ok}\n")
    base = served.server.base_url
    not_json = httpx.post(f"{base}/chat/completions", content=b"{nope")
    assert not_json.status_code == 400
    assert not_json.json()["error"]["message"] == "request body is not valid JSON"
    missing = httpx.get(f"{base}/embeddings")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "invalid_request_error"


def test_client_timeout_during_delay(serve: Serve) -> None:
    served = serve("turns:\n  - reply: {content: late}\n    delay_ms: 30000\n", timeout=0.2)
    with pytest.raises(openai.APITimeoutError):
        served.client.chat.completions.create(model="m", messages=USER)
    # The server notices the hang-up, so stopping it does not wait out the 30 s delay.
