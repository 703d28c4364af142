"""Durability re-check bookkeeping: which outcomes are due, and the claim on each.

A re-check claims an outcome by moving its ``durability_due_at`` to when the claim lapses
(``now + claim``), with a conditional ``UPDATE`` that only succeeds while the outcome is
still due: overlapping re-checks judge it once, and a worker that dies after claiming
(before it recorded anything) loses nothing: the outcome is due again when the claim
lapses. Every later write is conditional on the claim still being ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from meshclaw.outcomes.models import Outcome
from meshclaw.outcomes.types import OutcomeType, resolve_type
from meshclaw.spec.loader import parse_stored_spec
from meshclaw.store.models import AgentVersion, Run, User


@dataclass(frozen=True, kw_only=True)
class Due:
    """An outcome whose durability re-check is due."""

    id: str
    type: str
    ref: str
    run_id: str
    owner: str
    """The owner's handle (what verifiers compare with)."""
    due_at: datetime
    kind: OutcomeType | None
    """The type as the recording agent version claims it (None: the shipped default)."""


def due_outcomes(session: Session, *, now: datetime, org_id: str | None, limit: int) -> list[Due]:
    in_org = [Outcome.org_id == org_id] if org_id is not None else []
    rows = session.execute(
        select(Outcome.id, Outcome.type, Outcome.ref, Outcome.run_id, User.handle,
               Outcome.durability_due_at, Run.agent_version_id)
        .join(Run, Run.id == Outcome.run_id)
        .join(User, User.id == Outcome.user_id)
        .where(Outcome.durability_due_at.is_not(None), Outcome.durability_due_at <= now,
               *in_org)
        .order_by(Outcome.durability_due_at)
        .limit(limit)
    ).all()  # fmt: skip
    kinds = _claimed_kinds(session, {r[6] for r in rows})
    return [
        Due(id=oid, type=t, ref=ref, run_id=run_id, owner=handle, due_at=due_at,
            kind=kinds.get((version_id, t)))
        for oid, t, ref, run_id, handle, due_at, version_id in rows
        if due_at is not None  # the query asks for due ones: this tells the type checker
    ]  # fmt: skip


def _claimed_kinds(session: Session, version_ids: set[str]) -> dict[tuple[str, str], OutcomeType]:
    """(agent version, type) -> the type as that version's spec claims it (its own read
    tool, windows and undo verdict), so a re-check checks what was recorded."""
    kinds: dict[tuple[str, str], OutcomeType] = {}
    if not version_ids:
        return kinds
    rows = session.execute(
        select(AgentVersion.id, AgentVersion.spec_yaml).where(AgentVersion.id.in_(version_ids))
    )
    for version_id, spec_yaml in rows:
        try:
            claims = parse_stored_spec(spec_yaml).outcomes
        except Exception:  # a stored spec that no longer parses: the defaults apply
            continue
        for claim in claims:
            kinds[(version_id, claim.type)] = resolve_type(claim)
    return kinds


def claim(session: Session, outcome_id: str, *, now: datetime, until: datetime) -> bool:
    """Claim a due outcome until ``until``: True for the one caller that did."""
    result = session.execute(
        update(Outcome)
        .where(Outcome.id == outcome_id, Outcome.durability_due_at <= now)
        .values(durability_due_at=until)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def settle(
    session: Session, outcome_id: str, *, until: datetime, due_at: datetime | None, **values: Any
) -> Outcome | None:
    """End our claim: due again at ``due_at`` (None: re-checked, done), with ``values``.
    None if the claim lapsed and another re-check has the outcome now."""
    result = session.execute(
        update(Outcome)
        .where(Outcome.id == outcome_id, Outcome.durability_due_at == until)
        .values(durability_due_at=due_at)
    )
    if getattr(result, "rowcount", 0) != 1:
        return None
    outcome = session.get(Outcome, outcome_id)
    assert outcome is not None
    for name, value in values.items():
        setattr(outcome, name, value)
    return outcome


def with_note(outcome: Outcome, status: str, at: datetime, reason: str | None) -> dict[str, Any]:
    """The outcome's ``verification`` with the last re-check's result under ``durability``."""
    note: dict[str, Any] = {"status": status, "at": at.isoformat()}
    if reason:
        note["reason"] = reason[:500]
    return {**(outcome.verification or {}), "durability": note}
