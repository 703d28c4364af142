"""Chat triggers: a new message in a channel starts one run, by poll or by Slack event.

Two ways in, one message key (``<channel id>/<ts>``), so a message that arrives both
ways still starts one run:

- **polling** (``poll_chat``): Slack's ``conversations.history`` with an ``oldest``
  watermark (the last ``ts`` seen), through the chat connector's bot token as the
  built-in chat server (``connectors.servers.chat``) would use it for the agent's owner;
  the first poll only records where the channel stands;
- **the Events API** (``triggers.slack_events``): Slack pushes each message to
  ``POST /v1/hooks/chat/{org_id}/{connector}``, signed with the Slack app's signing
  secret.

Only people's new top-level messages count: edits, joins, bot messages (the agent's own
replies above all) and thread replies do not; with ``mention: true`` only messages that
mention the bot (``<@BOT>``). The run's input is the message as JSON — its text, unless
the connector is configured ``untrusted`` (then the agent reads it with its chat tools,
which mark it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError

from meshclaw.connectors.servers.chat import Chat, ChatError, ChatSettings
from meshclaw.spec.models import ChatTrigger
from meshclaw.triggers._deliveries import TriggerProblem
from meshclaw.triggers._inbound import (
    Inbound,
    Watcher,
    connector_settings,
)

BATCH = 50
"""Messages started per trigger per poll (older ones first); the rest wait for the next."""
PREFIX = "MESHCLAW_CHAT_"


def chat_client(inbound: Inbound, watcher: Watcher) -> tuple[Chat, bool]:
    """The Slack client the trigger reads with, and whether the connector is untrusted."""
    settings, config = connector_settings(
        inbound.platform, watcher, PREFIX, ChatSettings, "the built-in chat server"
    )
    assert isinstance(settings, ChatSettings)
    if settings.kind != "slack":
        # Polling a Matrix room needs its own watermark (a pagination token): not built yet.
        raise TriggerProblem(
            f"connector {watcher.trigger.connector!r} is a {settings.kind} chat server; "
            "chat triggers read Slack channels only"
        )
    return Chat(settings), config.untrusted


def slack(name: str, call: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
    """One Web API call; a failure is a ``TriggerProblem`` naming the error, not the token."""
    try:
        response = call(**kwargs)
    except SlackApiError as exc:
        error = exc.response.get("error", "unknown_error") if exc.response else "error"
        raise TriggerProblem(f"connector {name!r}: Slack API error: {error}") from None
    except (SlackClientError, OSError) as exc:
        raise TriggerProblem(f"connector {name!r}: cannot reach Slack: {exc}") from None
    data = response.data if isinstance(response.data, dict) else {}
    return data


def channel_id(name: str, chat: Chat, channel: str) -> str:
    try:
        return chat.channel_id(channel)
    except ChatError as exc:
        raise TriggerProblem(f"connector {name!r}: {exc}") from None


def _ts(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)


def wanted(trigger: ChatTrigger, message: dict[str, Any], bot: str | None) -> bool:
    """A person's new top-level message, mentioning the bot if the trigger asks."""
    if message.get("subtype") or message.get("bot_id") or not message.get("user"):
        return False
    if bot is not None and message.get("user") == bot:
        return False
    thread = message.get("thread_ts")
    if thread is not None and thread != message.get("ts"):
        return False  # a reply in a thread
    if trigger.mention:
        if message.get("type") == "app_mention":
            return True
        return bot is not None and f"<@{bot}>" in str(message.get("text", ""))
    return True


def run_input(
    trigger: ChatTrigger, channel: str, message: dict[str, Any], untrusted: bool
) -> tuple[str, str, dict[str, Any]]:
    """The message key, the run's input (JSON) and what the audit record keeps."""
    data: dict[str, Any] = {
        "trigger": "chat",
        "connector": trigger.connector,
        "channel": trigger.channel,
        "channel_id": channel,
        "ts": message["ts"],
        "user": message.get("user"),
    }
    if untrusted:
        data["note"] = (
            f"read the message with {trigger.connector}.read_thread "
            f"(channel {channel}, ts {message['ts']})"
        )
    else:
        data["text"] = str(message.get("text", ""))[:20_000]
    details = {"channel": channel, "ts": message["ts"], "user": message.get("user")}
    return f"{channel}/{message['ts']}", json.dumps(data, ensure_ascii=False, indent=1), details


def poll_chat(inbound: Inbound, watcher: Watcher) -> list[str]:
    """Start a run for each new wanted message of the channel; the ids of the runs.

    The caller has checked the read grant (``InboundPoller.tick``)."""
    trigger = watcher.trigger
    assert isinstance(trigger, ChatTrigger)
    name = trigger.connector
    chat, untrusted = chat_client(inbound, watcher)
    channel = channel_id(name, chat, trigger.channel)
    mark = inbound.watermark(watcher)
    if mark is None or not mark[1]:
        newest = slack(name, chat.client.conversations_history, channel=channel, limit=1)
        messages = newest.get("messages") or []
        inbound.advance(watcher, channel, str(messages[0]["ts"]) if messages else "0")
        return []
    oldest = _ts(mark[1])
    bot = slack(name, chat.client.auth_test).get("user_id")
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(10):  # pages of 200, newest first; a servers that ignores oldest ends sooner
        kwargs: dict[str, Any] = {"channel": channel, "oldest": mark[1], "limit": 200}
        if cursor:
            kwargs["cursor"] = cursor
        page = slack(name, chat.client.conversations_history, **kwargs)
        batch = [m for m in page.get("messages") or [] if _ts(m.get("ts")) > oldest]
        found.extend(batch)
        cursor = (page.get("response_metadata") or {}).get("next_cursor")
        if not page.get("has_more") or not cursor or len(batch) < len(page.get("messages") or []):
            break
    started: list[str] = []
    for message in sorted(found, key=lambda m: _ts(m["ts"]))[:BATCH]:
        if wanted(trigger, message, bot):
            key, text, details = run_input(trigger, channel, message, untrusted)
            run_id = inbound.start(watcher, key, text, details)
            if run_id is not None:
                started.append(run_id)
        inbound.advance(watcher, channel, str(message["ts"]))
    return started
