"""From a real MCP server's write evidence to an outcome record, through the gateway."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meshclaw.providers.scripted import ScriptedServer
from tests.conftest import World, agent_yaml
from tests.connectors.test_agent_runs import add_fixture, call

Start = Callable[[dict[str, Any]], ScriptedServer]


def test_an_mcp_write_becomes_an_outcome_and_a_claim_alone_stays_unverified(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted(
        {
            "turns": [
                {"reply": {"tool_calls": [call("fx.save", title="weekly report")]}},
                {"reply": {"content": "saved"}},
            ]
        }
    )
    world = make_world(server.base_url)
    add_fixture(world)
    spec = agent_yaml(tools=(("fx.save", "write"),), timeout=120) + (
        "outcomes:\n  - {type: note_saved, tools: [fx.save]}\n"
    )
    world.save_agent(spec)
    info = world.run("helper")
    assert info.status == "succeeded", info.error
    (outcome,) = world.platform.outcomes.list_outcomes(world.alice)
    assert (outcome.type, outcome.tool, outcome.run_id) == ("note_saved", "fx.save", info.id)
    # The connector's evidence is kept; with no verifier for the type it earns nothing.
    assert outcome.verified is False and outcome.state == "unverified"
    assert outcome.verification == {"reason": "no verifier for outcome type 'note_saved'"}
    assert outcome.ref.startswith("step:")
