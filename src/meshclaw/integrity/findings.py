"""Findings lifecycle: record a scan's findings, review them, and say whose credit waits.

    open ──start──► under_review ──confirm(reason)──► confirmed
      │                  │
      └──────────────────┴──dismiss(reason)──► dismissed

Who may do what: reviewers are auditors and platform admins (``REVIEWERS``); anyone
else sees only the findings about themselves, never a peer's. Every recorded finding and
every move is an ``AuditRecord`` appended in the same transaction. A dismissed pattern
is not raised again for the same person and detector unless the new evidence names
runs, outcomes or agents the dismissed one did not (new evidence). While a finding is
open or under review the credit it concerns is withheld (``withheld``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from meshclaw.accounts.service import Caller
from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.clock import utcnow
from meshclaw.errors import ConflictError, NotFoundError, PermissionDenied, UserError
from meshclaw.ids import new_id
from meshclaw.integrity._scan import ScanResult
from meshclaw.integrity.models import IntegrityFinding
from meshclaw.store.db import Database

STATUSES = ("open", "under_review", "confirmed", "dismissed")
PENDING = ("open", "under_review")
"""Statuses that withhold credit."""
REVIEWERS = frozenset({"auditor", "platform_admin"})
_MOVES = {
    "start": ({"open"}, "under_review"),
    "confirm": ({"open", "under_review"}, "confirmed"),
    "dismiss": ({"open", "under_review"}, "dismissed"),
}
_ID_KEYS = ("example", "agent", "ref", "group", "members")


@dataclass(frozen=True, kw_only=True)
class FindingView:
    id: str
    subject: str
    detector: str
    status: str
    strength: float
    score: float
    evidence: dict[str, Any]
    source: str
    reason: str | None
    reviewed_by: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: IntegrityFinding) -> FindingView:
        return cls(
            id=row.id, subject=row.subject, detector=row.detector, status=row.status,
            strength=row.strength, score=row.score, evidence=row.evidence, source=row.source,
            reason=row.reason, reviewed_by=row.reviewed_by, created_at=row.created_at,
            updated_at=row.updated_at,
        )  # fmt: skip


def evidence_ids(evidence: Any, key: str = "") -> set[str]:
    """The ids a piece of evidence names (example runs, outcomes, agents, refs, members)."""
    found: set[str] = set()
    if isinstance(evidence, dict):
        for k, v in evidence.items():
            found |= evidence_ids(v, k)
    elif isinstance(evidence, list):
        for v in evidence:
            found |= evidence_ids(v, key)
    elif isinstance(evidence, str) and any(part in key for part in _ID_KEYS):
        found.add(evidence)
    return found


@dataclass(frozen=True, kw_only=True)
class RecordSummary:
    opened: int
    updated: int
    suppressed: int
    """Findings not raised again: a reviewer dismissed the same pattern, no new evidence."""


class FindingsService:
    def __init__(self, db: Database, audit: AuditSink) -> None:
        self._db = db
        self._audit = audit

    def record(self, caller: Caller, result: ScanResult, *, source: str) -> RecordSummary:
        """Store the findings of a scan for the caller's org (reviewers only)."""
        self._require_reviewer(caller)
        opened = updated = suppressed = 0
        with self._db.session() as session:
            for person in result.users:
                for finding in person.findings if person.flagged else ():
                    rows = session.scalars(
                        select(IntegrityFinding).where(
                            IntegrityFinding.org_id == caller.org_id,
                            IntegrityFinding.subject == person.user,
                            IntegrityFinding.detector == finding.detector,
                        )
                    ).all()
                    pending = [r for r in rows if r.status in PENDING]
                    if pending:
                        row = pending[0]
                        row.evidence, row.strength = finding.evidence, finding.strength
                        row.score, row.updated_at = person.score, utcnow()
                        updated += 1
                        continue
                    seen: set[str] = set()
                    for r in rows:
                        if r.status == "dismissed":
                            seen |= evidence_ids(r.evidence)
                    if seen and not evidence_ids(finding.evidence) - seen:
                        suppressed += 1
                        continue
                    row = IntegrityFinding(
                        id=new_id("fnd"), org_id=caller.org_id, subject=person.user,
                        detector=finding.detector, status="open", strength=finding.strength,
                        score=person.score, evidence=finding.evidence, source=source[:200],
                    )  # fmt: skip
                    session.add(row)
                    self._audit.append(session, self._record(caller, row, "open"))
                    opened += 1
        return RecordSummary(opened=opened, updated=updated, suppressed=suppressed)

    def queue(self, caller: Caller, statuses: Iterable[str] = PENDING) -> list[FindingView]:
        """Findings in the given statuses: all of the org's for reviewers, else one's own."""
        wanted = list(statuses)
        bad = [s for s in wanted if s not in STATUSES]
        if bad:
            raise UserError(f"unknown status {bad[0]!r}: use {', '.join(STATUSES)}")
        with self._db.session() as session:
            query = select(IntegrityFinding).where(
                IntegrityFinding.org_id == caller.org_id, IntegrityFinding.status.in_(wanted)
            )
            if caller.role not in REVIEWERS:
                query = query.where(IntegrityFinding.subject == caller.user_id)
            rows = session.scalars(
                query.order_by(IntegrityFinding.score.desc(), IntegrityFinding.created_at)
            ).all()
            return [FindingView.of(r) for r in rows]

    def move(
        self, caller: Caller, finding_id: str, action: str, *, reason: str = ""
    ) -> FindingView:
        """``start`` a review, ``confirm`` or ``dismiss`` (both need a reason)."""
        self._require_reviewer(caller)
        if action not in _MOVES:
            raise UserError(f"unknown action {action!r}: use start, confirm or dismiss")
        allowed, target = _MOVES[action]
        if target in ("confirmed", "dismissed") and not reason.strip():
            raise UserError(f"{action}: a reason is required")
        with self._db.session() as session:
            row = session.get(IntegrityFinding, finding_id)
            if row is None or row.org_id != caller.org_id:
                raise NotFoundError(f"no finding {finding_id!r}")
            if row.status not in allowed:
                raise ConflictError(f"finding {finding_id} is {row.status}: cannot {action}")
            row.status, row.reviewed_by, row.updated_at = target, caller.user_id, utcnow()
            if reason.strip():
                row.reason = reason.strip()
            self._audit.append(session, self._record(caller, row, target, reason=row.reason))
            return FindingView.of(row)

    def withheld(self, org_id: str) -> frozenset[str]:
        """People whose credit is withheld: they have a finding open or under review."""
        with self._db.session() as session:
            rows = session.scalars(
                select(IntegrityFinding.subject).where(
                    IntegrityFinding.org_id == org_id, IntegrityFinding.status.in_(PENDING)
                )
            ).all()
            return frozenset(rows)

    def _require_reviewer(self, caller: Caller) -> None:
        if caller.role not in REVIEWERS:
            raise PermissionDenied("integrity findings are reviewed by auditors and admins")

    @staticmethod
    def _record(
        caller: Caller, row: IntegrityFinding, status: str, reason: str | None = None
    ) -> AuditRecord:
        details: dict[str, Any] = {
            "subject": row.subject, "detector": row.detector, "score": row.score,
        }  # fmt: skip
        if reason:
            details["reason"] = reason
        return AuditRecord(
            action=f"integrity.finding.{status}", resource=f"finding:{row.id}", outcome="ok",
            org_id=caller.org_id, actor_user_id=caller.user_id, details=details,
        )  # fmt: skip
