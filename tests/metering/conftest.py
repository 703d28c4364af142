"""Metering fixtures: a world whose agent has run, so usage exists."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from meshclaw.providers.scripted import ScriptedServer
from tests.conftest import World, agent_yaml


def tool_turns() -> dict[str, Any]:
    return {
        "turns": [
            {
                "reply": {
                    "content": "checking",
                    "tool_calls": [{"name": "clock.now", "arguments": {"tz": "UTC"}}],
                    "cached_tokens": 5,
                }
            },
            {"reply": {"content": "Done.", "reasoning_tokens": 3}},
        ]
    }


@pytest.fixture
def ran_world(
    scripted: Callable[[dict[str, Any]], ScriptedServer], make_world: Callable[..., World]
) -> World:
    server = scripted(tool_turns())
    world = make_world(server.base_url)
    world.save_agent(agent_yaml())
    info = world.run("helper")
    assert info.status == "succeeded", info.error
    return world
