"""A protocol-level Slack Web API fake: a real HTTP server on loopback for tests and demos.

It speaks the request and response shapes of Slack's published Web API for the methods
MeshClaw's chat server uses — ``auth.test``, ``conversations.list``,
``conversations.history``, ``conversations.replies``, ``chat.postMessage``,
``reactions.add`` — so the real ``slack_sdk.WebClient`` runs against it unchanged with
``base_url``. Like Slack it answers HTTP 200 with ``{"ok": false, "error": "..."}`` for
API errors (``not_authed``, ``invalid_auth``, ``channel_not_found``,
``thread_not_found``, ``message_not_found``, ``already_reacted``, ``no_text``,
``unknown_method``), reads arguments from the query string, a form body or a JSON body,
and keeps message ``metadata`` (returned with ``include_all_metadata``).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from meshclaw._loopback import ServedFake


@dataclass
class FakeMessage:
    ts: str
    user: str
    text: str
    thread_ts: str | None = None
    reactions: dict[str, list[str]] = field(default_factory=dict)
    metadata: dict[str, Any] | None = None

    def wire(self, *, replies: int = 0, with_metadata: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "message", "user": self.user, "text": self.text}
        out["ts"] = self.ts
        if self.thread_ts is not None:
            out["thread_ts"] = self.thread_ts
        if replies:
            out["thread_ts"], out["reply_count"] = self.ts, replies
        if self.reactions:
            out["reactions"] = [
                {"name": name, "users": users, "count": len(users)}
                for name, users in self.reactions.items()
            ]
        if with_metadata and self.metadata is not None:
            out["metadata"] = self.metadata
        return out


@dataclass
class FakeChannel:
    id: str
    name: str
    messages: list[FakeMessage] = field(default_factory=list)


class SlackWorkspace:
    """The fake's state: channels, messages and which tokens belong to which user."""

    def __init__(self, *, team: str = "acme", channels: tuple[str, ...] = ("general",)) -> None:
        self.team = team
        self.tokens: dict[str, str] = {}
        self.channels: dict[str, FakeChannel] = {}
        self._lock = threading.Lock()
        self._clock = itertools.count(1)
        self._epoch = int(time.time())
        for name in channels:
            self.add_channel(name)

    def add_token(self, token: str, user: str) -> None:
        self.tokens[token] = user

    def add_channel(self, name: str) -> FakeChannel:
        channel = FakeChannel(id=f"C{len(self.channels) + 1:08d}", name=name)
        self.channels[channel.id] = channel
        return channel

    def channel(self, ref: str) -> FakeChannel | None:
        ref = ref.removeprefix("#")
        found = self.channels.get(ref)
        return found or next((c for c in self.channels.values() if c.name == ref), None)

    def post(
        self,
        channel: FakeChannel,
        user: str,
        text: str,
        thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> FakeMessage:
        with self._lock:
            ts = f"{self._epoch}.{next(self._clock):06d}"
            message = FakeMessage(ts=ts, user=user, text=text, thread_ts=thread_ts)
            message.metadata = metadata
            channel.messages.append(message)
            return message

    def find(self, channel: FakeChannel, ts: str) -> FakeMessage | None:
        return next((m for m in channel.messages if m.ts == ts), None)


class _ApiError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _bool(value: Any) -> bool:
    return str(value).lower() in ("1", "true", "yes")


def _api(workspace: SlackWorkspace) -> Starlette:
    def user_for(request: Request, args: dict[str, Any]) -> str:
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ").strip() if header else str(args.get("token", ""))
        if not token:
            raise _ApiError("not_authed")
        user = workspace.tokens.get(token)
        if user is None:
            raise _ApiError("invalid_auth")
        return user

    def channel_of(args: dict[str, Any]) -> FakeChannel:
        channel = workspace.channel(str(args.get("channel", "")))
        if channel is None:
            raise _ApiError("channel_not_found")
        return channel

    def auth_test(user: str, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": f"https://{workspace.team}.slack.com/",
            "team": workspace.team,
            "user": user,
            "team_id": "T00000001",
            "user_id": user,
        }

    def conversations_list(user: str, args: dict[str, Any]) -> dict[str, Any]:
        channels = [
            {"id": c.id, "name": c.name, "is_channel": True, "is_member": True}
            for c in workspace.channels.values()
        ]
        return {"channels": channels, "response_metadata": {"next_cursor": ""}}

    def history(user: str, args: dict[str, Any]) -> dict[str, Any]:
        channel = channel_of(args)
        limit = int(args.get("limit") or 100)
        with_metadata = _bool(args.get("include_all_metadata", False))
        top = [m for m in channel.messages if m.thread_ts is None]
        replies = {m.ts: sum(1 for r in channel.messages if r.thread_ts == m.ts) for m in top}
        newest = list(reversed(top))[:limit]
        return {
            "messages": [
                m.wire(replies=replies[m.ts], with_metadata=with_metadata) for m in newest
            ],
            "has_more": len(top) > limit,
        }

    def replies(user: str, args: dict[str, Any]) -> dict[str, Any]:
        channel = channel_of(args)
        parent = workspace.find(channel, str(args.get("ts", "")))
        if parent is None:
            raise _ApiError("thread_not_found")
        with_metadata = _bool(args.get("include_all_metadata", False))
        thread = [m for m in channel.messages if m.thread_ts == parent.ts]
        return {
            "messages": [
                parent.wire(replies=len(thread), with_metadata=with_metadata),
                *(m.wire(with_metadata=with_metadata) for m in thread),
            ],
            "has_more": False,
        }

    def post_message(user: str, args: dict[str, Any]) -> dict[str, Any]:
        channel = channel_of(args)
        text = str(args.get("text") or "")
        if not text:
            raise _ApiError("no_text")
        thread_ts = args.get("thread_ts") or None
        if thread_ts is not None and workspace.find(channel, str(thread_ts)) is None:
            raise _ApiError("thread_not_found")
        metadata = args.get("metadata")
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        message = workspace.post(channel, user, text, thread_ts and str(thread_ts), metadata)
        return {"channel": channel.id, "ts": message.ts, "message": message.wire()}

    def react(user: str, args: dict[str, Any]) -> dict[str, Any]:
        channel = channel_of(args)
        message = workspace.find(channel, str(args.get("timestamp", "")))
        if message is None:
            raise _ApiError("message_not_found")
        name = str(args.get("name", "")).strip(":")
        if not name:
            raise _ApiError("invalid_name")
        users = message.reactions.setdefault(name, [])
        if user in users:
            raise _ApiError("already_reacted")
        users.append(user)
        return {}

    methods = {
        "auth.test": auth_test,
        "conversations.list": conversations_list,
        "conversations.history": history,
        "conversations.replies": replies,
        "chat.postMessage": post_message,
        "reactions.add": react,
    }

    async def endpoint(request: Request) -> JSONResponse:
        args: dict[str, Any] = dict(request.query_params)
        body = await request.body()
        content_type = request.headers.get("content-type", "")
        if body and content_type.startswith("application/json"):
            args |= json.loads(body)
        elif body:
            args |= dict(parse_qsl(body.decode()))
        method = methods.get(request.path_params["method"])
        try:
            if method is None:
                raise _ApiError("unknown_method")
            user = user_for(request, args)
            return JSONResponse({"ok": True} | method(user, args))
        except _ApiError as exc:
            return JSONResponse({"ok": False, "error": exc.code})

    return Starlette(routes=[Route("/api/{method}", endpoint, methods=["GET", "POST"])])


class SlackFake(ServedFake):
    """Serves a ``SlackWorkspace`` on loopback (port from the OS) in a background thread.
    ``port`` 0: a port from the OS (the demo asks for the one it used last time)."""

    name = "Slack fake"

    def __init__(
        self, workspace: SlackWorkspace | None = None, host: str = "127.0.0.1", *, port: int = 0
    ) -> None:
        super().__init__(host=host, port=port)
        self.workspace = workspace or SlackWorkspace()

    def _app(self) -> Starlette:
        return _api(self.workspace)

    @property
    def base_url(self) -> str:
        """What ``slack_sdk.WebClient(base_url=...)`` takes."""
        return f"http://{self._host}:{self.port}/api/"


def main() -> None:
    """``python -m meshclaw.connectors.fakes.slack TOKEN USER [CHANNEL...]``: serve until ^C."""
    import sys

    token, user, *channels = sys.argv[1:] or ["xoxb-demo", "U00000001"]
    workspace = SlackWorkspace(channels=tuple(channels) or ("general",))
    workspace.add_token(token, user)
    with SlackFake(workspace) as fake:
        print(fake.base_url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
