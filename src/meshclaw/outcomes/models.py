"""Outcome tables: outcome records, beneficiary feedback, and admin-set type weights.

Feedback rows are append-only evidence: a verdict is never edited or deleted, a later
one supersedes it (``outcomes._rules``). ``Outcome.state`` is derived from the
outcome and its feedback and kept up to date on every change, so lists and counts are
one indexed query.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from meshclaw.clock import utcnow
from meshclaw.store.models import Base


class Outcome(Base):
    """One outcome an agent's write produced, with its evidence and verification."""

    __tablename__ = "outcomes"
    __table_args__ = (
        UniqueConstraint("step_id", "type"),
        Index("ix_outcomes_org_created", "org_id", "created_at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"))
    team_id: Mapped[str | None] = mapped_column(ForeignKey("teams.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    """The owner: the agent's owner, whose credentials did the write."""
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    step_id: Mapped[str | None] = mapped_column(String(40))
    """The write tool step whose evidence produced it."""
    tool: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(63))
    ref: Mapped[str] = mapped_column(String(500))
    """The external id (a Message-ID, a ticket, a deploy)."""
    beneficiaries: Mapped[list[Any]] = mapped_column(default=list)
    """User ids, or ``external`` for people outside the org."""
    verified: Mapped[bool] = mapped_column(default=False)
    verification: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """What the verifier checked and found (or why it could not)."""
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """The connector's evidence from the write, as returned."""
    value: Mapped[float] = mapped_column(Float, default=1.0)
    state: Mapped[str] = mapped_column(String(20), default="unaccepted", index=True)
    """credited, unverified, self, unaccepted or undone (``outcomes._rules``)."""
    durability_due_at: Mapped[datetime | None] = mapped_column(index=True)
    """When the durability re-check is due; None once done (or if the type has none)."""
    durability_checked_at: Mapped[datetime | None]
    silence_accepts_at: Mapped[datetime | None]
    """For types where silence is acceptance: when no feedback by then counts as accepted."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutcomeFeedback(Base):
    """A verdict on an outcome by a beneficiary, ``external``, or ``system`` (a re-check)."""

    __tablename__ = "outcome_feedback"
    __table_args__ = (Index("ix_outcome_feedback_org_created", "org_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    outcome_id: Mapped[str] = mapped_column(ForeignKey("outcomes.id"), index=True)
    by: Mapped[str] = mapped_column(String(200))
    """A user id, ``external:<address>``, ``system`` or ``silence``."""
    verdict: Mapped[str] = mapped_column(String(20))
    via: Mapped[str] = mapped_column(String(10))
    """api, cli, link, system."""
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutcomeTypeWeight(Base):
    """An org's weight for one outcome type (defaults ship in ``outcomes.types``)."""

    __tablename__ = "outcome_type_weights"
    __table_args__ = (UniqueConstraint("org_id", "type"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"))
    type: Mapped[str] = mapped_column(String(63))
    weight: Mapped[float] = mapped_column(Float)
    updated_by: Mapped[str | None] = mapped_column(String(40))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
