"""Budget windows, fingerprints and reservation estimates (no store needed)."""

from __future__ import annotations

from datetime import UTC, datetime

from meshclaw.metering.calls import (
    DEFAULT_OUTPUT_RESERVE,
    estimate_call,
    model_fingerprint,
    tool_fingerprint,
)
from meshclaw.metering.prices import load_price_table
from meshclaw.metering.windows import format_amount, window_start
from meshclaw.providers.base import Message, ModelRequest, ToolCall


def test_windows_are_utc_and_weeks_start_on_monday() -> None:
    now = datetime(2026, 11, 27, 13, 45, 12, tzinfo=UTC)  # a Friday
    assert window_start("minute", now) == datetime(2026, 11, 27, 13, 45, tzinfo=UTC)
    assert window_start("hour", now) == datetime(2026, 11, 27, 13, tzinfo=UTC)
    assert window_start("day", now) == datetime(2026, 11, 27, tzinfo=UTC)
    assert window_start("week", now) == datetime(2026, 11, 23, tzinfo=UTC)
    assert window_start("month", now) == datetime(2026, 11, 1, tzinfo=UTC)


def test_fingerprints() -> None:
    a = ToolCall(id="1", name="clock.now", arguments={"tz": "UTC", "x": 1})
    b = ToolCall(id="2", name="clock.now", arguments={"x": 1, "tz": "UTC"})
    assert tool_fingerprint(a) == tool_fingerprint(b)
    assert tool_fingerprint(a) != tool_fingerprint(ToolCall(id="3", name="clock.now", arguments={}))
    one = ModelRequest(model="m", messages=(Message(role="user", content="hi"),))
    two = ModelRequest(model="m", messages=(*one.messages, Message(role="assistant", content="x")))
    assert model_fingerprint(one) == model_fingerprint(one)
    assert model_fingerprint(one) != model_fingerprint(two)


def test_reservation_estimate_is_an_upper_bound_with_max_tokens() -> None:
    prices = load_price_table()
    request = ModelRequest(model="m", messages=(Message(role="user", content="hello " * 50),))
    nano, tokens = estimate_call(prices, "scripted", request)
    assert tokens > DEFAULT_OUTPUT_RESERVE and nano > 0
    capped = ModelRequest(model="m", messages=request.messages, parameters={"max_tokens": 10})
    small_nano, small_tokens = estimate_call(prices, "scripted", capped)
    assert small_tokens == tokens - DEFAULT_OUTPUT_RESERVE + 10 and small_nano < nano
    assert estimate_call(prices, "nobody", request)[0] == 0


def test_amounts_read_like_money_or_counts() -> None:
    assert format_amount("cost", 5_000_000_000) == "$5"
    assert format_amount("cost", 1_234_567) == "$0.001234567"
    assert format_amount("calls", 60) == "60 calls"
