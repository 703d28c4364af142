"""Chat on the Matrix Client-Server API (v3; relations v1) of any homeserver, over httpx.

A channel is a room: its id (``!abc:server``; ``!abc`` from room version 12 on), an alias
(``#ops:server``, resolved through the room directory) or a bare name (``ops`` for
``#ops:<the bot's server>``). A message's ``ts`` is its event id. Posts are
``m.room.message`` / ``m.text``; a reply in a thread is an ``m.thread`` relation to the
thread's root (with the spec's reply fallback for clients without threads); a reaction is
an ``m.reaction`` annotation (Slack-style names such as ``eyes`` become the emoji). Read
messages are the ``m.room.message`` events that are not thread replies or edits, newest
first; a thread root says how many replies it has (the server's bundled ``m.thread``
summary).

The token is an access token, sent as a bearer token; with ``user_id`` set it is an
application service's token acting as that user (``?user_id=``). Matrix error codes
become tool errors naming the code and the server's reason, never the token.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx

from meshclaw.connectors.servers._chat_base import ChatError, ChatSettings, message

CLIENT = "/_matrix/client/v3"
RELATIONS = "/_matrix/client/v1"
RECENT = 50
"""How many of the bot's own recent events are checked for an earlier post of a run step."""
PAGE = 100
PAGES = 10
"""At most this many pages of a room or thread are read for one tool call."""
RATE_LIMIT_RETRIES = 3
SHORTCODES = {
    "+1": "👍", "thumbsup": "👍", "-1": "👎", "thumbsdown": "👎", "eyes": "👀",
    "white_check_mark": "✅", "heavy_check_mark": "✔️", "x": "❌", "warning": "⚠️",
    "tada": "🎉", "rocket": "🚀", "fire": "🔥", "heart": "❤️", "smile": "😄",
    "joy": "😂", "thinking_face": "🤔", "pray": "🙏", "clap": "👏", "ok_hand": "👌",
    "wave": "👋", "raised_hands": "🙌", "100": "💯", "bug": "🐛", "hourglass": "⌛",
    "question": "❓", "exclamation": "❗", "memo": "📝", "construction": "🚧",
}  # fmt: skip
"""Slack-style names an agent may use for an emoji; a Matrix reaction's key is the emoji
itself (any other text is sent as it is)."""


def txn_id(key: str) -> str:
    """The send's transaction id for one run step's idempotency key.

    This is the protocol's own idempotency: a homeserver answers a repeated
    ``PUT /rooms/{room}/send/{type}/{txnId}`` from the same access token (device) with the
    event it made the first time instead of sending again, so a run step retried after a
    crash or a lost answer posts once. Synapse remembers transaction ids for a day; the
    look-back in ``MatrixChat.post`` covers older retries of recent posts."""
    return "meshclaw-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def event_relation(event: dict[str, Any]) -> dict[str, Any]:
    relates = event.get("content", {}).get("m.relates_to")
    return relates if isinstance(relates, dict) else {}


def is_message(event: dict[str, Any]) -> bool:
    """A visible message (a redacted one has no body)."""
    return event.get("type") == "m.room.message" and isinstance(
        event.get("content", {}).get("body"), str
    )


class MatrixChat:
    """The chat tools' backend on a Matrix homeserver."""

    def __init__(self, settings: ChatSettings) -> None:
        self.settings = settings
        self.base = settings.base_url.rstrip("/")
        self._token = settings.token.get_secret_value()
        self._rooms: dict[str, str] = {}
        self._me: str | None = None

    @asynccontextmanager
    async def session(self) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(
            base_url=self.base,
            timeout=self.settings.timeout_seconds,
            headers={"Authorization": f"Bearer {self._token}"},
            params={"user_id": self.settings.user_id} if self.settings.user_id else None,
        ) as client:
            yield client

    async def call(
        self, http: httpx.AsyncClient, method: str, path: str, **kwargs: Any
    ) -> dict[str, Any]:
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            try:
                response = await http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                raise ChatError(
                    f"cannot reach the homeserver at {self.base}: {type(exc).__name__}"
                ) from None
            body = _json(response)
            if response.status_code == 429 and attempt < RATE_LIMIT_RETRIES:
                await asyncio.sleep(min(float(body.get("retry_after_ms", 1000)), 10_000) / 1000)
                continue
            if response.status_code >= 400:
                raise self._error(response.status_code, body)
            return body
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _error(self, status: int, body: dict[str, Any]) -> ChatError:
        code = str(body.get("errcode") or f"HTTP {status}")
        reason = str(body.get("error") or "").replace(self._token, "***")
        if code in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN") or status == 401:
            return ChatError(f"Matrix error {code}: the homeserver at {self.base} refused the "
                             "access token")  # fmt: skip
        return ChatError(f"Matrix error {code}: {reason}" if reason else f"Matrix error {code}")

    async def me(self, http: httpx.AsyncClient) -> str:
        """The bot's user id (and a clear error for a bad token before anything else)."""
        if self._me is None:
            found = await self.call(http, "GET", f"{CLIENT}/account/whoami")
            self._me = str(found["user_id"])
        return self._me

    async def _server(self, http: httpx.AsyncClient) -> str:
        return (await self.me(http)).partition(":")[2]

    async def outside(self, http: httpx.AsyncClient, sender: str) -> bool:
        """Whether the sender is a user of a server other than the org's (untrusted)."""
        servers = self.settings.org_servers or [await self._server(http)]
        return sender.partition(":")[2].lower() not in servers

    async def room(self, http: httpx.AsyncClient, ref: str) -> str:
        """A room id for a room id, an alias or a bare name."""
        await self.me(http)
        if ref.startswith("!"):  # room version 12 ids have no ":server" part
            return ref
        alias = ref if ref.startswith("#") and ":" in ref else None
        if alias is None:
            alias = f"#{ref.removeprefix('#')}:{await self._server(http)}"
        if alias not in self._rooms:
            try:
                found = await self.call(http, "GET", f"{CLIENT}/directory/room/{quote(alias)}")
            except ChatError as exc:
                if "M_NOT_FOUND" in str(exc):
                    raise ChatError(f"no channel {ref!r}") from None
                raise
            self._rooms[alias] = str(found["room_id"])
        return self._rooms[alias]

    async def _message(
        self, http: httpx.AsyncClient, event: dict[str, Any], reactions: dict[str, int]
    ) -> dict[str, Any]:
        relation = event_relation(event)
        summary = event.get("unsigned", {}).get("m.relations", {}).get("m.thread") or {}
        count = int(summary.get("count", 0))
        thread = relation.get("event_id") if relation.get("rel_type") == "m.thread" else None
        sender = str(event.get("sender", ""))
        return message(
            ts=event.get("event_id"),
            user=sender,
            text=str(event.get("content", {}).get("body", "")),
            thread_ts=thread or (event.get("event_id") if count else None),
            reply_count=count,
            reactions=reactions,
            outside_org=await self.outside(http, sender),
        )

    async def channels(self) -> list[dict[str, Any]]:
        async with self.session() as http:
            await self.me(http)
            joined = await self.call(http, "GET", f"{CLIENT}/joined_rooms")
            rooms = [str(r) for r in joined.get("joined_rooms", [])]
            return list(await asyncio.gather(*(self._describe(http, r) for r in rooms)))

    async def _describe(self, http: httpx.AsyncClient, room: str) -> dict[str, Any]:
        async def state(kind: str, field: str) -> str | None:
            try:
                found = await self.call(http, "GET", f"{CLIENT}/rooms/{quote(room)}/state/{kind}")
            except ChatError as exc:
                if "M_NOT_FOUND" in str(exc):
                    return None
                raise
            value = found.get(field)
            return str(value) if value else None

        alias = await state("m.room.canonical_alias", "alias")
        title = await state("m.room.name", "name")
        out = {"id": room, "name": alias or title or room}
        return out | ({"title": title} if title else {})

    async def history(self, channel: str, limit: int) -> list[dict[str, Any]]:
        async with self.session() as http:
            room = await self.room(http, channel)
            wanted = {"types": ["m.room.message", "m.reaction"]}
            params: dict[str, Any] = {"dir": "b", "limit": PAGE, "filter": json.dumps(wanted)}
            top: list[dict[str, Any]] = []
            # Scanning back from the newest event, every reaction to a message read is
            # met before the message itself (reactions come after what they annotate).
            reactions: dict[str, Counter[str]] = {}
            for _ in range(PAGES):
                page = await self.call(http, "GET", f"{CLIENT}/rooms/{quote(room)}/messages",
                                        params=params)  # fmt: skip
                for event in page.get("chunk", []):
                    relation = event_relation(event)
                    if event.get("type") == "m.reaction":
                        if relation.get("rel_type") == "m.annotation":
                            target = str(relation.get("event_id"))
                            reactions.setdefault(target, Counter())[str(relation.get("key"))] += 1
                    elif is_message(event) and relation.get("rel_type") not in (
                        "m.thread",
                        "m.replace",
                    ):
                        top.append(event)
                if len(top) >= limit or not page.get("end"):
                    break
                params["from"] = page["end"]
            return [
                await self._message(http, e, dict(reactions.get(e["event_id"], {})))
                for e in top[:limit]
            ]

    async def _event(self, http: httpx.AsyncClient, room: str, event_id: str) -> dict[str, Any]:
        try:
            return await self.call(
                http, "GET", f"{CLIENT}/rooms/{quote(room)}/event/{quote(event_id)}"
            )
        except ChatError as exc:
            if "M_NOT_FOUND" in str(exc):
                raise ChatError(f"no message {event_id!r} in {room}") from None
            raise

    async def _root(self, http: httpx.AsyncClient, room: str, ts: str) -> dict[str, Any]:
        """A thread's root event, given its root or any reply in it."""
        event = await self._event(http, room, ts)
        relation = event_relation(event)
        if relation.get("rel_type") == "m.thread" and relation.get("event_id"):
            return await self._event(http, room, str(relation["event_id"]))
        return event

    async def _reactions(self, http: httpx.AsyncClient, room: str, event_id: str) -> dict[str, int]:
        relations = f"{RELATIONS}/rooms/{quote(room)}/relations/{quote(event_id)}"
        path = f"{relations}/m.annotation/m.reaction"
        chunk = (await self.call(http, "GET", path, params={"limit": PAGE})).get("chunk", [])
        return dict(Counter(str(event_relation(e).get("key")) for e in chunk))

    async def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        async with self.session() as http:
            room = await self.room(http, channel)
            root = await self._root(http, room, ts)
            path = f"{RELATIONS}/rooms/{quote(room)}/relations/{quote(root['event_id'])}/m.thread"
            params: dict[str, Any] = {"dir": "f", "limit": PAGE}
            events = [root]
            for _ in range(PAGES):
                page = await self.call(http, "GET", path, params=params)
                events.extend(e for e in page.get("chunk", []) if is_message(e))
                if not page.get("next_batch"):
                    break
                params["from"] = page["next_batch"]
            counted = await asyncio.gather(
                *(self._reactions(http, room, str(e["event_id"])) for e in events)
            )
            return [await self._message(http, e, r) for e, r in zip(events, counted, strict=True)]

    async def _posted(self, http: httpx.AsyncClient, room: str, txn: str) -> str | None:
        """An event the bot sent with this transaction id among its recent ones, if any.

        The homeserver shows a sender's own transaction id on its events
        (``unsigned.transaction_id``), to the device that sent them."""
        wanted = {"types": ["m.room.message"], "senders": [await self.me(http)]}
        params = {"dir": "b", "limit": RECENT, "filter": json.dumps(wanted)}
        page = await self.call(http, "GET", f"{CLIENT}/rooms/{quote(room)}/messages",
                                params=params)  # fmt: skip
        for event in page.get("chunk", []):
            if event.get("unsigned", {}).get("transaction_id") == txn:
                return str(event["event_id"])
        return None

    async def post(
        self, channel: str, text: str, thread_ts: str | None, key: str | None
    ) -> dict[str, Any]:
        if not text.strip():
            raise ChatError("the message text is empty")
        async with self.session() as http:
            room = await self.room(http, channel)
            content: dict[str, Any] = {"msgtype": "m.text", "body": text}
            if thread_ts is not None:
                root = await self._root(http, room, thread_ts)
                thread_ts = str(root["event_id"])
                latest = root.get("unsigned", {}).get("m.relations", {}).get("m.thread", {})
                # The reply fallback points at the thread's newest message, so clients
                # without threads show the reply under what it answers.
                content["m.relates_to"] = {
                    "rel_type": "m.thread",
                    "event_id": thread_ts,
                    "is_falling_back": True,
                    "m.in_reply_to": {
                        "event_id": latest.get("latest_event", {}).get("event_id", thread_ts)
                    },
                }
            txn = txn_id(key) if key is not None else uuid.uuid4().hex
            earlier = await self._posted(http, room, txn) if key is not None else None
            event_id = earlier
            if event_id is None:
                path = f"{CLIENT}/rooms/{quote(room)}/send/m.room.message/{txn}"
                event_id = str((await self.call(http, "PUT", path, json=content))["event_id"])
            evidence = {"channel": room, "ts": event_id}
            if thread_ts is not None:
                evidence["thread_ts"] = thread_ts
            return evidence | {"duplicate": earlier is not None}

    async def react(self, channel: str, ts: str, emoji: str) -> dict[str, Any]:
        name = emoji.strip().strip(":")
        key = SHORTCODES.get(name, name)
        if not key:
            raise ChatError("the emoji is empty")
        async with self.session() as http:
            room = await self.room(http, channel)
            await self._event(http, room, ts)  # "no message" rather than M_UNKNOWN
            relates = {"rel_type": "m.annotation", "event_id": ts, "key": key}
            # The same reaction by the same user is one event: its transaction id is too.
            txn = txn_id(f"reaction\x00{room}\x00{ts}\x00{key}")
            path = f"{CLIENT}/rooms/{quote(room)}/send/m.reaction/{txn}"
            try:
                await self.call(http, "PUT", path, json={"m.relates_to": relates})
            except ChatError as exc:
                if "M_DUPLICATE_ANNOTATION" not in str(exc):
                    raise
        return {"channel": room, "ts": ts, "reaction": key}


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
