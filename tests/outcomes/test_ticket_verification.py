"""A resolved ticket against the built-in tickets MCP server (GitHub REST fake on loopback):
the verifier reads the ticket back by number and credits it only to a reporter other
than the agent's owner; the durability re-check reads it again."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from meshclaw.clock import utcnow
from meshclaw.connectors.approvals import ToolApprovals
from meshclaw.connectors.base import ToolContext, ToolResult
from meshclaw.connectors.config import ConnectorConfig
from meshclaw.connectors.credentials import MemoryCredentialStore
from meshclaw.connectors.fakes.github import GitHubFake, GitHubState
from meshclaw.connectors.mcp import McpConnector
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.outcomes import ToolReadLookup
from meshclaw.providers.scripted import ScriptedServer
from tests.conftest import World, agent_yaml

REPO = "acme/ops"
SPEC = (
    agent_yaml(tools=(("tickets.resolve", "write"), ("tickets.get_ticket", "read")), timeout=120)
    + "outcomes:\n  - {type: ticket_resolved}\n"
)


@pytest.fixture
def github() -> Iterator[GitHubFake]:
    state = GitHubState()
    state.add_repo(REPO)
    for login in ("alice", "bob"):
        state.add_token(f"ghp-{login}", login)
    with GitHubFake(state) as fake:
        yield fake


def connector(github: GitHubFake, world: World) -> McpConnector:
    """The tickets server acting with alice's own (delegated) tracker token."""
    config = ConnectorConfig(
        command=sys.executable,
        args=["-m", "meshclaw.connectors.servers", "tickets"],
        env={"MESHCLAW_TICKETS_API_URL": github.api_url, "MESHCLAW_TICKETS_REPO": REPO},
        credentials="gh",
        credential_env={"MESHCLAW_TICKETS_TOKEN": "token"},
        approval="first_use",
    )
    store = MemoryCredentialStore({"gh": {"default": {"token": "ghp-alice"}}})
    return McpConnector(
        "tickets", config, approvals=ToolApprovals(world.platform.db), credentials=store
    )


def file_ticket(github: GitHubFake, login: str, title: str) -> int:
    response = httpx.post(f"{github.api_url}/repos/{REPO}/issues", json={"title": title},
                          headers={"Authorization": f"Bearer ghp-{login}"})  # fmt: skip
    assert response.status_code == 201
    number: int = response.json()["number"]
    return number


def resolve(number: int) -> dict[str, Any]:
    return {"name": "tickets.resolve", "arguments": {"number": number}}


def test_a_ticket_is_credited_to_its_reporter_and_loses_credit_when_reopened(
    github: GitHubFake,
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
) -> None:
    bobs = file_ticket(github, "bob", "Checkout is slow")
    alices = file_ticket(github, "alice", "Tidy my own dashboard")
    declined = file_ticket(github, "bob", "Rewrite it in Rust")
    model = scripted({"turns": [
        {"reply": {"tool_calls": [resolve(bobs), resolve(alices)]}},
        {"reply": {"tool_calls": [{"name": "tickets.resolve",
                                   "arguments": {"number": declined,
                                                 "resolution": "not_planned"}}]}},
        {"reply": {"content": "done"}},
    ]})  # fmt: skip
    world = make_world(model.base_url)
    world.save_agent(SPEC)
    info = world.run("helper", connectors=ConnectorRegistry([connector(github, world)]))
    assert info.status == "succeeded", info.error

    outcomes = world.platform.outcomes
    by_ref = {o.ref: o for o in outcomes.list_outcomes(world.alice)}
    assert set(by_ref) == {f"{REPO}#{n}" for n in (bobs, alices, declined)}
    for_bob = by_ref[f"{REPO}#{bobs}"]
    assert (for_bob.verified, for_bob.beneficiaries) == (True, [world.bob.user_id])
    assert for_bob.verification == {
        "checked": "resolved in the tracker; reported by bob"
    }  # fmt: skip
    own = by_ref[f"{REPO}#{alices}"]
    assert own.verified and own.state == "self"  # she filed it: resolving it earns nothing
    not_planned = by_ref[f"{REPO}#{declined}"]
    assert not not_planned.verified
    assert not_planned.verification == {"reason": "closed as not planned, not resolved"}
    # The verifier read each ticket back by number, as steps of the run.
    steps = [s for s in world.platform.runs.steps(world.alice, info.id) if s.kind == "tool"]
    reads = [s.request for s in steps if s.name == "tickets.get_ticket"]
    assert [r["arguments"] for r in reads if r] == [
        {"number": bobs}, {"number": alices}, {"number": declined},
    ]  # fmt: skip
    assert outcomes.feedback(world.bob, for_bob.id, "accepted").state == "credited"

    # Bob reopens it; the durability re-check reads the real tracker again.
    reopened = httpx.patch(f"{github.api_url}/repos/{REPO}/issues/{bobs}",
                           json={"state": "open"},
                           headers={"Authorization": "Bearer ghp-bob"})  # fmt: skip
    assert reopened.status_code == 200
    recheck_conn = connector(github, world)
    ctx = ToolContext(org_id=world.alice.org_id, user_id=world.alice.user_id,
                      agent_id="agt", run_id=info.id, step_id="recheck",
                      idempotency_key="recheck")  # fmt: skip

    async def read(tool: str, arguments: dict[str, Any]) -> ToolResult:
        return await recheck_conn.call_tool(tool.removeprefix("tickets."), arguments, ctx)

    async def recheck() -> Any:
        try:
            return await outcomes.recheck_due(now=utcnow() + timedelta(hours=73))
        finally:
            await recheck_conn.aclose()

    outcomes.lookup = ToolReadLookup(read)
    summary = asyncio.run(recheck())
    assert (summary.checked, summary.undone) == (2, 1)  # bob's and alice's own
    after = outcomes.get(world.alice, for_bob.id)
    assert after.state == "undone" and after.feedback[-1].verdict == "reopened"
    assert outcomes.get(world.alice, own.id).state == "self"
