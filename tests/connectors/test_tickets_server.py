"""The built-in tickets MCP server against the shipped GitHub REST API fake."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from meshclaw.connectors.approvals import ToolApprovals
from meshclaw.connectors.base import ToolResult
from meshclaw.connectors.config import ConnectorConfig
from meshclaw.connectors.credentials import MemoryCredentialStore
from meshclaw.connectors.fakes.github import GitHubFake, GitHubState
from meshclaw.connectors.mcp import McpConnector
from tests.connectors.conftest import ctx

REPO = "acme/ops"


@pytest.fixture
def github() -> Iterator[GitHubFake]:
    state = GitHubState()
    state.add_repo(REPO)
    state.add_token("ghp-bot", "meshclaw-bot")
    state.add_token("ghp-carol", "carol")
    with GitHubFake(state) as fake:
        yield fake


def tickets_connector(
    fake: GitHubFake, approvals: ToolApprovals, token: str = "ghp-bot"
) -> McpConnector:
    store = MemoryCredentialStore({"gh": {"default": {"token": token}}})
    config = ConnectorConfig(
        command=sys.executable,
        args=["-m", "meshclaw.connectors.servers", "tickets"],
        env={"MESHCLAW_TICKETS_API_URL": fake.api_url, "MESHCLAW_TICKETS_REPO": REPO},
        credentials="gh",
        credential_env={"MESHCLAW_TICKETS_TOKEN": "token"},
        approval="first_use",
    )
    return McpConnector("tickets", config, approvals=approvals, credentials=store)


def test_ticket_tools_create_comment_transition_resolve_and_search(
    github: GitHubFake, approvals: ToolApprovals
) -> None:
    # A ticket someone filed by hand, through the same REST shape.
    reported = httpx.post(
        f"{github.api_url}/repos/{REPO}/issues",
        json={"title": "Checkout is slow", "body": "p99 at 4 s since Monday"},
        headers={"Authorization": "Bearer ghp-carol"},
    )
    assert reported.status_code == 201
    conn = tickets_connector(github, approvals)
    results: dict[str, ToolResult] = {}

    async def scenario() -> None:
        async def call(key: str, tool: str, step: str | None = None, **arguments: Any) -> None:
            results[key] = await conn.call_tool(tool, arguments, ctx(step or key))

        try:
            await call("search", "search_tickets", query="slow")
            await call(
                "create",
                "create_ticket",
                title="Add checkout cache",
                body="For OPS-1",
                labels=["perf"],
            )
            await call("create-again", "create_ticket", step="create", title="Add checkout cache")
            await call("progress", "transition", number=1, status="in-progress")
            await call("comment", "comment", number=1, body="Cache added behind a flag.")
            await call("resolve", "resolve", number=1, comment="Deployed; p99 back to 300 ms.")
            await call("get", "get_ticket", number=1)
            await call("open", "search_tickets", query="checkout")
            await call("missing", "comment", number=99, body="x")
        finally:
            await conn.aclose()

    asyncio.run(scenario())
    failed = {k: r.content for k, r in results.items() if r.is_error}
    assert list(failed) == ["missing"] and "not found in acme/ops" in failed["missing"]

    def data(key: str) -> dict[str, Any]:
        found = results[key].data
        assert found is not None
        value: dict[str, Any] = found.get("evidence") or found["structured"]
        return value

    assert [t["key"] for t in data("search")["tickets"]] == ["acme/ops#1"]
    # Who filed it: outcomes credit resolving a ticket only to a reporter who is not the owner.
    assert [(t["reporter"], t["resolution"]) for t in data("search")["tickets"]] == [
        ("carol", None)
    ]
    created = data("create")
    assert (
        created["key"] == "acme/ops#2" and created["status"] == "open" and not created["duplicate"]
    )
    assert created["url"].endswith("/acme/ops/issues/2")
    assert data("create-again") == created | {"duplicate": True}
    assert data("progress")["status"] == "in-progress"
    assert data("comment")["key"] == "acme/ops#1" and data("comment")["comment_id"]
    resolved = data("resolve")
    assert resolved["status"] == "closed" and resolved["resolution"] == "completed"
    ticket = data("get")
    assert ticket["status"] == "closed" and ticket["labels"] == []
    assert (ticket["reporter"], ticket["resolution"]) == ("carol", "completed")
    assert [c["body"] for c in ticket["comment_list"]] == [
        "Cache added behind a flag.",
        "Deployed; p99 back to 300 ms.",
    ]
    assert [t["key"] for t in data("open")["tickets"]] == ["acme/ops#2"]  # #1 is closed
    assert data("open")["tickets"][0]["reporter"] == "meshclaw-bot"
    issues = github.state.repos[REPO]
    assert len(issues) == 2 and issues[1].user == "meshclaw-bot"


def test_a_bad_tracker_token_is_clear(github: GitHubFake, approvals: ToolApprovals) -> None:
    conn = tickets_connector(github, approvals, token="ghp-Stale-5")

    async def scenario() -> ToolResult:
        try:
            return await conn.call_tool("search_tickets", {}, ctx("s"))
        finally:
            await conn.aclose()

    result = asyncio.run(scenario())
    assert result.is_error and "refused the token (Bad credentials)" in result.content
    assert "ghp-Stale-5" not in result.content


def test_pull_request_tools_read_merge_and_refuse_a_second_merge(
    github: GitHubFake, approvals: ToolApprovals
) -> None:
    opened = github.state.add_pull(REPO, title="Fix timeout", user="carol", head="fix")
    moved = github.state.add_pull(REPO, title="Bump deps", user="carol", head="deps")
    conn = tickets_connector(github, approvals)
    results: dict[str, ToolResult] = {}

    async def scenario() -> None:
        async def call(key: str, tool: str, **arguments: Any) -> None:
            results[key] = await conn.call_tool(tool, arguments, ctx(key))

        try:
            await call("list", "list_pull_requests")
            await call("merge", "merge_pull_request", number=opened.number, method="squash")
            await call("again", "merge_pull_request", number=opened.number)
            await call("get", "get_pull_request", number=opened.number)
            await call("stale", "merge_pull_request", number=moved.number,
                       expected_head_sha="0" * 40)  # fmt: skip
            await call("issue", "get_pull_request", number=99)
        finally:
            await conn.aclose()

    asyncio.run(scenario())
    failed = {k: r.content for k, r in results.items() if r.is_error}
    assert sorted(failed) == ["again", "issue", "stale"]
    assert "acme/ops#1 is already merged (by meshclaw-bot)" in failed["again"]
    assert "409: Head branch was modified" in failed["stale"]
    listed = results["list"].data
    assert listed is not None
    assert [(p["key"], p["author"], p["head"]) for p in listed["structured"]["pull_requests"]] == [
        ("acme/ops#2", "carol", "deps"), ("acme/ops#1", "carol", "fix"),
    ]  # fmt: skip
    merged = (results["merge"].data or {})["evidence"]
    pull = opened.pull_request
    assert pull is not None
    assert merged == {
        "key": "acme/ops#1", "number": 1, "url": "https://github.example/acme/ops/pull/1",
        "status": "merged", "merge_commit_sha": pull["merge_commit_sha"], "author": "carol",
    }  # fmt: skip
    got = (results["get"].data or {})["structured"]
    assert (got["merged"], got["merged_by"], got["status"], got["reverted_by"]) == (
        True, "meshclaw-bot", "merged", None,
    )  # fmt: skip
    assert moved.pull_request is not None and not moved.pull_request["merged"]


def test_each_tracker_kind_says_which_setting_it_is_missing() -> None:
    from meshclaw.connectors.servers._tickets_base import TicketsSettings
    from meshclaw.connectors.servers.tickets import build
    from meshclaw.errors import ConfigError

    cases: dict[str, dict[str, Any]] = {
        "MESHCLAW_TICKETS_REPO (owner/name) is required for GitHub": {"kind": "github"},
        "MESHCLAW_TICKETS_PROJECT is required for redmine": {"kind": "redmine"},
        "MESHCLAW_TICKETS_API_URL (the redmine server) is required for redmine": {
            "kind": "redmine", "project": "ops",
        },
        "MESHCLAW_TICKETS_STATUSES: unknown key done": {
            "kind": "redmine", "project": "ops", "api_url": "http://rm", "statuses": {"done": "X"},
        },
    }  # fmt: skip
    for message, values in cases.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            build(TicketsSettings(token="t", **values))
