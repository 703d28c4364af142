"""Analytics tables: who opted in to individual leaderboards, and who looked at whom.

``AnalyticsView`` is the person-visible trail of individual drill-downs ("who looked at
my numbers"): each one also goes to the audit log, with its reason.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from meshclaw.clock import utcnow
from meshclaw.store.models import Base


class AnalyticsOptIn(Base):
    """A person who agreed to appear on individual leaderboards."""

    __tablename__ = "analytics_optins"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AnalyticsView(Base):
    """One individual drill-down: who looked at whose numbers, when and why."""

    __tablename__ = "analytics_views"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    viewer_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    subject_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
