"""Tables of the trigger machinery: leader leases, cron firings, webhook nonces, the
watermarks and deliveries (with their pending retries) of chat and mail triggers, and the
Matrix transactions a homeserver pushed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from meshclaw.clock import utcnow
from meshclaw.store.models import Base


class SchedulerLease(Base):
    """One row per singleton job (``cron``): which scheduler replica leads it, until when."""

    __tablename__ = "scheduler_leases"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]
    watermark: Mapped[datetime | None]
    """The last minute whose schedules were fired (the next leader continues from it)."""


class CronFiring(Base):
    """A cron trigger that fired for one minute: unique, so no minute fires twice."""

    __tablename__ = "cron_firings"
    __table_args__ = (UniqueConstraint("agent_id", "trigger_key", "fire_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    trigger_key: Mapped[str] = mapped_column(String(200))
    """The schedule expression (so an edited schedule is a new trigger)."""
    fire_at: Mapped[datetime]
    run_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookNonce(Base):
    """A webhook delivery seen: a replayed nonce is refused while its timestamp is valid."""

    __tablename__ = "webhook_nonces"
    __table_args__ = (UniqueConstraint("agent_id", "nonce"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    nonce: Mapped[str] = mapped_column(String(200))
    seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class InboundWatermark(Base):
    """How far a chat or mail trigger has read its channel or folder."""

    __tablename__ = "inbound_watermarks"
    __table_args__ = (UniqueConstraint("agent_id", "trigger_key"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    trigger_key: Mapped[str] = mapped_column(String(300))
    """``mail:<connector>:<folder>`` or ``chat:<connector>:<channel>``."""
    epoch: Mapped[str] = mapped_column(String(64), default="")
    """The folder's UIDVALIDITY (mail); a new one means the UIDs below mean nothing."""
    position: Mapped[str] = mapped_column(String(64))
    """The last UID (mail) or message ``ts`` (chat) looked at."""
    error: Mapped[str | None] = mapped_column(String(500))
    """Why the last poll could not read (audited once per change), None when it could."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class InboundDelivery(Base):
    """A message a chat or mail trigger acted on: unique, so no message starts two runs.

    Written in its run's own transaction, or, when the run could not be created, as a
    ``pending`` row that is retried with back-off (so the watermark may pass it) until it
    starts its run (``started``) or is given up (``abandoned``)."""

    __tablename__ = "inbound_deliveries"
    __table_args__ = (UniqueConstraint("agent_id", "trigger_key", "message_key"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    trigger_key: Mapped[str] = mapped_column(String(300))
    message_key: Mapped[str] = mapped_column(String(200))
    """``<uidvalidity>:<uid>`` (mail) or ``<channel id>/<ts>`` (chat)."""
    run_id: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16), default="started", server_default="started")
    """``started`` (``run_id`` is its run), ``refused`` (the owner may not run the agent),
    ``pending`` (its run could not be created yet) or ``abandoned`` (given up)."""
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    """Tries that failed to create its run."""
    next_attempt_at: Mapped[datetime | None] = mapped_column(index=True)
    """When a ``pending`` message is tried again (None otherwise)."""
    error: Mapped[str | None] = mapped_column(String(300))
    """Why its run could not be created, the last time it could not."""
    run_input: Mapped[str | None] = mapped_column(Text)
    """The run's input, kept while ``pending`` (the message is not read again)."""
    details: Mapped[dict[str, Any] | None]
    """What its ``trigger.fired`` record will keep, while ``pending``."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    """When it started its run, or first failed to (the retries count from here)."""


class MatrixTransaction(Base):
    """A Matrix application-service transaction processed to its end (``triggers.matrix_push``):
    the homeserver sending the same ``txnId`` again is answered at once, without a walk.

    Transaction ids are the homeserver's, per registration, and one registration names one
    org's connector: the key is (org, connector, txn id). Kept for
    ``triggers.matrix_txn_retention_hours`` (the scheduler's inbound tick prunes older rows)."""

    __tablename__ = "matrix_transactions"
    __table_args__ = (UniqueConstraint("org_id", "connector", "txn_id"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40))
    connector: Mapped[str] = mapped_column(String(63))
    txn_id: Mapped[str] = mapped_column(String(200))
    """The homeserver's ``txnId`` (``sha256:<hex>`` of it when longer than 200 characters)."""
    digest: Mapped[str] = mapped_column(String(64))
    """SHA-256 of its events' ids: the same id with other events (a homeserver restored from
    a backup counts again) is a new transaction, not a resend."""
    events: Mapped[int]
    """How many events it carried (all kinds, not only messages)."""
    runs: Mapped[int]
    """How many runs it started."""
    resends: Mapped[int] = mapped_column(default=0, server_default="0")
    """How many times it came again and was answered from this row."""
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    """When it was processed (the retention counts from here)."""
