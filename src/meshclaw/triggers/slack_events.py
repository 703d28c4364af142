"""Slack's Events API for chat triggers: ``POST /v1/hooks/chat/{org_id}/{connector}``.

A Slack app delivers its events to one Request URL; this one names the org and its chat
connector. Slack signs every delivery with the app's signing secret, kept in the
connector's credential entry (the org's default, field ``signing_secret``, beside the
bot ``token``)::

    X-Slack-Request-Timestamp: 1764240000
    X-Slack-Signature:         v0=<hex HMAC-SHA256(signing secret, "v0:<timestamp>:" + body)>

A delivery is refused (401, audited ``chat_event.refused`` with the reason) when the org
has no such connector, the connector's credential has no signing secret, a header is
missing, the timestamp is more than ``WINDOW`` away, or the signature does not match.
A signed ``url_verification`` is answered with its challenge. A signed ``message`` or
``app_mention`` event starts one run for each chat trigger of the org's agents on that
connector and channel (``triggers.chat``: the same filters and message key as polling,
so a retried delivery, or a message also seen by a poll, starts its run once).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from meshclaw.clock import utcnow
from meshclaw.errors import AuthError, UserError
from meshclaw.platform import Platform
from meshclaw.spec.models import ChatTrigger
from meshclaw.triggers._deliveries import TriggerProblem
from meshclaw.triggers._inbound import (
    Inbound,
    Watcher,
    audit_refused_push,
    chat_watchers,
    hook_secret,
    read_grant_problem,
)
from meshclaw.triggers.chat import channel_id, chat_client, run_input, wanted

WINDOW = timedelta(minutes=5)
MAX_BODY = 256 * 1024
TIMESTAMP, SIGNATURE = "x-slack-request-timestamp", "x-slack-signature"
_CHALLENGE = 'Slack-Signature realm="chat-events"'
EVENTS = ("message", "app_mention")


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Slack-Signature`` value Slack sends (tests and senders use this)."""
    mac = hmac.new(secret, f"v0:{timestamp}:".encode() + body, hashlib.sha256)
    return f"v0={mac.hexdigest()}"


class SlackEventReceiver:
    def __init__(
        self,
        platform: Platform,
        *,
        dispatch: Callable[[str], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._platform = platform
        self._inbound = Inbound(platform, dispatch=dispatch, clock=clock)
        self._clock = clock

    def receive(
        self,
        org_id: str,
        connector: str,
        headers: Mapping[str, str],
        body: bytes,
        remote: str | None = None,
    ) -> dict[str, Any]:
        """Verify a delivery and act on it; ``AuthError`` (audited) if refused."""
        found = self._platform.connector_admin.configs(org_id).get(connector)

        def refuse(reason: str) -> AuthError:
            audit_refused_push(self._platform, org_id if found else None, connector, reason, remote)
            return AuthError(f"chat event refused: {reason}", challenge=_CHALLENGE)

        if found is None:
            raise refuse("no such chat connector")
        timestamp, signature = headers.get(TIMESTAMP, ""), headers.get(SIGNATURE, "")
        if not (timestamp and signature):
            raise refuse("missing timestamp or signature header")
        if len(body) > MAX_BODY:
            raise refuse("body too large")
        try:
            sent_at = datetime.fromtimestamp(int(timestamp), tz=UTC)
        except (ValueError, OverflowError, OSError):
            raise refuse("the timestamp is not Unix seconds") from None
        if abs(self._clock() - sent_at) > WINDOW:
            raise refuse("the timestamp is outside the accepted window")
        secret = hook_secret(self._platform, org_id, found[0], "signing_secret")
        if secret is None:
            raise refuse("the connector's credential has no signing_secret")
        if not hmac.compare_digest(sign(secret, timestamp, body), signature):
            raise refuse("bad signature")
        try:
            payload = json.loads(body)
        except ValueError:
            raise UserError("the body is not JSON") from None
        if not isinstance(payload, dict):
            raise UserError("the body is not a JSON object")
        if payload.get("type") == "url_verification":
            return {"challenge": str(payload.get("challenge", ""))}
        event = payload.get("event")
        if payload.get("type") != "event_callback" or not isinstance(event, dict):
            return {"ok": True, "runs": []}
        if event.get("type") not in EVENTS or not event.get("channel") or not event.get("ts"):
            return {"ok": True, "runs": []}
        bot = next(
            (a.get("user_id") for a in payload.get("authorizations") or [] if a.get("is_bot")),
            None,
        )
        return {"ok": True, "runs": self._start(org_id, connector, event, bot)}

    def _start(
        self, org_id: str, connector: str, event: dict[str, Any], bot: str | None
    ) -> list[str]:
        started: list[str] = []
        for watcher, trigger in chat_watchers(self._platform, org_id, connector):
            try:
                run_id = self._one(watcher, trigger, event, bot)
            except TriggerProblem as exc:
                self._inbound.problem(watcher, str(exc))
                continue
            if run_id is not None:
                started.append(run_id)
        return started

    def _one(
        self, watcher: Watcher, trigger: ChatTrigger, event: dict[str, Any], bot: str | None
    ) -> str | None:
        channel = str(event["channel"])
        named = trigger.channel.removeprefix("#")
        if not wanted(trigger, event, bot):
            return None
        chat, untrusted = chat_client(self._inbound, watcher)
        if named != channel and channel_id(trigger.connector, chat, trigger.channel) != channel:
            return None
        refused = read_grant_problem(watcher)
        if refused is not None:
            raise TriggerProblem(refused)
        key, text, details = run_input(trigger, channel, event, untrusted)
        return self._inbound.start(watcher, key, text, details | {"via": "events_api"})
