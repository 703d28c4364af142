"""Matrix pushes for chat triggers: the homeserver's application-service transactions.

Matrix's counterpart of Slack's Events API. The homeserver admin registers MeshClaw as an
application service whose ``url`` is ``https://<meshclaw>/v1/hooks/matrix/{org_id}/{connector}``;
the homeserver then pushes every event of the rooms it is interested in (rooms the bot,
a user of its ``users`` namespace, has joined) with
``PUT <url>/_matrix/app/v1/transactions/{txnId}`` and ``Authorization: Bearer <hs_token>``
(Synapse 1.163 sends exactly that; the legacy ``?access_token=`` is not taken). The
``hs_token`` is kept in the connector's credential entry (the org's default), field
``hs_token``, beside the bot ``token``.

A request is refused (401, audited ``chat_event.refused`` with the reason) when the org has
no such Matrix chat connector (``MESHCLAW_CHAT_KIND=matrix``), no bearer token came, the
connector's credential has no ``hs_token``, or the token is another (compared in constant
time). The spec's 403 for a wrong token would be as good: the homeserver retries either.

Each ``m.room.message`` of a transaction goes through ``triggers.chat.start_matrix`` for
every chat trigger of the org's agents on that connector whose room it is: the filters,
mention rules, trust flags and message key of polling. So the homeserver retrying a
transaction (it does until it gets a 200), or a message also read by a poll, starts its
run once: a transaction id seen before does nothing new, because each of its messages
has its delivery row already (no table of transaction ids is needed, and a transaction
whose first try met a problem is done properly when it comes again). A trigger that
cannot work now (an unreachable homeserver, no read grant) is marked refused, as by a
poll; the transaction still gets its 200 (a failing answer would hold up every later
one), and the poll catches up on the message.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from meshclaw.clock import utcnow
from meshclaw.connectors.config import ConnectorConfig
from meshclaw.connectors.servers._chat_matrix import MatrixChat, is_message
from meshclaw.connectors.servers.chat import ChatError
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
from meshclaw.triggers.chat import bot_names, chat_settings, start_matrix

log = logging.getLogger(__name__)

APP_API = "/_matrix/app/v1"
"""The Application Service API's prefix, which the homeserver appends to the ``url``."""
MAX_BODY = 32 * 1024 * 1024
"""A transaction holds at most 100 events of at most 64 KiB each, plus ephemeral ones."""
VIA = "appservice"
_CHALLENGE = 'Bearer realm="matrix-appservice"'


class MatrixPushReceiver:
    """Checks the homeserver's token and starts the chat triggers' runs of a transaction."""

    def __init__(
        self,
        platform: Platform,
        *,
        dispatch: Callable[[str], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._platform = platform
        self._inbound = Inbound(platform, dispatch=dispatch, clock=clock)

    def verify(
        self, org_id: str, connector: str, authorization: str | None, remote: str | None = None
    ) -> None:
        """The caller is the homeserver: ``AuthError`` (audited) if it does not prove it."""
        config = self._matrix_config(org_id, connector)

        def refuse(reason: str) -> AuthError:
            audit_refused_push(
                self._platform, org_id if config else None, connector, reason, remote, VIA
            )
            return AuthError(f"matrix transaction refused: {reason}", challenge=_CHALLENGE)

        if config is None:
            raise refuse("no such Matrix chat connector")
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise refuse("missing the homeserver's token (Authorization: Bearer <hs_token>)")
        expected = hook_secret(self._platform, org_id, config, "hs_token")
        if expected is None:
            raise refuse("the connector's credential has no hs_token")
        if not hmac.compare_digest(expected, token.strip().encode()):
            raise refuse("the token is not the connector's hs_token")

    def transaction(self, org_id: str, connector: str, txn_id: str, body: bytes) -> list[str]:
        """Start the runs of a verified transaction's messages; their ids (none if the
        transaction, or each of its messages, was acted on before)."""
        events = _messages(body)
        started: list[str] = []
        if events:
            for watcher, trigger in chat_watchers(self._platform, org_id, connector):
                try:
                    started += asyncio.run(self._deliver(watcher, trigger, events))
                except TriggerProblem as exc:
                    self._inbound.problem(watcher, str(exc))
        log.debug(
            "matrix transaction %s for %s/%s: %d message(s), %d run(s) started",
            txn_id[:80], org_id, connector, len(events), len(started),
        )  # fmt: skip
        return started

    async def _deliver(
        self, watcher: Watcher, trigger: ChatTrigger, events: list[dict[str, Any]]
    ) -> list[str]:
        if trigger.channel.startswith("!") and all(e["room_id"] != trigger.channel for e in events):
            return []  # a room id names itself: no need to ask the homeserver
        settings, untrusted = chat_settings(self._inbound, watcher)
        backend = MatrixChat(settings)
        started: list[str] = []
        try:
            async with backend.session() as http:
                room = await backend.room(http, trigger.channel)
                mine = [e for e in events if e["room_id"] == room]
                if not mine:
                    return []
                refused = read_grant_problem(watcher)
                if refused is not None:
                    raise TriggerProblem(refused)
                bot = await backend.me(http)
                names = await bot_names(backend, http, bot) if trigger.mention else (bot,)
                for event in mine:
                    run_id = await start_matrix(
                        self._inbound, watcher, backend, http, room, event, bot, names,
                        untrusted, via=VIA,
                    )  # fmt: skip
                    if run_id is not None:
                        started.append(run_id)
        except ChatError as exc:
            raise TriggerProblem(f"connector {trigger.connector!r}: {exc}") from None
        return started

    def _matrix_config(self, org_id: str, connector: str) -> ConnectorConfig | None:
        found = self._platform.connector_admin.configs(org_id).get(connector)
        if found is None or found[0].env.get("MESHCLAW_CHAT_KIND") != "matrix":
            return None
        return found[0]


def _messages(body: bytes) -> list[dict[str, Any]]:
    """The transaction's room messages (``UserError`` for a body that is no transaction)."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise UserError("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise UserError("the body is not a JSON object")
    events = payload.get("events")
    if not isinstance(events, list):
        raise UserError("the transaction has no 'events' list")
    return [
        e for e in events
        if isinstance(e, dict) and isinstance(e.get("content"), dict) and is_message(e)
        and isinstance(e.get("room_id"), str) and isinstance(e.get("event_id"), str)
    ]  # fmt: skip
