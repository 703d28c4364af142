"""SQLAlchemy 2 models: the single source of the schema (Alembic migrations follow it).

Portable on purpose: SQLite is the embedded default and PostgreSQL the production store,
so only generic types are used. Money is stored as integer nano-dollars (exact sums in SQL
on both engines; SQLite has no decimal type), exposed as ``Decimal`` by the services.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from meshclaw.clock import as_utc, utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on every engine (SQLite drops the zone on read)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: MeshClaw stores timezone-aware UTC only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


Timestamp = UTCDateTime()


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[Any]: JSON,
        datetime: Timestamp,
    }


class Org(Base):
    __tablename__ = "orgs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Team(Base):
    __tablename__ = "teams"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("org_id", "handle"),
        Index("ix_users_org_email", "org_id", "email", unique=True),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    team_id: Mapped[str | None] = mapped_column(ForeignKey("teams.id"), index=True)
    handle: Mapped[str] = mapped_column(String(200))
    """Login name / mail address; unique within the org."""
    email: Mapped[str | None] = mapped_column(String(254))
    """Mail address, stored lower-case (``accounts.service.normalize_email``); unique
    within the org. How outcomes tell who received a mail."""
    display_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(40), default="employee")
    """employee, team_admin, platform_admin or auditor."""
    job_function: Mapped[str | None] = mapped_column(String(200))
    """The role as the company directory shows it (peer grouping for integrity)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    """SHA-256 of the secret part; the secret itself is shown once and never stored."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Agent(Base):
    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("org_id", "name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    team_id: Mapped[str | None] = mapped_column(ForeignKey("teams.id"), index=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    latest_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    archived_at: Mapped[datetime | None]


class AgentVersion(Base):
    """An immutable spec version: rows are inserted, never updated."""

    __tablename__ = "agent_versions"
    __table_args__ = (UniqueConstraint("agent_id", "version"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    spec_yaml: Mapped[str] = mapped_column(Text)
    """Canonical YAML (defaults filled in), so diffs show effective changes."""
    spec_hash: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_status_created", "status", "created_at"),
        # Newest first, of the org or of one owner (``RunService.find``): index order.
        Index("ix_runs_org_user_created", "org_id", "user_id", "created_at", "id"),
        Index("ix_runs_org_created", "org_id", "created_at", "id"),
        # The few runs whose outcomes are not settled yet, for the sweep that settles
        # those left behind (``RunService.unsettled``); settled runs stay out of it.
        Index(
            "ix_runs_outcomes_unsettled",
            "ended_at",
            sqlite_where=text("outcomes_settled_at IS NULL"),
            postgresql_where=text("outcomes_settled_at IS NULL"),
        ),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    team_id: Mapped[str | None] = mapped_column(ForeignKey("teams.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    """The agent's owner: whose delegated credentials and whose cost."""
    started_by: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    agent_version_id: Mapped[str] = mapped_column(ForeignKey("agent_versions.id"))
    agent_version: Mapped[int] = mapped_column(Integer)
    trigger: Mapped[str] = mapped_column(String(20))
    input: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), default="queued")
    """queued, running, waiting_approval (a tool call waits for a person), succeeded,
    failed, cancelled."""
    output: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    step_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    """The scale-out worker executing the run (``workers.leases``); None in-process."""
    lease_expires_at: Mapped[datetime | None] = mapped_column(index=True)
    """Running: when another worker may take the run over unless the owner renews it.
    Queued: when the sweeper sends the run to the broker again."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    """How many times a scale-out worker claimed the run (a crash loop is cut off)."""
    outcomes_settled_at: Mapped[datetime | None]
    """When recording the ended run's outcomes finished (``RunExecutor``): from then on
    every outcome its writes produced is stored, with its feedback requests. None while
    the run is live, and for a moment after its end."""
    outcomes_error: Mapped[str | None] = mapped_column(Text)
    """Why recording the outcomes failed (settled all the same: nothing more comes)."""


class RunStep(Base):
    """One model turn or one tool call, written as it starts and updated as it ends."""

    __tablename__ = "run_steps"
    __table_args__ = (UniqueConstraint("run_id", "seq"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(10))
    """model or tool."""
    name: Mapped[str] = mapped_column(String(200))
    """The model id, or the ``connector.tool`` name."""
    status: Mapped[str] = mapped_column(String(20), default="running")
    """running, ok, error, denied, cancelled."""
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    response: Mapped[dict[str, Any] | None]
    decision: Mapped[str | None] = mapped_column(String(200))
    """The authoriser's answer and reason."""
    error: Mapped[str | None] = mapped_column(Text)
    cost_nano_usd: Mapped[int] = mapped_column(BigInteger, default=0)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]


class UsageRecord(Base):
    """Metered usage of one model or tool call, attributed to who and what caused it."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_org_created", "org_id", "created_at"),
        Index("ix_usage_user_created", "user_id", "created_at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    """model or tool."""
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"))
    team_id: Mapped[str | None] = mapped_column(ForeignKey("teams.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    agent_version: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    step_id: Mapped[str | None] = mapped_column(String(40))
    trigger: Mapped[str] = mapped_column(String(20))
    provider: Mapped[str | None] = mapped_column(String(100))
    model: Mapped[str | None] = mapped_column(String(200))
    tool: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="ok")
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(Integer, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(Integer, default=0)
    estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    """True when the provider reported no usage and the counts were estimated."""
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    cost_nano_usd: Mapped[int] = mapped_column(BigInteger, default=0)
    price_version: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """Append-only record of what happened: a leaf of the audit Merkle tree.

    Written only by ``meshclaw.audit.sink.StoreAuditSink`` (which assigns ``seq`` under
    the log's head lock); see ``meshclaw.audit.canonical`` for what is hashed.
    """

    __tablename__ = "audit_events"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    """1-based, dense and in commit order; the Merkle leaf index is ``seq - 1``."""
    id: Mapped[str] = mapped_column(String(40), unique=True)
    ts: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    org_id: Mapped[str | None] = mapped_column(String(40), index=True)
    actor_user_id: Mapped[str | None] = mapped_column(String(40))
    """Not indexed: the query by actor (user or agent) walks the org's index instead."""
    actor_agent_id: Mapped[str | None] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(100), index=True)
    resource: Mapped[str] = mapped_column(String(300))
    outcome: Mapped[str] = mapped_column(String(40))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    salt: Mapped[str | None] = mapped_column(String(32))
    """Random salt of the body hash; removed with the body on redaction."""
    body_sha256: Mapped[str] = mapped_column(String(64))
    """Hex SHA-256 of the canonical body (actors, resource, details, salt)."""
    leaf_hash: Mapped[str] = mapped_column(String(64))
    """Hex RFC 6962 leaf hash of the canonical header (which includes ``body_sha256``)."""
    redacted_at: Mapped[datetime | None]
    """Set when retention removed the body; the header and hashes stay."""


class Note(Base):
    """Written by the built-in ``notes.write`` tool."""

    __tablename__ = "notes"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    agent_id: Mapped[str | None] = mapped_column(ForeignKey("agents.id"))
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
