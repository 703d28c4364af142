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
mention rules, trust flags and message key of polling. So a message also read by a poll
starts its run once. A trigger that cannot work now (an unreachable homeserver, no read
grant) is marked refused, as by a poll; the transaction still gets its 200 (a failing
answer would hold up every later one), and the poll catches up on the message.

The homeserver sends a transaction again, with the same ``txnId``, until it is answered
200 (a lost answer, a timeout). A transaction with messages that was processed to its end
is a ``matrix_transactions`` row (org, connector, txn id), written right after: the same
id again is answered 200 at once, without asking the homeserver or the store about its
messages, and counted on the row (``resends``; not audited: it changes nothing). A
transaction whose processing failed half-way (the store failed between two messages) has
no row and is answered 500, so the homeserver's retry processes it again; the messages
done the first time have their delivery rows and start nothing twice. The row keeps a
digest of the messages' event ids: the same id with other messages (a homeserver restored
from a backup counts its ids again) is processed as new rather than dropped. Rows older
than ``triggers.matrix_txn_retention_hours`` are pruned by the scheduler's tick
(``prune_transactions``); a resend after that is processed again, still once per message.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, update
from sqlalchemy.exc import IntegrityError

from meshclaw.clock import utcnow
from meshclaw.connectors.config import ConnectorConfig
from meshclaw.connectors.servers._chat_matrix import MatrixChat, is_message
from meshclaw.connectors.servers.chat import ChatError
from meshclaw.errors import AuthError, UserError
from meshclaw.ids import new_id
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
from meshclaw.triggers.models import MatrixTransaction

log = logging.getLogger(__name__)

APP_API = "/_matrix/app/v1"
"""The Application Service API's prefix, which the homeserver appends to the ``url``."""
MAX_BODY = 32 * 1024 * 1024
"""A transaction holds at most 100 events of at most 64 KiB each, plus ephemeral ones."""
VIA = "appservice"
RETENTION_HOURS = 72.0
"""How long a processed transaction id is kept by default: a homeserver down over a weekend
still resends within it."""
TXN_ID_MAX = 200
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
        self._clock = clock
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
        transaction, or each of its messages, was acted on before). An exception other than
        ``UserError`` (a bad body) leaves the transaction unrecorded, to be sent again."""
        count, events = _messages(body)
        if not events:
            return []  # nothing to act on, and nothing to remember
        key, digest = _txn_key(txn_id), _digest(events)
        if self._resent(org_id, connector, key, digest):
            log.info(
                "matrix transaction %s for %s/%s came again: answered from its row",
                key[:80], org_id, connector,
            )  # fmt: skip
            return []
        started: list[str] = []
        for watcher, trigger in chat_watchers(self._platform, org_id, connector):
            try:
                started += asyncio.run(self._deliver(watcher, trigger, events))
            except TriggerProblem as exc:
                self._inbound.problem(watcher, str(exc))
        self._done(org_id, connector, key, digest, count, len(started))
        log.debug(
            "matrix transaction %s for %s/%s: %d message(s), %d run(s) started",
            key[:80], org_id, connector, len(events), len(started),
        )  # fmt: skip
        return started

    def _resent(self, org_id: str, connector: str, key: str, digest: str) -> bool:
        """Whether the transaction was processed before (and count this resend)."""
        with self._platform.db.session() as session:
            counted = session.execute(
                update(MatrixTransaction)
                .where(
                    MatrixTransaction.org_id == org_id,
                    MatrixTransaction.connector == connector,
                    MatrixTransaction.txn_id == key,
                    MatrixTransaction.digest == digest,
                )
                .values(resends=MatrixTransaction.resends + 1)
            )
            return bool(counted.rowcount)  # type: ignore[attr-defined]

    def _done(
        self, org_id: str, connector: str, key: str, digest: str, events: int, runs: int
    ) -> None:
        """Record the transaction as processed; an id taken before with other messages now
        names this one."""
        values = {"digest": digest, "events": events, "runs": runs, "received_at": self._clock()}
        where = (
            MatrixTransaction.org_id == org_id,
            MatrixTransaction.connector == connector,
            MatrixTransaction.txn_id == key,
        )
        try:
            with self._platform.db.session() as session:
                session.execute(
                    insert(MatrixTransaction).values(
                        id=new_id("mtx"), org_id=org_id, connector=connector, txn_id=key,
                        resends=0, **values,
                    )
                )  # fmt: skip
        except IntegrityError:
            # Processed meanwhile (the homeserver gave up waiting on a slow answer and sent
            # it again): the same row stands. Or the id came before with other messages.
            with self._platform.db.session() as session:
                session.execute(
                    update(MatrixTransaction)
                    .where(*where, MatrixTransaction.digest != digest)
                    .values(resends=0, **values)
                )

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
                names = await bot_names(backend, http, bot, room) if trigger.mention else (bot,)
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


def retention(platform: Platform) -> timedelta:
    """How long a processed transaction is remembered (``triggers.matrix_txn_retention_hours``)."""
    # ``getattr``: the field is read the same way whether or not the settings model has it
    # yet (``meshclaw.config.TriggerSettings``); its default is ``RETENTION_HOURS``.
    hours = getattr(platform.settings.triggers, "matrix_txn_retention_hours", RETENTION_HOURS)
    return timedelta(hours=float(hours))


def prune_transactions(platform: Platform, now: datetime | None = None) -> int:
    """Forget the transactions processed longer than the retention ago; how many. The
    scheduler's inbound tick calls it."""
    cutoff = (now or utcnow()) - retention(platform)
    with platform.db.session() as session:
        pruned = session.execute(
            delete(MatrixTransaction).where(MatrixTransaction.received_at < cutoff)
        )
        return int(pruned.rowcount)  # type: ignore[attr-defined]


def _txn_key(txn_id: str) -> str:
    """The id as kept: itself, or its SHA-256 when too long for the column (the homeserver
    chooses it; Synapse's are counters)."""
    if len(txn_id) <= TXN_ID_MAX:
        return txn_id
    return "sha256:" + hashlib.sha256(txn_id.encode()).hexdigest()


def _digest(messages: list[dict[str, Any]]) -> str:
    """What makes a resend the same transaction: its messages' event ids. Not the body: a
    retry may carry the events serialised anew (``unsigned.age``) and drops ephemeral ones."""
    ids = sorted(str(m["event_id"]) for m in messages)
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _messages(body: bytes) -> tuple[int, list[dict[str, Any]]]:
    """How many events the transaction holds, and its room messages (``UserError`` for a
    body that is no transaction)."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise UserError("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise UserError("the body is not a JSON object")
    events = payload.get("events")
    if not isinstance(events, list):
        raise UserError("the transaction has no 'events' list")
    return len(events), [
        e for e in events
        if isinstance(e, dict) and isinstance(e.get("content"), dict) and is_message(e)
        and isinstance(e.get("room_id"), str) and isinstance(e.get("event_id"), str)
    ]  # fmt: skip
