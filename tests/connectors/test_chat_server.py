"""The built-in chat MCP server (slack_sdk) against the shipped Slack Web API fake."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from meshclaw.connectors.approvals import ToolApprovals
from meshclaw.connectors.base import ToolResult
from meshclaw.connectors.config import ConnectorConfig
from meshclaw.connectors.credentials import MemoryCredentialStore
from meshclaw.connectors.fakes.slack import SlackFake, SlackWorkspace
from meshclaw.connectors.mcp import McpConnector
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.policy.authorizer import SpecGrantAuthorizer
from meshclaw.providers.scripted import ScriptedServer
from tests.conftest import World, agent_yaml
from tests.connectors.conftest import ctx

TOKEN = "xoxb-test-123"
BOT = "U0BOT0001"


@pytest.fixture
def slack() -> Iterator[SlackFake]:
    workspace = SlackWorkspace(channels=("general", "incidents"))
    workspace.add_token(TOKEN, BOT)
    workspace.add_token("xoxp-carol", "U0CAROL01")
    with SlackFake(workspace) as fake:
        yield fake


def chat_connector(fake: SlackFake, approvals: ToolApprovals, token: str = TOKEN) -> McpConnector:
    store = MemoryCredentialStore({"slack": {"default": {"token": token}}})
    config = ConnectorConfig(
        command=sys.executable,
        args=["-m", "meshclaw.connectors.servers", "chat"],
        env={"MESHCLAW_CHAT_BASE_URL": fake.base_url},
        credentials="slack",
        credential_env={"MESHCLAW_CHAT_TOKEN": "token"},
        approval="first_use",
    )
    return McpConnector("chat", config, approvals=approvals, credentials=store)


def test_the_fake_speaks_the_slack_web_api_to_the_real_client(slack: SlackFake) -> None:
    client = WebClient(token="xoxp-carol", base_url=slack.base_url)
    assert client.auth_test()["user_id"] == "U0CAROL01"
    posted = client.chat_postMessage(channel="#general", text="hello")
    assert posted["ok"] and posted["channel"] == "C00000001"
    client.chat_postMessage(channel="C00000001", text="in thread", thread_ts=posted["ts"])
    history = client.conversations_history(channel="C00000001")["messages"]
    assert [m["text"] for m in history] == ["hello"] and history[0]["reply_count"] == 1
    thread = client.conversations_replies(channel="C00000001", ts=posted["ts"])["messages"]
    assert [m["text"] for m in thread] == ["hello", "in thread"]
    for call, error in [
        (lambda: WebClient(token="xoxb-nope", base_url=slack.base_url).auth_test(), "invalid_auth"),
        (lambda: client.chat_postMessage(channel="#nope", text="x"), "channel_not_found"),
        (
            lambda: client.reactions_add(channel="general", timestamp="1.2", name="x"),
            "message_not_found",
        ),
    ]:
        with pytest.raises(SlackApiError) as exc:
            call()
        assert exc.value.response["error"] == error


def test_chat_tools_read_post_reply_and_react(slack: SlackFake, approvals: ToolApprovals) -> None:
    carol = WebClient(token="xoxp-carol", base_url=slack.base_url)
    question = carol.chat_postMessage(channel="incidents", text="Is the API down?")["ts"]
    conn = chat_connector(slack, approvals)

    async def scenario() -> dict[str, ToolResult]:
        calls: list[tuple[str, str, dict[str, Any]]] = [
            ("channels", "list_channels", {}),
            ("read", "read_channel", {"channel": "#incidents"}),
            (
                "reply",
                "reply_in_thread",
                {"channel": "incidents", "thread_ts": question, "text": "Looking."},
            ),
            (
                "reply",
                "reply_in_thread",
                {"channel": "incidents", "thread_ts": question, "text": "Looking."},
            ),
            ("post", "post_message", {"channel": "#general", "text": "Incident opened."}),
            ("react", "react", {"channel": "incidents", "ts": question, "emoji": ":eyes:"}),
            ("thread", "read_thread", {"channel": "incidents", "ts": question}),
            ("missing", "post_message", {"channel": "#nope", "text": "x"}),
        ]
        results: dict[str, ToolResult] = {}
        try:
            for i, (step, tool, arguments) in enumerate(calls):
                results[f"{step}{'-again' if i == 3 else ''}"] = await conn.call_tool(
                    tool, arguments, ctx(step)
                )
            return results
        finally:
            await conn.aclose()

    results = asyncio.run(scenario())
    failed = {k: r.content for k, r in results.items() if r.is_error}
    assert list(failed) == ["missing"] and "no channel '#nope'" in failed["missing"]

    def data(key: str) -> dict[str, Any]:
        found = results[key].data
        assert found is not None
        return found

    names = [c["name"] for c in data("channels")["structured"]["channels"]]
    assert names == ["general", "incidents"]
    assert data("read")["structured"]["messages"][0]["text"] == "Is the API down?"
    reply = data("reply")["evidence"]
    assert reply["channel"] == "C00000002" and reply["thread_ts"] == question
    assert reply["duplicate"] is False
    assert data("reply-again")["evidence"] == {
        "channel": "C00000002",
        "ts": reply["ts"],
        "duplicate": True,
    }
    assert data("post")["evidence"]["channel"] == "C00000001"
    assert data("react")["evidence"]["reaction"] == "eyes"
    thread = data("thread")["structured"]["messages"]
    assert [m["text"] for m in thread] == ["Is the API down?", "Looking."]  # posted once
    assert thread[0]["reactions"] == {"eyes": 1}
    incidents = slack.workspace.channel("incidents")
    assert incidents is not None and [m.user for m in incidents.messages] == ["U0CAROL01", BOT]


def test_a_bad_token_is_a_clear_error_without_the_token(
    slack: SlackFake, approvals: ToolApprovals
) -> None:
    conn = chat_connector(slack, approvals, token="xoxb-Revoked-42")

    async def scenario() -> ToolResult:
        try:
            return await conn.call_tool("list_channels", {}, ctx("x"))
        finally:
            await conn.aclose()

    result = asyncio.run(scenario())
    assert result.is_error and "Slack API error: invalid_auth" in result.content
    assert "Revoked" not in result.content


def test_an_agent_answers_in_a_thread(
    slack: SlackFake,
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
) -> None:
    carol = WebClient(token="xoxp-carol", base_url=slack.base_url)
    question = carol.chat_postMessage(channel="general", text="Where is the runbook?")["ts"]
    server = scripted(
        {
            "turns": [
                {
                    "reply": {
                        "tool_calls": [
                            {"name": "chat.read_channel", "arguments": {"channel": "general"}}
                        ]
                    }
                },
                {
                    "reply": {
                        "tool_calls": [
                            {
                                "name": "chat.reply_in_thread",
                                "arguments": {
                                    "channel": "general",
                                    "thread_ts": question,
                                    "text": "In the wiki.",
                                },
                            }
                        ]
                    }
                },
                {"reply": {"content": "Answered in the thread."}},
            ]
        }
    )
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(tools=(("chat.*", "write"),), timeout=60))
    conn = chat_connector(slack, ToolApprovals(world.platform.db))
    info = world.run(
        "helper", connectors=ConnectorRegistry([conn]), authorizer=SpecGrantAuthorizer()
    )
    assert info.status == "succeeded", info.error
    steps = [s for s in world.platform.runs.steps(world.alice, info.id) if s.kind == "tool"]
    assert [(s.name, s.status) for s in steps] == [
        ("chat.read_channel", "ok"),
        ("chat.reply_in_thread", "ok"),
    ]
    response = steps[1].response
    assert response is not None and response["data"]["evidence"]["thread_ts"] == question
    replies = carol.conversations_replies(channel="general", ts=question)["messages"]
    assert [m["text"] for m in replies] == ["Where is the runbook?", "In the wiki."]
