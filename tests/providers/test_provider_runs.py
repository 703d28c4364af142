"""Whole agent runs through the gateway on the Anthropic and Bedrock fakes: tool calls,
exact metering (cache reads, cache writes, reasoning) and cost from the price table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from meshclaw.config import ProviderConfig
from meshclaw.metering.prices import to_nano
from meshclaw.providers.base import Usage
from meshclaw.providers.fakes import FakeAnthropic, FakeBedrock, FakeCall, FakeTurn, FakeUsage
from meshclaw.store.models import UsageRecord
from tests.conftest import World

TURNS = (
    FakeTurn(
        text="Checking the time.",
        calls=(FakeCall(name="clock.now", arguments={"tz": "UTC"}),),
        usage=FakeUsage(input_tokens=40, output_tokens=20, cache_write_tokens=900),
    ),
    FakeTurn(
        calls=(FakeCall(name="notes.write", arguments={"title": "t", "body": "b"}),),
        usage=FakeUsage(
            input_tokens=60, output_tokens=35, cache_read_tokens=900, reasoning_tokens=9
        ),
    ),
    FakeTurn(
        text="All done.", usage=FakeUsage(input_tokens=80, output_tokens=5, cache_read_tokens=900)
    ),
)


def spec(provider: str, model: str, stream: bool) -> str:
    flag = str(stream).lower()
    return (
        f"name: vendor-agent\nowner: alice\n"
        f"model: {{provider: {provider}, model: {model}, parameters: {{stream: {flag}}}}}\n"
        "instructions: You help.\n"
        "tools:\n  - {name: clock.now, scope: read}\n  - {name: notes.write, scope: write}\n"
        "budget: {max_steps: 10, timeout_seconds: 30}\n"
    )


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("vendor", ["anthropic", "bedrock"])
def test_agent_run_with_tools_is_metered_exactly(
    make_world: Callable[..., World],
    monkeypatch: pytest.MonkeyPatch,
    vendor: str,
    stream: bool,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")
    server: Any
    if vendor == "anthropic":
        server = FakeAnthropic(TURNS).start()
        config = ProviderConfig(kind="anthropic", base_url=server.base_url)
        model = "claude-fake-1"
    else:
        server = FakeBedrock(TURNS).start()
        config = ProviderConfig(kind="bedrock", base_url=server.url, region="us-east-1")
        model = "anthropic.claude-fake-v1:0"
    try:
        world = make_world()
        world.platform.provider_configs[vendor] = config
        world.save_agent(spec(vendor, model, stream))
        info = world.run("vendor-agent", "write a note")
    finally:
        server.stop()

    assert info.status == "succeeded", info.error
    assert info.output == "All done."
    steps = world.platform.runs.steps(world.alice, info.id)
    assert [(s.kind, s.name, s.status) for s in steps] == [
        ("model", model, "ok"),
        ("tool", "clock.now", "ok"),
        ("model", model, "ok"),
        ("tool", "notes.write", "ok"),
        ("model", model, "ok"),
    ]
    # The tool results went back on the vendor's wire.
    assert len(server.requests) == 3
    with world.platform.db.session() as session:
        rows = list(
            session.scalars(
                select(UsageRecord)
                .where(UsageRecord.run_id == info.id, UsageRecord.kind == "model")
                .order_by(UsageRecord.created_at, UsageRecord.id)
            )
        )
    got = [
        (r.input_tokens, r.output_tokens, r.cached_tokens, r.cache_write_tokens, r.estimated)
        for r in rows
    ]
    assert got == [(40, 20, 0, 900, False), (960, 35, 900, 0, False), (980, 5, 900, 0, False)]
    # Bedrock reports no separate reasoning count; Anthropic does.
    assert rows[1].reasoning_tokens == (9 if vendor == "anthropic" else 0)
    prices = world.platform.prices
    for row in rows:
        usage = Usage(
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            cached_tokens=row.cached_tokens,
            cache_write_tokens=row.cache_write_tokens,
        )
        cost = prices.cost_usd(vendor, model, usage)
        assert cost is not None and cost > 0
        assert row.cost_nano_usd == to_nano(cost)
