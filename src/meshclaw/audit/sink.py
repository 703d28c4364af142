"""The audit seam: every gateway decision and call is appended here.

``StoreAuditSink`` appends rows to ``audit_events``; the audit issue adds the hash
chain, signed checkpoints and verification on top of the same table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session

from meshclaw.ids import new_id
from meshclaw.store.models import AuditEvent


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    action: str
    """What happened, e.g. ``model.invoke``, ``tool.write``, ``agent.create``."""
    resource: str
    outcome: str
    """ok, error, denied, ..."""
    org_id: str | None = None
    actor_user_id: str | None = None
    actor_agent_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class AuditSink(Protocol):
    def append(self, session: Session, record: AuditRecord) -> None:
        """Append within the caller's transaction, so the record and the act commit together."""
        ...


class StoreAuditSink:
    def append(self, session: Session, record: AuditRecord) -> None:
        session.add(
            AuditEvent(
                id=new_id("aud"),
                org_id=record.org_id,
                actor_user_id=record.actor_user_id,
                actor_agent_id=record.actor_agent_id,
                action=record.action,
                resource=record.resource,
                outcome=record.outcome,
                details=record.details,
            )
        )


class MemoryAuditSink:
    """Keeps records in a list; for unit tests."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def append(self, session: Session, record: AuditRecord) -> None:
        self.records.append(record)
