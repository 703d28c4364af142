"""The offline token estimate used when a provider sends no usage."""

from __future__ import annotations

from meshclaw.providers._estimate import count_tokens, estimate_usage
from meshclaw.providers.base import Message, ModelRequest, ToolCall


def test_count_tokens_is_deterministic_and_near_four_chars_per_token() -> None:
    assert count_tokens(None) == count_tokens("") == 0
    assert count_tokens("The quick brown fox jumps over the lazy dog.") == 10
    assert count_tokens("2026") == 2 and count_tokens("€") == 1
    prose = "Agents should be measured by the outcomes they deliver, not tokens. " * 20
    assert 3 <= len(prose) / count_tokens(prose) <= 5


def test_estimate_covers_messages_tool_calls_and_is_marked() -> None:
    call = ToolCall(id="1", name="mail.send", arguments={"to": "a@b.c"})
    request = ModelRequest(
        model="m",
        messages=(
            Message(role="user", content="send it"),
            Message(role="assistant", tool_calls=(call,)),
        ),
    )
    usage = estimate_usage(request, "Sent.", (call,))
    assert usage.estimated
    assert usage.input_tokens > 2 * 4 and usage.output_tokens > count_tokens("Sent.")
