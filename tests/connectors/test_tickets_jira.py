"""The built-in tickets MCP server against the shipped Jira REST API v2 fake (Cloud and
Data Center shapes), the fake's own protocol answers, and an agent run that resolves a
Jira issue and records a verified ``ticket_resolved`` outcome."""

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
from meshclaw.connectors.fakes.jira import JiraFake, JiraState, JiraTransition
from meshclaw.connectors.mcp import McpConnector
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.connectors.servers._tickets_base import TicketsSettings
from meshclaw.connectors.servers.tickets import build
from meshclaw.errors import ConfigError
from meshclaw.outcomes import ToolReadLookup
from meshclaw.providers.scripted import ScriptedServer
from tests.conftest import World, agent_yaml

API = "/rest/api/2"


def people(state: JiraState) -> None:
    state.add_user("alice", email="alice@acme.example", api_token="atl-alice", pat="pat-alice")
    state.add_user("bob", email="bob@acme.example", api_token="atl-bob")
    state.add_user("carol", email="carol@acme.example", api_token="atl-carol", email_visible=False)
    state.add_user("dave", email="dave@acme.example", api_token="atl-dave")
    state.add_project("OPS", {"alice": "member", "bob": "member", "carol": "member",
                              "dave": "browse"})  # fmt: skip
    state.add_project("SEC", {"bob": "member"})


@pytest.fixture
def jira() -> Iterator[JiraFake]:
    state = JiraState(flavor="cloud")
    people(state)
    with JiraFake(state) as fake:
        yield fake


def connector(
    fake: JiraFake,
    approvals: ToolApprovals,
    *,
    token: str = "atl-alice",
    email: str | None = "alice@acme.example",
) -> McpConnector:
    """Cloud: basic auth with the account's email and API token; without an email the
    token goes as a bearer personal access token (Data Center)."""
    secret = {"token": token} | ({"email": email} if email else {})
    config = ConnectorConfig(
        command=sys.executable,
        args=["-m", "meshclaw.connectors.servers", "tickets"],
        env={"MESHCLAW_TICKETS_KIND": "jira", "MESHCLAW_TICKETS_API_URL": fake.url,
             "MESHCLAW_TICKETS_PROJECT": "OPS"},
        credentials="jira",
        credential_env={"MESHCLAW_TICKETS_TOKEN": "token"}
        | ({"MESHCLAW_TICKETS_USER": "email"} if email else {}),
        approval="first_use",
    )  # fmt: skip
    store = MemoryCredentialStore({"jira": {"default": secret}})
    return McpConnector("tickets", config, approvals=approvals, credentials=store)


def ctx(step: str, run: str = "run_1") -> ToolContext:
    return ToolContext(
        org_id="org_1", user_id="usr_1", agent_id="agt_1", run_id=run,
        step_id=step, idempotency_key=f"idem_{step}",
    )  # fmt: skip


def scenario(
    conn: McpConnector, calls: list[tuple[str, str, dict[str, Any]]]
) -> dict[str, ToolResult]:
    """Run ``(name, tool, arguments)`` in order (``_step`` in the arguments reuses a
    step's idempotency key); every result by name."""
    results: dict[str, ToolResult] = {}

    async def run() -> None:
        try:
            for name, tool, arguments in calls:
                step = arguments.pop("_step", name)
                results[name] = await conn.call_tool(tool, arguments, ctx(step))
        finally:
            await conn.aclose()

    asyncio.run(run())
    return results


def data(results: dict[str, ToolResult], name: str) -> dict[str, Any]:
    found = results[name].data
    assert found is not None, results[name].content
    value: dict[str, Any] = found.get("evidence") or found["structured"]
    return value


def test_ticket_tools_against_jira_cloud(jira: JiraFake, approvals: ToolApprovals) -> None:
    state = jira.state
    slow = state.file_issue("OPS", "bob", "Checkout is slow", "p99 at 4 s since Monday")
    typo = state.file_issue("OPS", "carol", "Typo on the login page")
    elsewhere = state.file_issue("SEC", "bob", "Rotate the signing key")
    assert (slow.key, typo.key, elsewhere.key) == ("OPS-1", "OPS-2", "SEC-1")
    results = scenario(connector(jira, approvals), [
        ("search", "search_tickets", {"query": "slow"}),
        ("create", "create_ticket", {"title": "Add checkout cache", "body": "For OPS-1",
                                     "labels": ["perf"]}),
        ("create-again", "create_ticket", {"title": "Add checkout cache", "_step": "create"}),
        ("progress", "transition", {"number": 1, "status": "in-progress"}),
        ("comment", "comment", {"number": 1, "body": "Cache added behind a flag."}),
        ("resolve", "resolve", {"number": 1, "comment": "p99 back to 300 ms."}),
        ("resolve-again", "resolve", {"number": 1}),
        ("get", "get_ticket", {"number": 1}),
        ("wontdo", "resolve", {"number": 2, "resolution": "not_planned"}),
        ("get-wontdo", "get_ticket", {"number": 2}),
        ("open", "search_tickets", {"query": "checkout"}),
        ("closed", "search_tickets", {"state": "closed"}),
        ("label", "search_tickets", {"query": "label:perf", "state": "all"}),
        ("reopen", "transition", {"number": 2, "status": "todo"}),
        ("get-reopened", "get_ticket", {"number": 2}),
        ("missing", "comment", {"number": 99, "body": "x"}),
        ("missing-get", "get_ticket", {"number": 99}),
    ])  # fmt: skip

    failed = {k: r.content for k, r in results.items() if r.is_error}
    assert sorted(failed) == ["missing", "missing-get", "resolve-again"], failed
    assert "not found in OPS: /issue/OPS-99/comment" in failed["missing"]
    assert "Issue does not exist or you do not have permission" in failed["missing-get"]
    assert "OPS-1 is already 'Done' (resolution 'Done')" in failed["resolve-again"]

    [hit] = data(results, "search")["tickets"]
    assert (hit["key"], hit["reporter"], hit["status"], hit["tracker_status"]) == (
        "OPS-1", "bob@acme.example", "todo", "To Do",
    )  # fmt: skip
    assert (hit["resolution"], hit["closed_by"], hit["url"]) == (
        None,
        None,
        f"{jira.url}/browse/OPS-1",
    )
    created = data(results, "create")
    assert created == {"key": "OPS-3", "number": 3, "url": f"{jira.url}/browse/OPS-3",
                       "status": "todo", "duplicate": False}  # fmt: skip
    assert data(results, "create-again") == created | {"duplicate": True}
    made = state.issues["OPS-3"]
    assert (made.reporter, made.issuetype, made.description) == ("alice", "Task", "For OPS-1")
    assert made.labels == ["perf", "meshclaw:idem_create"]  # the marker is a label
    assert len([i for i in state.issues.values() if i.project == "OPS"]) == 3
    assert data(results, "progress")["status"] == "in-progress"
    commented = data(results, "comment")
    assert commented["key"] == "OPS-1"
    assert commented["url"] == f"{jira.url}/browse/OPS-1?focusedCommentId={commented['comment_id']}"
    assert data(results, "resolve") == {
        "key": "OPS-1", "number": 1, "status": "closed", "url": f"{jira.url}/browse/OPS-1",
        "resolution": "completed",
    }  # fmt: skip
    ticket = data(results, "get")
    assert (ticket["status"], ticket["tracker_status"], ticket["resolution"]) == (
        "closed", "Done", "completed",
    )  # fmt: skip
    assert (ticket["reporter"], ticket["closed_by"]) == ("bob@acme.example", "alice@acme.example")
    assert ticket["body"] == "p99 at 4 s since Monday" and ticket["comments"] == 2
    assert [(c["by"], c["body"]) for c in ticket["comment_list"]] == [
        ("alice@acme.example", "Cache added behind a flag."),
        ("alice@acme.example", "p99 back to 300 ms."),
    ]
    # What Jira itself now says about OPS-1.
    assert (slow.status, slow.resolution, slow.resolutiondate is not None) == ("Done", "Done", True)
    assert [item["toString"] for item in slow.histories[-1]["items"]] == ["Done", "Done"]
    assert slow.histories[-1]["author"] == "alice"

    # Won't Do: closed, not planned; carol's email is hidden, so she is her account id.
    assert data(results, "wontdo")["resolution"] == "not_planned"
    wontdo = data(results, "get-wontdo")
    assert (wontdo["status"], wontdo["resolution"]) == ("closed", "not_planned")
    assert wontdo["reporter"] == state.users["carol"].account_id
    assert [t["key"] for t in data(results, "open")["tickets"]] == ["OPS-3"]  # OPS-1 is closed
    assert data(results, "open")["tickets"][0]["labels"] == ["perf"]  # the marker is left out
    closed = data(results, "closed")
    assert (closed["total"], [t["key"] for t in closed["tickets"]]) == (2, ["OPS-2", "OPS-1"])
    assert [t["key"] for t in data(results, "label")["tickets"]] == ["OPS-3"]
    # Reopening clears the resolution (Jira's reopen post-function), as the re-check sees.
    assert data(results, "reopen")["status"] == "todo"
    reopened = data(results, "get-reopened")
    assert (reopened["status"], reopened["resolution"], reopened["closed_by"]) == (
        "todo", None, None,
    )  # fmt: skip
    assert (typo.status, typo.resolution) == ("To Do", None)
    assert elsewhere.comments == [] and elsewhere.status == "To Do"


def test_data_center_bearer_token_legacy_search_and_a_strict_workflow(
    approvals: ToolApprovals,
) -> None:
    state = JiraState(flavor="server")
    people(state)
    state.users["bob"].email_visible = False  # Data Center names him by user name
    state.transitions = [
        JiraTransition("11", "Start Progress", "In Progress", sources=("To Do",)),
        JiraTransition("21", "Ready for Review", "In Review", sources=("In Progress",)),
        JiraTransition("31", "Close Issue", "Done", sources=("In Review",), resolution=True),
        JiraTransition("41", "Reopen Issue", "To Do", sources=("Done",)),
    ]
    with JiraFake(state) as fake:
        state.file_issue("OPS", "bob", "VPN drops every 30 minutes")
        results = scenario(connector(fake, approvals, token="pat-alice", email=None), [
            ("open", "search_tickets", {}),
            ("too-early", "resolve", {"number": 1}),
            ("start", "transition", {"number": 1, "status": "in-progress"}),
            ("review", "transition", {"number": 1, "status": "review"}),
            ("resolve", "resolve", {"number": 1, "comment": "Raised the idle timeout."}),
            ("closed", "search_tickets", {"state": "closed", "query": "vpn"}),
        ])  # fmt: skip

    failed = {k: r.content for k, r in results.items() if r.is_error}
    assert list(failed) == ["too-early"], failed
    assert (
        "OPS-1 cannot move from 'To Do' to 'Done': the workflow offers this account only "
        "'In Progress'" in failed["too-early"]
    )
    [hit] = data(results, "open")["tickets"]
    assert (data(results, "open")["total"], hit["reporter"], hit["status"]) == (1, "bob", "todo")
    assert data(results, "review")["status"] == "review"
    assert data(results, "resolve")["resolution"] == "completed"
    [done] = data(results, "closed")["tickets"]
    assert (done["status"], done["resolution"], done["closed_by"]) == (
        "closed",
        "completed",
        "alice@acme.example",  # her email is visible; bob's is not
    )
    assert state.issues["OPS-1"].comments[-1]["body"] == "Raised the idle timeout."


def test_bad_credentials_and_a_read_only_account_are_clear(
    jira: JiraFake, approvals: ToolApprovals
) -> None:
    jira.state.file_issue("OPS", "bob", "Checkout is slow")
    stale = scenario(connector(jira, approvals, token="atl-Stale-9"), [
        ("search", "search_tickets", {}),
    ])["search"]  # fmt: skip
    assert stale.is_error
    assert f"the tracker at {jira.url} refused the credentials of alice@acme.example" in (
        stale.content
    )
    assert "atl-Stale-9" not in stale.content
    results = scenario(connector(jira, approvals, token="atl-dave", email="dave@acme.example"), [
        ("get", "get_ticket", {"number": 1}),
        ("create", "create_ticket", {"title": "Mine"}),
        ("move", "transition", {"number": 1, "status": "in-progress"}),
        ("comment", "comment", {"number": 1, "body": "+1"}),
    ])  # fmt: skip
    failed = {k: r.content for k, r in results.items() if r.is_error}
    assert sorted(failed) == ["comment", "create", "move"]
    assert (
        "this account may not do that in OPS: You do not have permission to create issues"
        in (failed["create"])
    )
    assert "the workflow offers this account no transition" in failed["move"]
    assert "may not do that in OPS: You do not have the permission to comment" in failed["comment"]
    assert data(results, "get")["reporter"] == "bob@acme.example"
    assert len(jira.state.issues) == 1


def test_the_fake_answers_like_jira(jira: JiraFake) -> None:
    state = jira.state
    for summary in ("First", "Second", "Third"):
        state.file_issue("OPS", "bob", summary)
    alice = httpx.Client(base_url=f"{jira.url}{API}", auth=("alice@acme.example", "atl-alice"))
    with alice:
        gone = alice.get("/search", params={"jql": "project = OPS"})
        assert (
            gone.status_code == 410 and "/rest/api/3/search/jql" in gone.json()["errorMessages"][0]
        )

        def jql_error(jql: str) -> str:
            answer = alice.post("/search/jql", json={"jql": jql})
            assert answer.status_code == 400, answer.text
            assert answer.json()["errors"] == {}
            [message] = answer.json()["errorMessages"]
            return str(message)

        assert "got 'OR'. (line 1, character 15)" in jql_error("project = OPS OR status = Done")
        assert "Expecting an operator" in jql_error("project = OPS AND status in (Done)")
        assert jql_error("priority = High") == (
            "Field 'priority' does not exist or you do not have permission to view it."
        )
        assert (
            jql_error('status = "Nope"')
            == "The value 'Nope' does not exist for the field 'status'."
        )
        assert "knows no JQL function" in jql_error("reporter = currentUser()")
        assert jql_error("ORDER BY created").startswith("Unbounded JQL queries are not allowed")

        # Enhanced search: ids only unless fields are asked for, token paging, no total.
        first = alice.get("/search/jql", params={"jql": "project = OPS ORDER BY key ASC",
                                                 "maxResults": 2}).json()  # fmt: skip
        assert first["isLast"] is False and set(first["issues"][0]) == {"id"}
        rest = alice.post("/search/jql", json={
            "jql": "project = OPS ORDER BY key ASC", "maxResults": 2,
            "nextPageToken": first["nextPageToken"], "fields": ["summary", "status"],
        }).json()  # fmt: skip
        assert rest["isLast"] is True and "nextPageToken" not in rest
        [third] = rest["issues"]
        assert third["key"] == "OPS-3" and set(third["fields"]) == {"summary", "status"}
        assert third["fields"]["status"]["statusCategory"]["key"] == "new"
        counted = alice.post("/search/approximate-count", json={"jql": "project = OPS"}).json()
        assert counted == {"count": 3}

        missing = alice.post("/issue", json={"fields": {"project": {"key": "OPS"},
                                                        "issuetype": {"name": "Task"},
                                                        "labels": ["two words"]}})  # fmt: skip
        assert missing.status_code == 400
        assert missing.json() == {"errorMessages": [], "errors": {
            "summary": "You must specify a summary of the issue.",
            "labels": "The label 'two words' contains spaces which is invalid.",
        }}  # fmt: skip
        task = {"summary": "x", "issuetype": {"name": "Task"}}
        foreign = alice.post("/issue", json={"fields": task | {"project": {"key": "SEC"}}})
        assert foreign.status_code == 400
        assert foreign.json()["errors"] == {"project": "valid project is required"}
        made = alice.post("/issue", json={"fields": {"project": {"key": "OPS"}, "summary": "New",
                                                     "issuetype": {"name": "Bug"}}})  # fmt: skip
        assert made.status_code == 201 and set(made.json()) == {"id", "key", "self"}
        assert made.json()["key"] == "OPS-4"
        assert alice.get("/issue/SEC-1").status_code == 404  # no such issue / not visible
        to_review = alice.post("/issue/OPS-1/transitions", json={
            "transition": {"id": "41"}, "fields": {"resolution": {"name": "Done"}},
        })  # fmt: skip
        assert to_review.status_code == 400
        assert "cannot be set" in to_review.json()["errors"]["resolution"]
        listed = alice.get("/issue/OPS-1/transitions", params={"expand": "transitions.fields"})
        offered = listed.json()["transitions"]
        done = next(t for t in offered if t["to"]["name"] == "Done")
        allowed = [v["name"] for v in done["fields"]["resolution"]["allowedValues"]]
        assert allowed == ["Done", "Won't Do", "Duplicate", "Cannot Reproduce"]
        assert "To Do" not in [t["to"]["name"] for t in offered]  # where it already is

    anonymous = httpx.get(f"{jira.url}{API}/myself")
    assert anonymous.status_code == 401
    assert anonymous.headers["X-Seraph-LoginReason"] == "AUTHENTICATED_FAILED"
    bearer = httpx.get(f"{jira.url}{API}/myself", headers={"Authorization": "Bearer pat-alice"})
    assert bearer.json()["accountId"] == state.users["alice"].account_id


def test_jira_settings_are_checked_at_start() -> None:
    cases: dict[str, dict[str, Any]] = {
        "MESHCLAW_TICKETS_PROJECT is required for jira": {"kind": "jira"},
        r"MESHCLAW_TICKETS_API_URL \(the jira server\) is required for jira": {
            "kind": "jira", "project": "OPS",
        },
        r"MESHCLAW_TICKETS_PROJECT must be a Jira project key \(OPS\), not 'ops'": {
            "kind": "jira", "project": "ops", "api_url": "http://jira",
        },
        "MESHCLAW_TICKETS_RESOLUTIONS: unknown key fixed; known: completed, not_planned": {
            "kind": "jira", "project": "OPS", "api_url": "http://jira",
            "resolutions": {"fixed": "Fixed"},
        },
    }  # fmt: skip
    for message, values in cases.items():
        with pytest.raises(ConfigError, match=message):
            build(TicketsSettings(token="t", **values))
    server = build(TicketsSettings(kind="jira", project="OPS", api_url="http://jira", token="t"))
    assert "No pull request tools" in (server.instructions or "")
    tools = [t.name for t in asyncio.run(server.list_tools())]
    assert "resolve" in tools and not [t for t in tools if "pull" in t]


def test_an_agent_resolves_a_jira_issue_and_its_reporter_gets_the_outcome(
    jira: JiraFake,
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
) -> None:
    issue = jira.state.file_issue("OPS", "bob", "VPN drops every 30 minutes")
    model = scripted({"turns": [
        {"reply": {"tool_calls": [{"name": "tickets.get_ticket", "arguments": {"number": 1}}]}},
        {"reply": {"tool_calls": [{"name": "tickets.resolve",
                                   "arguments": {"number": 1,
                                                 "comment": "Raised the VPN idle timeout."}}]}},
        {"reply": {"content": "resolved"}},
    ]})  # fmt: skip
    world = make_world(model.base_url)
    # Jira names people by email: bob's MeshClaw address makes him the beneficiary.
    world.platform.accounts.set_email(world.bob.org_id, "bob", "bob@acme.example")
    spec = agent_yaml(
        tools=(("tickets.resolve", "write"), ("tickets.get_ticket", "read")), timeout=120
    )
    world.save_agent(spec + "outcomes:\n  - {type: ticket_resolved}\n")
    run_approvals = ToolApprovals(world.platform.db)
    info = world.run("helper", connectors=ConnectorRegistry([connector(jira, run_approvals)]))
    assert info.status == "succeeded", info.error

    outcomes = world.platform.outcomes
    [outcome] = outcomes.list_outcomes(world.alice)
    assert (outcome.type, outcome.ref, outcome.verified) == ("ticket_resolved", "OPS-1", True)
    assert outcome.beneficiaries == [world.bob.user_id]
    assert outcome.verification == {
        "checked": "resolved in the tracker; reported by bob@acme.example, "
        "closed by alice@acme.example"
    }
    assert (issue.status, issue.resolution) == ("Done", "Done")
    assert issue.comments[-1]["body"] == "Raised the VPN idle timeout."
    assert outcomes.feedback(world.bob, outcome.id, "accepted").state == "credited"

    # Bob reopens it in Jira; the durability re-check reads Jira again.
    reopened = httpx.post(
        f"{jira.url}{API}/issue/OPS-1/transitions",
        json={"transition": {"id": "11"}},
        auth=("bob@acme.example", "atl-bob"),
    )
    assert reopened.status_code == 204 and issue.resolution is None
    recheck_conn = connector(jira, run_approvals)
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
