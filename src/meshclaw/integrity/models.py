"""Tables of the integrity capability: findings and their review state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from meshclaw.clock import utcnow
from meshclaw.store.models import Base


class IntegrityFinding(Base):
    """One detector's finding about one person, and where its review stands.

    ``status`` moves open -> under_review -> confirmed | dismissed (a reason is required
    for the last two); every move is audited. While a finding is open or under review the
    credit it concerns (its scope, in ``evidence["scope"]``: ``integrity.scope``) is
    withheld from leaderboards (pending review); confirmed, it stays withheld; dismissed,
    it is restored.
    """

    __tablename__ = "integrity_findings"
    __table_args__ = (
        Index("ix_integrity_findings_org_status", "org_id", "status"),
        Index("ix_integrity_findings_org_subject", "org_id", "subject", "detector"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"))
    subject: Mapped[str] = mapped_column(String(200))
    """The person concerned: a user id, or the pseudonymous id of an imported history."""
    detector: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20))
    """open, under_review, confirmed or dismissed."""
    strength: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    """The person's combined score in the scan that raised or last updated it."""
    evidence: Mapped[dict[str, Any]]
    source: Mapped[str] = mapped_column(String(200))
    """What was scanned, e.g. ``scan:events.jsonl``."""
    reason: Mapped[str | None] = mapped_column(Text)
    """Why it was confirmed or dismissed."""
    reviewed_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
