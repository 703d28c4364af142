"""Webhook triggers: ``POST /v1/hooks/{agent_id}``, signed with HMAC, never replayed.

A sender signs each delivery with the agent's webhook secret (``secret_ref`` in the
spec's ``webhook`` trigger, resolved by a ``SecretStore``)::

    X-MeshClaw-Timestamp: 1764240000                 (Unix seconds)
    X-MeshClaw-Nonce:     3f1c…                      (unique per delivery, 8-200 chars)
    X-MeshClaw-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<nonce>." + body)>

A delivery is refused (HTTP 401, and an audit record ``webhook.refused`` with the
reason) when a header is missing, the agent has no webhook trigger, the timestamp is
more than ``WINDOW`` away from now, the signature does not match, or the nonce was seen
before (``webhook_nonces``; a nonce is remembered as long as its timestamp is valid).
Otherwise the body becomes the input of a run with trigger ``webhook``, acting for the
agent's owner.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from meshclaw.audit.sink import AuditRecord
from meshclaw.clock import utcnow
from meshclaw.errors import AuthError
from meshclaw.ids import new_id
from meshclaw.platform import Platform
from meshclaw.runtime.service import RunInfo
from meshclaw.spec.loader import parse_stored_spec
from meshclaw.spec.models import WebhookTrigger
from meshclaw.store.models import Agent, AgentVersion, User
from meshclaw.triggers.models import WebhookNonce
from meshclaw.triggers.secrets import SecretStore

WINDOW = timedelta(minutes=5)
MAX_BODY = 256 * 1024
TIMESTAMP, NONCE, SIGNATURE = "x-meshclaw-timestamp", "x-meshclaw-nonce", "x-meshclaw-signature"
_CHALLENGE = 'MeshClaw-HMAC-SHA256 realm="webhooks"'
"""What a refused delivery's 401 names: a signed delivery (see above), not a token."""


def sign(secret: bytes, timestamp: str, nonce: str, body: bytes) -> str:
    """The ``X-MeshClaw-Signature`` value for a delivery (senders and tests use this)."""
    mac = hmac.new(secret, f"{timestamp}.{nonce}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


@dataclass(frozen=True, kw_only=True)
class _Target:
    agent_id: str
    org_id: str
    owner: User
    triggers: list[WebhookTrigger]


class WebhookReceiver:
    def __init__(
        self,
        platform: Platform,
        secrets: SecretStore,
        *,
        dispatch: Callable[[str], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._platform = platform
        self._db = platform.db
        self._secrets = secrets
        self._dispatch = dispatch
        self._clock = clock

    def receive(
        self, agent_id: str, headers: Mapping[str, str], body: bytes, remote: str | None = None
    ) -> RunInfo:
        """Verify a delivery and start its run; ``AuthError`` (audited) if refused."""
        target = self._target(agent_id)

        def refuse(reason: str) -> AuthError:
            self._audit(agent_id, target, "denied", {"reason": reason, "remote": remote})
            return AuthError(f"webhook refused: {reason}", challenge=_CHALLENGE)

        if target is None or not target.triggers:
            raise refuse("the agent has no webhook trigger")
        timestamp, nonce = headers.get(TIMESTAMP, ""), headers.get(NONCE, "")
        signature = headers.get(SIGNATURE, "")
        if not (timestamp and nonce and signature):
            raise refuse("missing timestamp, nonce or signature header")
        if not 8 <= len(nonce) <= 200:
            raise refuse("the nonce must be 8 to 200 characters")
        if len(body) > MAX_BODY:
            raise refuse("body too large")
        try:
            sent_at = datetime.fromtimestamp(int(timestamp), tz=UTC)
        except (ValueError, OverflowError, OSError):
            raise refuse("the timestamp is not Unix seconds") from None
        now = self._clock()
        if abs(now - sent_at) > WINDOW:
            raise refuse("the timestamp is outside the accepted window")
        if not any(self._verifies(t, timestamp, nonce, body, signature) for t in target.triggers):
            raise refuse("bad signature")
        if not self._first_use(target.agent_id, nonce, now):
            raise refuse("replayed nonce")
        caller = self._platform.accounts.caller_for(target.owner)
        text = body.decode("utf-8", errors="replace")
        try:
            info = self._platform.runs.create(caller, target.agent_id, text, trigger="webhook")
        except BaseException:
            # No run was created: the sender's retry of this delivery must not be taken
            # for a replay.
            self._forget(target.agent_id, nonce)
            raise
        self._audit(agent_id, target, "ok", {"run_id": info.id, "remote": remote})
        if self._dispatch is not None:
            self._dispatch(info.id)
        return info

    def _verifies(
        self, trigger: WebhookTrigger, timestamp: str, nonce: str, body: bytes, signature: str
    ) -> bool:
        secret = self._secrets.get(trigger.secret_ref) if trigger.secret_ref else None
        if secret is None:
            return False  # no secret, no way in: unsigned webhooks are not accepted
        return hmac.compare_digest(sign(secret, timestamp, nonce, body), signature)

    def _first_use(self, agent_id: str, nonce: str, now: datetime) -> bool:
        try:
            with self._db.session() as session:
                # Forget nonces whose timestamps can no longer pass the window check.
                session.execute(delete(WebhookNonce).where(WebhookNonce.seen_at < now - 2 * WINDOW))
                session.add(WebhookNonce(id=new_id("whn"), agent_id=agent_id, nonce=nonce))
        except IntegrityError:
            return False
        return True

    def _forget(self, agent_id: str, nonce: str) -> None:
        with self._db.session() as session:
            session.execute(
                delete(WebhookNonce).where(
                    WebhookNonce.agent_id == agent_id, WebhookNonce.nonce == nonce
                )
            )

    def _target(self, agent_id: str) -> _Target | None:
        with self._db.session() as session:
            row = session.execute(
                select(Agent.id, Agent.org_id, AgentVersion.spec_yaml, User)
                .join(
                    AgentVersion,
                    (AgentVersion.agent_id == Agent.id)
                    & (AgentVersion.version == Agent.latest_version),
                )
                .join(User, User.id == Agent.owner_id)
                .where(Agent.id == agent_id, Agent.archived_at.is_(None))
            ).one_or_none()
        if row is None:
            return None
        spec = parse_stored_spec(row.spec_yaml)
        hooks = [t for t in spec.triggers if isinstance(t, WebhookTrigger)]
        return _Target(agent_id=row.id, org_id=row.org_id, owner=row.User, triggers=hooks)

    def _audit(
        self, agent_id: str, target: _Target | None, outcome: str, details: dict[str, object]
    ) -> None:
        with self._db.session() as session:
            self._platform.audit.append(
                session,
                AuditRecord(
                    action="webhook.refused" if outcome == "denied" else "webhook.accepted",
                    resource=f"agent:{agent_id}"[:300],
                    outcome=outcome,
                    org_id=target.org_id if target else None,
                    actor_agent_id=target.agent_id if target else None,
                    details={k: v for k, v in details.items() if v is not None},
                ),
            )
