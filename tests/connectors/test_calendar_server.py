"""The built-in calendar MCP server against a real Radicale CalDAV server on loopback."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from meshclaw.connectors.approvals import ToolApprovals
from meshclaw.connectors.base import ToolResult
from meshclaw.connectors.config import ConnectorConfig
from meshclaw.connectors.credentials import MemoryCredentialStore
from meshclaw.connectors.mcp import McpConnector
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.policy.authorizer import SpecGrantAuthorizer
from meshclaw.providers.scripted import ScriptedServer
from tests.conftest import World, agent_yaml
from tests.connectors.calpeers import CalDavAccount, start_radicale
from tests.connectors.conftest import ctx


@pytest.fixture
def caldav_account(tmp_path: Path) -> Iterator[CalDavAccount]:
    with start_radicale(tmp_path / "radicale") as account:
        yield account


def calendar_connector(
    account: CalDavAccount, approvals: ToolApprovals, password: str | None = None
) -> McpConnector:
    store = MemoryCredentialStore()
    store.put("cal", {"username": account.username, "password": password or account.password})
    config = ConnectorConfig(
        command=sys.executable,
        args=["-m", "meshclaw.connectors.servers", "calendar"],
        env={"MESHCLAW_CALENDAR_URL": account.url, "MESHCLAW_CALENDAR_CREATE_CALENDAR": "true"},
        credentials="cal",
        credential_env={
            "MESHCLAW_CALENDAR_USERNAME": "username",
            "MESHCLAW_CALENDAR_PASSWORD": "password",
        },
        approval="first_use",
    )
    return McpConnector("calendar", config, approvals=approvals, credentials=store)


MOVED = {"start": "2026-12-01T15:00:00Z", "end": "2026-12-01T16:00:00Z"}
DAY = {"start": "2026-12-01T08:00:00+00:00", "end": "2026-12-01T18:00:00+00:00"}


def test_calendar_tools_create_list_free_busy_update_invite_and_cancel(
    caldav_account: CalDavAccount, approvals: ToolApprovals
) -> None:
    conn = calendar_connector(caldav_account, approvals)
    standup = {
        "summary": "Standup",
        "start": "2026-12-01T09:00:00+00:00",
        "end": "2026-12-01T09:30:00+00:00",
        "attendees": ["bob@acme.test"],
    }
    review = {
        "summary": "Design review",
        "start": "2026-12-01T13:00:00Z",
        "end": "2026-12-01T14:00:00Z",
    }

    async def scenario() -> dict[str, ToolResult]:
        steps: list[tuple[str, str, dict[str, Any]]] = [
            ("standup", "create_event", standup),
            ("standup", "create_event", standup),  # the same run step again
            ("review", "create_event", review),
            ("busy", "free_busy", DAY),
            ("move", "update_event", {"uid": "idem_review@meshclaw", **MOVED}),
            ("invite", "invite", {"uid": "idem_review@meshclaw", "attendees": ["carol@acme.test"]}),
            ("cancel", "cancel_event", {"uid": "idem_standup@meshclaw"}),
            ("list", "list_events", DAY),
            ("calendars", "list_calendars", {}),
            ("missing", "cancel_event", {"uid": "nope"}),
            ("bad", "create_event", {**review, "end": "2026-12-01T12:00:00Z"}),
        ]  # fmt: skip
        results: dict[str, ToolResult] = {}
        try:
            for i, (step, tool, arguments) in enumerate(steps):
                results[f"{i}:{step}"] = await conn.call_tool(tool, arguments, ctx(step))
            return results
        finally:
            await conn.aclose()

    results = asyncio.run(scenario())
    data = {
        k.split(":", 1)[1] + ("-again" if k == "1:standup" else ""): r for k, r in results.items()
    }
    failed = {k: r.content for k, r in data.items() if r.is_error}
    assert set(failed) == {"missing", "bad"}
    assert "no event with UID 'nope'" in failed["missing"]
    assert "end must be after start" in failed["bad"]

    def ev(key: str) -> dict[str, Any]:
        assert data[key].data is not None
        evidence: dict[str, Any] = data[key].data["evidence"]
        return evidence

    created = ev("standup")
    assert created["uid"] == "idem_standup@meshclaw" and created["duplicate"] is False
    assert created["url"].startswith(caldav_account.url) and created["calendar"] == "Work"
    assert ev("standup-again")["duplicate"] is True
    busy = data["busy"].data["structured"]["busy"]  # type: ignore[index]
    assert busy == [
        {"start": "2026-12-01T09:00:00+00:00", "end": "2026-12-01T09:30:00+00:00"},
        {"start": "2026-12-01T13:00:00+00:00", "end": "2026-12-01T14:00:00+00:00"},
    ]
    assert ev("move")["sequence"] == 1 and ev("move")["changed"] == ["dtend", "dtstart"]
    assert ev("invite")["sequence"] == 2
    assert ev("cancel")["status"] == "CANCELLED"
    events = {e["summary"]: e for e in data["list"].data["structured"]["events"]}  # type: ignore[index]
    assert events["Standup"]["status"] == "CANCELLED"
    assert events["Standup"]["attendees"] == ["bob@acme.test"]
    assert events["Design review"]["start"] == "2026-12-01T15:00:00+00:00"
    assert events["Design review"]["attendees"] == ["carol@acme.test"]
    calendars = data["calendars"].data["structured"]["calendars"]  # type: ignore[index]
    assert [c["name"] for c in calendars] == ["Work"]


def test_calendar_auth_failure_is_clear(
    caldav_account: CalDavAccount, approvals: ToolApprovals
) -> None:
    conn = calendar_connector(caldav_account, approvals, password="Wrong-Pass-7")

    async def scenario() -> ToolResult:
        try:
            return await conn.call_tool("list_calendars", {}, ctx("x"))
        finally:
            await conn.aclose()

    result = asyncio.run(scenario())
    assert result.is_error
    assert f"CalDAV login to {caldav_account.url} failed" in result.content
    assert "Wrong-Pass-7" not in result.content


def test_an_agent_schedules_a_meeting_in_free_time(
    caldav_account: CalDavAccount,
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
) -> None:
    server = scripted(
        {
            "turns": [
                {"reply": {"tool_calls": [{"name": "calendar.free_busy", "arguments": DAY}]}},
                {
                    "reply": {
                        "tool_calls": [
                            {
                                "name": "calendar.create_event",
                                "arguments": {
                                    "summary": "1:1 with Bob",
                                    "start": "2026-12-01T10:00:00Z",
                                    "end": "2026-12-01T10:30:00Z",
                                    "attendees": ["bob@acme.test"],
                                },
                            }
                        ]
                    }
                },
                {"reply": {"content": "Booked 10:00 with Bob."}},
            ]
        }
    )
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=(("calendar.*", "write"),), timeout=60))
    conn = calendar_connector(caldav_account, ToolApprovals(world.platform.db))
    info = world.run(
        "helper",
        "book a 1:1 with bob",
        connectors=ConnectorRegistry([conn]),
        authorizer=SpecGrantAuthorizer(),
    )
    assert info.status == "succeeded", info.error
    steps = [s for s in world.platform.runs.steps(world.alice, info.id) if s.kind == "tool"]
    assert [(s.name, s.status) for s in steps] == [
        ("calendar.free_busy", "ok"),
        ("calendar.create_event", "ok"),
    ]
    created = steps[1].response
    assert created is not None
    evidence = created["data"]["evidence"]
    assert evidence["uid"].endswith("@meshclaw") and evidence["sequence"] == 0
