"""The built-in tickets MCP server against a real Redmine (Debian's ``redmine`` package,
a throwaway SQLite instance on loopback), and an agent run that resolves a Redmine issue
and records a verified ``ticket_resolved`` outcome."""

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
from meshclaw.connectors.mcp import McpConnector
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.outcomes import ToolReadLookup
from meshclaw.providers.scripted import ScriptedServer
from tests.conftest import World, agent_yaml
from tests.connectors.conftest import require
from tests.connectors.redminepeer import Redmine, redmine_installed, start_redmine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redmine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redmine]:
    require(
        redmine_installed(), "Redmine is not installed (apt-get install redmine redmine-sqlite)"
    )
    with start_redmine(tmp_path_factory.mktemp("redmine")) as server:
        yield server


def connector(redmine: Redmine, project: str, approvals: ToolApprovals, key: str) -> McpConnector:
    config = ConnectorConfig(
        command=sys.executable,
        args=["-m", "meshclaw.connectors.servers", "tickets"],
        env={
            "MESHCLAW_TICKETS_KIND": "redmine",
            "MESHCLAW_TICKETS_API_URL": redmine.url,
            "MESHCLAW_TICKETS_PROJECT": project,
        },
        credentials="redmine",
        credential_env={"MESHCLAW_TICKETS_TOKEN": "token"},
        approval="first_use",
    )
    store = MemoryCredentialStore({"redmine": {"default": {"token": key}}})
    return McpConnector("tickets", config, approvals=approvals, credentials=store)


def ctx(step: str, run: str = "run_1") -> ToolContext:
    return ToolContext(
        org_id="org_1", user_id="usr_1", agent_id="agt_1", run_id=run,
        step_id=step, idempotency_key=f"idem_{step}",
    )  # fmt: skip


def test_ticket_tools_against_redmine(redmine: Redmine, approvals: ToolApprovals) -> None:
    project = redmine.project({"alice": "Developer", "bob": "Reporter"})
    other = redmine.project({"alice": "Developer"})
    reported = redmine.file_issue("bob", project, "Checkout is slow")
    elsewhere = redmine.file_issue("alice", other, "Not this project's")
    conn = connector(redmine, project, approvals, redmine.keys["alice"])
    results: dict[str, ToolResult] = {}

    async def scenario() -> None:
        async def call(key: str, tool: str, step: str | None = None, **arguments: Any) -> None:
            results[key] = await conn.call_tool(tool, arguments, ctx(step or key))

        try:
            await call("search", "search_tickets", query="slow")
            await call("create", "create_ticket", title="Add checkout cache", body="For the p99",
                       labels=["Feature"])  # fmt: skip
            await call("create-again", "create_ticket", step="create", title="Add checkout cache")
            await call("progress", "transition", number=reported, status="in-progress")
            await call("comment", "comment", number=reported, body="Cache added behind a flag.")
            await call("resolve", "resolve", number=reported, comment="p99 back to 300 ms.")
            await call("get", "get_ticket", number=reported)
            await call("open", "search_tickets", query="checkout")
            await call("closed", "search_tickets", state="closed")
            await call("elsewhere", "get_ticket", number=elsewhere)
            await call("missing", "comment", number=99999, body="x")
        finally:
            await conn.aclose()

    asyncio.run(scenario())
    failed = {k: r.content for k, r in results.items() if r.is_error}
    assert sorted(failed) == ["elsewhere", "missing"], failed
    assert f"not found in {project}" in failed["missing"]
    assert f"not found in {project}" in failed["elsewhere"]

    def data(key: str) -> dict[str, Any]:
        found = results[key].data
        assert found is not None
        value: dict[str, Any] = found.get("evidence") or found["structured"]
        return value

    [hit] = data("search")["tickets"]
    assert (hit["key"], hit["reporter"], hit["status"], hit["resolution"]) == (
        f"{project}#{reported}", "bob", "todo", None,  # Redmine's "New"
    )  # fmt: skip
    created = data("create")
    assert created["status"] == "todo" and not created["duplicate"]
    assert created["url"] == f"{redmine.url}/issues/{created['number']}"
    assert data("create-again") == created | {"duplicate": True}
    assert data("progress")["status"] == "in-progress"
    assert data("comment")["comment_id"]
    resolved = data("resolve")
    assert (resolved["status"], resolved["resolution"]) == ("closed", "completed")
    ticket = data("get")
    assert (ticket["status"], ticket["tracker_status"]) == ("closed", "Closed")
    assert (ticket["reporter"], ticket["resolution"], ticket["closed_by"]) == (
        "bob", "completed", "alice",
    )  # fmt: skip
    assert [(c["by"], c["body"]) for c in ticket["comment_list"]] == [
        ("alice", "Cache added behind a flag."), ("alice", "p99 back to 300 ms."),
    ]  # fmt: skip
    assert [t["key"] for t in data("open")["tickets"]] == [created["key"]]
    assert data("open")["tickets"][0]["labels"] == ["Feature"]
    assert [t["key"] for t in data("closed")["tickets"]] == [f"{project}#{reported}"]
    # What Redmine itself now says.
    issue = httpx.get(f"{redmine.url}/issues/{created['number']}.json",
                      headers=redmine.as_user("admin")).json()["issue"]  # fmt: skip
    assert issue["author"]["name"] == "Alice Test" and issue["tracker"]["name"] == "Feature"


def test_a_bad_redmine_key_is_clear(redmine: Redmine, approvals: ToolApprovals) -> None:
    project = redmine.project({"alice": "Developer"})
    conn = connector(redmine, project, approvals, "0123456789abcdef-stale")

    async def scenario() -> ToolResult:
        try:
            return await conn.call_tool("search_tickets", {}, ctx("s"))
        finally:
            await conn.aclose()

    result = asyncio.run(scenario())
    assert result.is_error and "refused the API key" in result.content
    assert "stale" not in result.content


def test_an_agent_resolves_a_redmine_issue_and_its_reporter_gets_the_outcome(
    redmine: Redmine,
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
) -> None:
    project = redmine.project({"alice": "Developer", "bob": "Reporter"})
    number = redmine.file_issue("bob", project, "VPN drops every 30 minutes")
    model = scripted({"turns": [
        {"reply": {"tool_calls": [{"name": "tickets.get_ticket",
                                   "arguments": {"number": number}}]}},
        {"reply": {"tool_calls": [{"name": "tickets.resolve",
                                   "arguments": {"number": number,
                                                 "comment": "Raised the VPN idle timeout."}}]}},
        {"reply": {"content": "resolved"}},
    ]})  # fmt: skip
    world = make_world(model.base_url)
    spec = agent_yaml(
        tools=(("tickets.resolve", "write"), ("tickets.get_ticket", "read")), timeout=120
    )
    world.save_agent(spec + "outcomes:\n  - {type: ticket_resolved}\n")
    approvals = ToolApprovals(world.platform.db)
    info = world.run(
        "helper",
        connectors=ConnectorRegistry(
            [connector(redmine, project, approvals, redmine.keys["alice"])]
        ),
    )
    assert info.status == "succeeded", info.error

    outcomes = world.platform.outcomes
    [outcome] = outcomes.list_outcomes(world.alice)
    assert (outcome.type, outcome.ref, outcome.verified) == (
        "ticket_resolved", f"{project}#{number}", True,
    )  # fmt: skip
    assert outcome.beneficiaries == [world.bob.user_id]
    assert outcome.verification == {
        "checked": "resolved in the tracker; reported by bob, closed by alice"
    }
    issue = httpx.get(f"{redmine.url}/issues/{number}.json?include=journals",
                      headers=redmine.as_user("bob")).json()["issue"]  # fmt: skip
    assert issue["status"]["name"] == "Closed"
    assert issue["journals"][-1]["notes"] == "Raised the VPN idle timeout."
    assert outcomes.feedback(world.bob, outcome.id, "accepted").state == "credited"

    # Bob reopens it in Redmine; the durability re-check reads Redmine again.
    reopened = httpx.put(f"{redmine.url}/issues/{number}.json", headers=redmine.as_user("admin"),
                         json={"issue": {"status_id": 1}})  # fmt: skip
    assert reopened.status_code == 204
    recheck_conn = connector(redmine, project, approvals, redmine.keys["alice"])
    context = ctx("recheck", info.id)

    async def read(tool: str, arguments: dict[str, Any]) -> ToolResult:
        return await recheck_conn.call_tool(tool.removeprefix("tickets."), arguments, context)

    async def recheck() -> Any:
        try:
            return await outcomes.recheck_due(now=utcnow() + timedelta(hours=73))
        finally:
            await recheck_conn.aclose()

    outcomes.lookup = ToolReadLookup(read)
    summary = asyncio.run(recheck())
    assert (summary.checked, summary.undone) == (1, 1)
    after = outcomes.get(world.alice, outcome.id)
    assert after.state == "undone" and after.feedback[-1].verdict == "reopened"
