"""The notification outbox: what the platform has to tell people, until it is delivered."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from meshclaw.clock import utcnow
from meshclaw.store.models import Base


class Notification(Base):
    """One message to one or more people of an org (a soft cap crossed, an approval
    waiting), written in the transaction of the event it reports, sent later."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_status_due", "status", "due_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    kind: Mapped[str] = mapped_column(String(63))
    """``budget.soft_cap``, ``approval.requested``, ..."""
    resource: Mapped[str] = mapped_column(String(200))
    """What it is about (``budget:<id>``, ``approval:<id>``), as in the audit log."""
    recipients: Mapped[list[Any]] = mapped_column(default=list)
    """User ids of the people it is for."""
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(12), default="pending")
    """pending (to send at ``due_at``), sent, failed (gave up), unsent (no channel)."""
    attempts: Mapped[int] = mapped_column(default=0)
    due_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
