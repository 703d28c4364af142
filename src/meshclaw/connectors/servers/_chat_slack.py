"""Chat on Slack's Web API through ``slack_sdk`` (Slack itself, or MeshClaw's
``connectors.fakes.slack`` in tests and demos).

Channels may be named by id (``C…``), ``name`` or ``#name``. A post is idempotent per run
step: it carries the caller's idempotency key in Slack message ``metadata``, and a key
already present in the channel (or thread) means the message was posted before and is not
posted again.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import anyio
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from meshclaw.connectors.servers._chat_base import ChatError, ChatSettings, message

EVENT_TYPE = "meshclaw_tool_call"
RECENT = 50
"""How many recent messages are checked for an earlier post of the same run step."""

T = TypeVar("T")


def _message(raw: dict[str, Any]) -> dict[str, Any]:
    return message(
        ts=raw.get("ts"),
        user=raw.get("user"),
        text=raw.get("text", ""),
        thread_ts=raw.get("thread_ts"),
        reply_count=raw.get("reply_count", 0),
        reactions={r["name"]: r.get("count", 0) for r in raw.get("reactions", [])},
    )


class Chat:
    """Blocking Slack Web API calls (the chat trigger polls with these too)."""

    def __init__(self, settings: ChatSettings) -> None:
        self.settings = settings
        self.client = WebClient(
            token=settings.token.get_secret_value(),
            base_url=settings.base_url,
            timeout=settings.timeout_seconds,
        )
        self._ids: dict[str, str] = {}

    def _call(self, method: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
        try:
            response = method(**kwargs)
        except SlackApiError as exc:
            error = exc.response.get("error", "unknown_error") if exc.response else "error"
            raise ChatError(f"Slack API error: {error}") from None
        except (SlackClientError, OSError) as exc:
            raise ChatError(f"cannot reach {self.settings.base_url}: {exc}") from None
        data: dict[str, Any] = response.data if isinstance(response.data, dict) else {}
        return data

    def channel_id(self, ref: str) -> str:
        name = ref.removeprefix("#")
        if name.startswith(("C", "G", "D")) and name[1:].isalnum() and name.isupper():
            return name
        if name not in self._ids:
            listing = self._call(self.client.conversations_list, limit=1000)
            self._ids = {c["name"]: c["id"] for c in listing.get("channels", [])}
        if name not in self._ids:
            raise ChatError(f"no channel {ref!r}")
        return self._ids[name]

    def channels(self) -> list[dict[str, Any]]:
        listing = self._call(self.client.conversations_list, limit=1000)
        return [{"id": c["id"], "name": c["name"]} for c in listing.get("channels", [])]

    def history(self, channel: str, limit: int) -> list[dict[str, Any]]:
        data = self._call(
            self.client.conversations_history, channel=self.channel_id(channel), limit=limit
        )
        return [_message(m) for m in data.get("messages", [])]

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        data = self._call(
            self.client.conversations_replies, channel=self.channel_id(channel), ts=ts
        )
        return [_message(m) for m in data.get("messages", [])]

    def _posted(self, channel: str, thread_ts: str | None, key: str) -> str | None:
        """The ts of an earlier message carrying ``key`` in its metadata, if any."""
        if thread_ts is None:
            data = self._call(
                self.client.conversations_history,
                channel=channel,
                limit=RECENT,
                include_all_metadata=True,
            )
        else:
            data = self._call(
                self.client.conversations_replies,
                channel=channel,
                ts=thread_ts,
                include_all_metadata=True,
            )
        for found in data.get("messages", []):
            payload = (found.get("metadata") or {}).get("event_payload") or {}
            if payload.get("idempotency_key") == key:
                return str(found["ts"])
        return None

    def post(
        self, channel: str, text: str, thread_ts: str | None, key: str | None
    ) -> dict[str, Any]:
        if not text.strip():
            raise ChatError("the message text is empty")
        channel_id = self.channel_id(channel)
        if key is not None:
            earlier = self._posted(channel_id, thread_ts, key)
            if earlier is not None:
                return {"channel": channel_id, "ts": earlier, "duplicate": True}
        kwargs: dict[str, Any] = {"channel": channel_id, "text": text}
        if thread_ts is not None:
            kwargs["thread_ts"] = thread_ts
        if key is not None:
            kwargs["metadata"] = {
                "event_type": EVENT_TYPE,
                "event_payload": {"idempotency_key": key},
            }
        data = self._call(self.client.chat_postMessage, **kwargs)
        evidence = {"channel": data.get("channel", channel_id), "ts": data.get("ts")}
        if thread_ts is not None:
            evidence["thread_ts"] = thread_ts
        return evidence | {"duplicate": False}

    def react(self, channel: str, ts: str, emoji: str) -> dict[str, Any]:
        channel_id = self.channel_id(channel)
        name = emoji.strip(":")
        try:
            self._call(self.client.reactions_add, channel=channel_id, timestamp=ts, name=name)
        except ChatError as exc:
            if "already_reacted" not in str(exc):
                raise
        return {"channel": channel_id, "ts": ts, "reaction": name}


async def _run(call: Callable[[], T]) -> T:
    return await anyio.to_thread.run_sync(call)


class SlackChat:
    """The chat tools' backend on Slack: ``Chat``'s blocking calls in worker threads."""

    def __init__(self, settings: ChatSettings) -> None:
        self.chat = Chat(settings)

    async def channels(self) -> list[dict[str, Any]]:
        return await _run(self.chat.channels)

    async def history(self, channel: str, limit: int) -> list[dict[str, Any]]:
        return await _run(partial(self.chat.history, channel, limit))

    async def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        return await _run(partial(self.chat.thread, channel, ts))

    async def post(
        self, channel: str, text: str, thread_ts: str | None, key: str | None
    ) -> dict[str, Any]:
        return await _run(partial(self.chat.post, channel, text, thread_ts, key))

    async def react(self, channel: str, ts: str, emoji: str) -> dict[str, Any]:
        return await _run(partial(self.chat.react, channel, ts, emoji))
