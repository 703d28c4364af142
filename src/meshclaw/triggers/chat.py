"""Chat triggers: a new message in a channel or room starts one run, by poll or Slack event.

Two ways in, one message key (``<channel id>/<ts>``), so a message that arrives both
ways still starts one run:

- **polling** (``poll_chat``): Slack's ``conversations.history`` with an ``oldest``
  watermark (the last ``ts`` seen), through the chat connector's bot token as the
  built-in chat server (``connectors.servers.chat``) would use it for the agent's owner;
  the first poll only records where the channel stands;
- **the Events API** (``triggers.slack_events``): Slack pushes each message to
  ``POST /v1/hooks/chat/{org_id}/{connector}``, signed with the Slack app's signing
  secret.

On a Matrix connector (``MESHCLAW_CHAT_KIND=matrix``): ``poll_matrix`` reads the room
forward from the last event id seen (``ts`` is the event id), with the chat backend's own
HTTP code, and the homeserver may push events to an application service
(``triggers.matrix_push``); both go through ``start_matrix``, so they filter, trust and
key a message alike. Senders of servers outside the org's are untrusted.

Only people's new top-level messages count: edits, joins, bot messages (the agent's own
replies above all) and thread replies do not; with ``mention: true`` only messages that
mention the bot (``<@BOT>``). The run's input is the message as JSON — its text, unless
the connector is configured ``untrusted`` (then the agent reads it with its chat tools,
which mark it).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import httpx
from slack_sdk.errors import SlackApiError, SlackClientError

from meshclaw.connectors.servers._chat_matrix import (
    CLIENT,
    PAGE,
    PAGES,
    MatrixChat,
    event_relation,
    is_message,
)
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


def chat_settings(inbound: Inbound, watcher: Watcher) -> tuple[ChatSettings, bool]:
    """The chat server's settings for the owner, and whether the connector is untrusted."""
    settings, config = connector_settings(
        inbound.platform, watcher, PREFIX, ChatSettings, "the built-in chat server"
    )
    assert isinstance(settings, ChatSettings)
    return settings, config.untrusted


def chat_client(inbound: Inbound, watcher: Watcher) -> tuple[Chat, bool]:
    """The Slack client the trigger reads with, and whether the connector is untrusted."""
    settings, untrusted = chat_settings(inbound, watcher)
    if settings.kind != "slack":
        # Only the Events API path asks: Slack events are for Slack connectors.
        raise TriggerProblem(
            f"connector {watcher.trigger.connector!r} is a {settings.kind} chat server; "
            "Slack events start triggers on Slack connectors only"
        )
    return Chat(settings), untrusted


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
    settings, untrusted = chat_settings(inbound, watcher)
    if settings.kind == "matrix":
        return asyncio.run(poll_matrix(inbound, watcher, MatrixChat(settings), untrusted))
    chat = Chat(settings)
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


# -- Matrix ------------------------------------------------------------------------------
# The watermark is the last event id looked at (a room's pagination tokens can outgrow the
# 64-character position column); each poll turns it back into a token with ``/context``.


def matrix_wanted(
    trigger: ChatTrigger, event: dict[str, Any], bot: str, names: tuple[str, ...]
) -> bool:
    """A person's new top-level message (not the bot's, a notice, a thread reply or an
    edit), mentioning the bot if the trigger asks: in ``m.mentions`` when the message has
    it (Matrix's intentional mentions: its sender's client said whom it mentions, so the
    body is not searched), else by its user id or a name in the body, as a whole word
    ("Bot" is not in "robot")."""
    content = event.get("content") or {}
    if not is_message(event) or event.get("sender") == bot or content.get("msgtype") == "m.notice":
        return False
    if event_relation(event).get("rel_type") in ("m.thread", "m.replace"):
        return False
    if trigger.mention:
        mentions = content.get("m.mentions")
        if isinstance(mentions, dict):
            return bot in (mentions.get("user_ids") or [])
        body = str(content.get("body", ""))
        return any(_named(name, body) for name in names if name.strip())
    return True


def _named(name: str, body: str) -> bool:
    """``name`` in ``body`` as a whole word (not inside a longer one), ignoring case."""
    pattern = rf"(?<!\w){re.escape(name.strip())}(?!\w)"
    return re.search(pattern, body, re.IGNORECASE) is not None


async def bot_names(
    backend: MatrixChat, http: httpx.AsyncClient, bot: str, room: str
) -> tuple[str, ...]:
    """The bot's user id and the display name people see for it in ``room``, as a mention
    there writes it: its name in the room (its ``m.room.member`` event, which a per-room
    name changes), else its profile's (if it has one)."""
    member = f"{CLIENT}/rooms/{quote(room)}/state/m.room.member/{quote(bot)}"
    try:
        state = await backend.call(http, "GET", member)
    except ChatError as exc:
        if "M_NOT_FOUND" not in str(exc):
            raise
        state = {}  # no member event (a room the bot was only invited to, say)
    name = state.get("displayname")
    if isinstance(name, str) and name.strip():
        return (bot, name)
    try:
        profile = await backend.call(http, "GET", f"{CLIENT}/profile/{quote(bot)}/displayname")
    except ChatError as exc:
        if "M_NOT_FOUND" in str(exc):
            return (bot,)
        raise
    return (bot, str(profile.get("displayname") or ""))


async def _since(
    backend: MatrixChat, http: httpx.AsyncClient, room: str, seen: str
) -> list[dict[str, Any]] | None:
    """The room's messages after the event ``seen``, oldest first (at most ``BATCH``);
    None if that event is gone (a purged history: start again from the room's end)."""
    rooms = f"{CLIENT}/rooms/{quote(room)}"
    try:
        context = await backend.call(
            http, "GET", f"{rooms}/context/{quote(seen)}", params={"limit": 0}
        )
    except ChatError as exc:
        if "M_NOT_FOUND" in str(exc):
            return None
        raise
    only = json.dumps({"types": ["m.room.message"]})
    params: dict[str, Any] = {"dir": "f", "limit": PAGE, "filter": only, "from": context["end"]}
    found: list[dict[str, Any]] = []
    for _ in range(PAGES):
        page = await backend.call(http, "GET", f"{rooms}/messages", params=params)
        found.extend(page.get("chunk") or [])
        if len(found) >= BATCH or not page.get("chunk") or not page.get("end"):
            break
        params["from"] = page["end"]
    return found[:BATCH]


async def _newest(backend: MatrixChat, http: httpx.AsyncClient, room: str) -> str:
    """The id of the room's newest event: where a first poll starts."""
    path = f"{CLIENT}/rooms/{quote(room)}/messages"
    page = await backend.call(http, "GET", path, params={"dir": "b", "limit": 1})
    return str(page["chunk"][0]["event_id"])


async def start_matrix(
    inbound: Inbound,
    watcher: Watcher,
    backend: MatrixChat,
    http: httpx.AsyncClient,
    room: str,
    event: dict[str, Any],
    bot: str,
    names: tuple[str, ...],
    untrusted: bool,
    via: str | None = None,
) -> str | None:
    """The run for one event of the trigger's ``room``, if the trigger wants it (None if
    not, or if the message was acted on before). A poll and a push both come here."""
    trigger = watcher.trigger
    assert isinstance(trigger, ChatTrigger)
    if not matrix_wanted(trigger, event, bot, names):
        return None
    event_id = _position(trigger.connector, str(event["event_id"]))  # a push's too
    sender = str(event.get("sender", ""))
    outside = await backend.outside(http, sender)
    message = {"ts": event_id, "user": sender, "text": str(event["content"]["body"])}
    key, text, details = run_input(trigger, room, message, untrusted or outside)
    details |= {"outside_org": outside} | ({"via": via} if via else {})
    return inbound.start(watcher, key, text, details)


def _position(name: str, event_id: str) -> str:
    if len(event_id) > 64:  # room versions 1-2 on a very long server name
        raise TriggerProblem(f"connector {name!r}: event id {event_id[:80]!r} is too long to keep")
    return event_id


async def poll_matrix(
    inbound: Inbound, watcher: Watcher, backend: MatrixChat, untrusted: bool
) -> list[str]:
    """``poll_chat`` on a Matrix room: a run for each new wanted message, once."""
    trigger = watcher.trigger
    assert isinstance(trigger, ChatTrigger)
    name = trigger.connector
    started: list[str] = []
    try:
        async with backend.session() as http:
            bot = await backend.me(http)
            room = await backend.room(http, trigger.channel)
            epoch = room[:64]
            mark = inbound.watermark(watcher)
            # A first poll, or the name now means another room: note where the room stands.
            found = None
            if mark is not None and mark[1] and mark[0] == epoch:
                found = await _since(backend, http, room, mark[1])
            if found is None:
                newest = await _newest(backend, http, room)
                inbound.advance(watcher, epoch, _position(name, newest))
                return []
            names: tuple[str, ...] = (bot,)
            if trigger.mention and found:
                names = await bot_names(backend, http, bot, room)
            for event in found:
                event_id = _position(name, str(event["event_id"]))
                run_id = await start_matrix(
                    inbound, watcher, backend, http, room, event, bot, names, untrusted
                )
                if run_id is not None:
                    started.append(run_id)
                inbound.advance(watcher, epoch, event_id)
    except ChatError as exc:
        raise TriggerProblem(f"connector {name!r}: {exc}") from None
    return started
