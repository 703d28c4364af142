"""Findings lifecycle: record a scan's findings, review them, and say whose credit waits.

    open ──start──► under_review ──confirm(reason)──► confirmed
      │                  │
      └──────────────────┴──dismiss(reason)──► dismissed

Who may do what is Cedar's decision (``policy.roles``): ``integrity.read`` and
``integrity.review`` on the ``Org`` (the whole queue, recording a scan) or on the ``User``
a finding is about. The built-in policies let auditors and platform admins review, let
every person read the findings about themselves (never a peer's), and forbid reviewing a
finding about yourself. A finding the caller may not read is "not found". Every
recorded finding and every move is an ``AuditRecord`` appended in the same transaction.
A dismissed pattern is not raised again for the same person and detector unless the new
evidence names runs, outcomes or agents the dismissed one did not (new evidence). While
a finding is open or under review the credit it concerns is withheld pending review, and
a confirmed finding keeps it withheld; only a dismissal restores it (``withheld``). What
credit a finding concerns is its scope (``integrity.scope``), recorded in its evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from meshclaw.accounts.service import Caller
from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.clock import utcnow
from meshclaw.errors import ConflictError, NotFoundError, UserError
from meshclaw.ids import new_id
from meshclaw.integrity.models import IntegrityFinding
from meshclaw.integrity.scope import RECHECK_FAILING as RECHECK_FAILING
from meshclaw.integrity.scope import Withholding, lenient_withholding, merge_scope
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.store.db import Database
from meshclaw.store.models import AuditEvent, User

if TYPE_CHECKING:  # the scan needs Polars; recording its result does not
    from meshclaw.integrity._scan import ScanResult

STATUSES = ("open", "under_review", "confirmed", "dismissed")
PENDING = ("open", "under_review")
"""Statuses awaiting a reviewer's decision (the review queue)."""
WITHHOLDING = (*PENDING, "confirmed")
"""Statuses that withhold the credit a finding concerns: pending review, or confirmed by
a reviewer (only a dismissal restores it; the offline path,
``analytics.withheld_from_findings``, agrees)."""
READ = "integrity.read"
REVIEW = "integrity.review"
MAX_PAGE = 200
MAX_REASON = 2000
_REVIEWERS_ONLY = "findings are recorded and reviewed by reviewers (auditors, platform admins)"
_LIFECYCLE = tuple(f"integrity.finding.{s}" for s in STATUSES)
_MOVES = {
    "start": ({"open"}, "under_review"),
    "confirm": ({"open", "under_review"}, "confirmed"),
    "dismiss": ({"open", "under_review"}, "dismissed"),
}
MOVE_TO = {target: action for action, (_, target) in _MOVES.items()}
"""The move that leads to each reviewed status (``under_review`` is ``start``, ...)."""
_ID_KEYS = ("example", "agent", "ref", "group", "members")

# RECHECK_FAILING: raised by the platform, not by a scan: an outcome's durability re-check
# kept failing past its grace (``outcomes.recheck``), so that outcome's credit waits for a
# reviewer.
PLATFORM_DETECTORS = (RECHECK_FAILING,)
"""Finding kinds besides the scan detectors (``integrity.detectors.DETECTORS``)."""


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
    subject_handle: str | None = None
    """The subject's user handle when the subject is a person of the org, else None."""

    @classmethod
    def of(cls, row: IntegrityFinding, subject_handle: str | None = None) -> FindingView:
        return cls(
            id=row.id, subject=row.subject, detector=row.detector, status=row.status,
            strength=row.strength, score=row.score, evidence=row.evidence, source=row.source,
            reason=row.reason, reviewed_by=row.reviewed_by, created_at=row.created_at,
            updated_at=row.updated_at, subject_handle=subject_handle,
        )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class FindingPage:
    findings: list[FindingView]
    total: int
    """Findings matching the filters (all pages)."""
    limit: int
    offset: int
    detectors: dict[str, list[str]]
    """Per subject on this page: the detectors of their findings still open or under review
    (what contributed to the score the reviewer sees)."""

    @property
    def next_offset(self) -> int | None:
        end = self.offset + len(self.findings)
        return end if end < self.total else None


@dataclass(frozen=True, kw_only=True)
class HistoryEntry:
    """One step of a finding's life, from the audit log."""

    seq: int
    ts: datetime
    status: str
    actor_user_id: str | None
    actor_handle: str | None
    reason: str | None


def next_statuses(status: str) -> list[str]:
    """The statuses a finding in ``status`` may move to (none once decided)."""
    return [target for sources, target in _MOVES.values() if status in sources]


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
    def __init__(self, db: Database, audit: AuditSink, access: ApiAuthorizer) -> None:
        self._db = db
        self._audit = audit
        self._access = access

    def authorize_record(self, caller: Caller) -> str:
        """The caller's org, if they may record a scan's findings (``integrity.review``)."""
        self._access.require(
            caller, REVIEW, ApiResource.org(caller.org_id), message=_REVIEWERS_ONLY
        )
        return caller.org_id

    def record(self, caller: Caller, result: ScanResult, *, source: str) -> RecordSummary:
        """Store the findings of a scan for the caller's org (``integrity.review`` on it)."""
        self.authorize_record(caller)
        with self._db.session() as session:
            return self._store(
                session, caller.org_id, result, source,
                lambda row: self._record(caller, row, "open"),
            )  # fmt: skip

    def record_for_platform(
        self, org_id: str, result: ScanResult, *, source: str = "live-scan"
    ) -> RecordSummary:
        """Store the findings of a scan the platform ran itself (the scheduled live scan):
        the same rules as ``record``, audited without an actor (like ``open_for_platform``)."""
        with self._db.session() as session:
            return self._store(
                session, org_id, result, source,
                lambda row: _platform_record(org_id, row),
            )  # fmt: skip

    def _store(
        self,
        session: Session,
        org_id: str,
        result: ScanResult,
        source: str,
        audit: Callable[[IntegrityFinding], AuditRecord],
    ) -> RecordSummary:
        """Open each flagged person's findings, refresh pending ones, and leave out those a
        reviewer dismissed unless the evidence names something new."""
        opened = updated = suppressed = 0
        for person in result.users:
            for finding in person.findings if person.flagged else ():
                rows = session.scalars(
                    select(IntegrityFinding).where(
                        IntegrityFinding.org_id == org_id,
                        IntegrityFinding.subject == person.user,
                        IntegrityFinding.detector == finding.detector,
                    )
                ).all()
                pending = [r for r in rows if r.status in PENDING]
                if pending:
                    row = pending[0]
                    row.evidence = merge_scope(row.evidence, finding.evidence)
                    row.strength = finding.strength
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
                    id=new_id("fnd"), org_id=org_id, subject=person.user,
                    detector=finding.detector, status="open", strength=finding.strength,
                    score=person.score, evidence=finding.evidence, source=source[:200],
                )  # fmt: skip
                session.add(row)
                self._audit.append(session, audit(row))
                opened += 1
        return RecordSummary(opened=opened, updated=updated, suppressed=suppressed)

    def queue(self, caller: Caller, statuses: Iterable[str] = PENDING) -> list[FindingView]:
        """Findings in the given statuses: all of the org's for reviewers, else one's own."""
        wanted = _statuses(statuses)
        with self._db.session() as session:
            query = select(IntegrityFinding).where(
                IntegrityFinding.org_id == caller.org_id, IntegrityFinding.status.in_(wanted)
            )
            if not self._reads_org(caller):
                query = query.where(IntegrityFinding.subject == caller.user_id)
            rows = session.scalars(
                query.order_by(IntegrityFinding.score.desc(), IntegrityFinding.created_at)
            ).all()
            return [FindingView.of(r) for r in rows]

    def find(
        self,
        caller: Caller,
        *,
        statuses: Iterable[str] = PENDING,
        detector: str | None = None,
        subject: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> FindingPage:
        """One page of the review queue, highest score first.

        ``subject`` is a user handle or id (or an imported history's pseudonymous id).
        Without it a reviewer sees the org's findings and anyone else their own; naming
        someone else needs ``integrity.read`` on that person.
        """
        wanted = _statuses(statuses)
        if not 1 <= limit <= MAX_PAGE:
            raise UserError(f"limit must be 1..{MAX_PAGE}, not {limit}")
        if offset < 0:
            raise UserError("offset must be >= 0")
        with self._db.session() as session:
            conds = [
                IntegrityFinding.org_id == caller.org_id, IntegrityFinding.status.in_(wanted),
            ]  # fmt: skip
            if subject is not None and subject.strip():
                subject_id = self._subject_id(session, caller, subject.strip())
                self._access.require(
                    caller, READ, self._person(session, caller.org_id, subject_id),
                    message=f"findings about {subject.strip()}:",
                )  # fmt: skip
                conds.append(IntegrityFinding.subject == subject_id)
            elif not self._reads_org(caller):
                conds.append(IntegrityFinding.subject == caller.user_id)
            if detector:
                conds.append(IntegrityFinding.detector == detector)
            total = session.scalar(select(func.count()).where(*conds)) or 0
            rows = session.scalars(
                select(IntegrityFinding)
                .where(*conds)
                .order_by(
                    IntegrityFinding.score.desc(),
                    IntegrityFinding.created_at,
                    IntegrityFinding.id,
                )
                .limit(limit)
                .offset(offset)
            ).all()
            subjects = sorted({r.subject for r in rows})
            handles = _handles(session, caller.org_id, subjects)
            detectors: dict[str, list[str]] = {s: [] for s in subjects}
            if subjects:
                for subj, name in session.execute(
                    select(IntegrityFinding.subject, IntegrityFinding.detector)
                    .where(
                        IntegrityFinding.org_id == caller.org_id,
                        IntegrityFinding.subject.in_(subjects),
                        IntegrityFinding.status.in_(PENDING),
                    )
                    .order_by(IntegrityFinding.strength.desc())
                ):
                    detectors[subj].append(name)
            return FindingPage(
                findings=[FindingView.of(r, handles.get(r.subject)) for r in rows],
                total=total, limit=limit, offset=offset, detectors=detectors,
            )  # fmt: skip

    def get(self, caller: Caller, finding_id: str) -> FindingView:
        """One finding with its evidence; someone else's (without the right) is not found."""
        with self._db.session() as session:
            row = self._readable(session, caller, finding_id)
            handle = _handles(session, caller.org_id, [row.subject]).get(row.subject)
            return FindingView.of(row, handle)

    def about(self, caller: Caller, finding_id: str, *, limit: int = 50) -> list[FindingView]:
        """Every finding about the same person as ``finding_id``, strongest first (the
        detectors that contributed to their score, and what reviewers decided before)."""
        with self._db.session() as session:
            row = self._readable(session, caller, finding_id)
            rows = session.scalars(
                select(IntegrityFinding)
                .where(
                    IntegrityFinding.org_id == caller.org_id,
                    IntegrityFinding.subject == row.subject,
                )
                .order_by(IntegrityFinding.strength.desc(), IntegrityFinding.created_at)
                .limit(limit)
            ).all()
            return [FindingView.of(r) for r in rows]

    def history(self, caller: Caller, finding_id: str, *, limit: int = 100) -> list[HistoryEntry]:
        """The finding's moves as the audit log recorded them, oldest first."""
        with self._db.session() as session:
            row = self._readable(session, caller, finding_id)
            events = session.scalars(
                select(AuditEvent)
                .where(
                    AuditEvent.org_id == caller.org_id,
                    AuditEvent.action.in_(_LIFECYCLE),
                    AuditEvent.resource == f"finding:{row.id}",
                )
                .order_by(AuditEvent.seq)
                .limit(limit)
            ).all()
            actors = [e.actor_user_id for e in events if e.actor_user_id]
            handles = _handles(session, caller.org_id, actors)
            return [
                HistoryEntry(
                    seq=e.seq, ts=e.ts, status=e.action.rsplit(".", 1)[1],
                    actor_user_id=e.actor_user_id,
                    actor_handle=handles.get(e.actor_user_id or ""),
                    reason=(e.details or {}).get("reason"),
                )
                for e in events
            ]  # fmt: skip

    def may_review(self, caller: Caller, finding: FindingView) -> bool:
        """Whether the policy lets the caller move this finding (to offer the form)."""
        with self._db.session() as session:
            resource = self._person(session, caller.org_id, finding.subject)
        return self._access.authorize_api(caller, REVIEW, resource).allowed

    def move(
        self, caller: Caller, finding_id: str, action: str, *, reason: str = ""
    ) -> FindingView:
        """``start`` a review, ``confirm`` or ``dismiss`` (both need a reason)."""
        if action not in _MOVES:
            raise UserError(f"unknown action {action!r}: use start, confirm or dismiss")
        allowed, target = _MOVES[action]
        reason = reason.strip()
        if len(reason) > MAX_REASON:
            raise UserError(f"the reason is too long: at most {MAX_REASON} characters")
        with self._db.session() as session:
            row = self._readable(session, caller, finding_id, lock=True)
            self._access.require(
                caller, REVIEW, self._person(session, caller.org_id, row.subject),
                message=_REVIEWERS_ONLY + ", never about themselves",
            )  # fmt: skip
            if target in ("confirmed", "dismissed") and not reason:
                raise UserError(f"{action}: a reason is required")
            if row.status not in allowed:
                raise ConflictError(
                    f"finding {finding_id} is {row.status}: cannot {action} it "
                    f"(only a finding that is {' or '.join(sorted(allowed))})"
                )
            row.status, row.reviewed_by, row.updated_at = target, caller.user_id, utcnow()
            if reason:
                row.reason = reason
            self._audit.append(session, self._record(caller, row, target, reason=row.reason))
            handle = _handles(session, caller.org_id, [row.subject]).get(row.subject)
            return FindingView.of(row, handle)

    def open_for_platform(
        self,
        session: Session,
        *,
        org_id: str,
        subject: str,
        detector: str,
        evidence: dict[str, Any],
        source: str,
        strength: float = 1.0,
    ) -> str:
        """Open a finding the platform raises itself (no scan, no caller), in the caller's
        transaction, audited without an actor; its id. Deciding it is a reviewer's."""
        row = IntegrityFinding(
            id=new_id("fnd"), org_id=org_id, subject=subject, detector=detector,
            status="open", strength=strength, score=strength, evidence=evidence,
            source=source[:200],
        )  # fmt: skip
        session.add(row)
        self._audit.append(
            session,
            AuditRecord(
                action="integrity.finding.open", resource=f"finding:{row.id}", outcome="ok",
                org_id=org_id,
                details={"subject": subject, "detector": detector, "score": strength},
            ),
        )  # fmt: skip
        return row.id

    @staticmethod
    def annotate(session: Session, finding_id: str, **notes: Any) -> None:
        """Add what happened since to a finding's evidence; its status stays as it is."""
        row = session.get(IntegrityFinding, finding_id)
        if row is not None:
            row.evidence, row.updated_at = {**(row.evidence or {}), **notes}, utcnow()

    def withheld(self, org_id: str) -> frozenset[Withholding]:
        """The credit withheld in the org: what each open, under-review or confirmed
        finding concerns (``integrity.scope``; pending review unless confirmed). Dismissing
        a finding restores its part."""
        with self._db.session() as session:
            rows = session.execute(
                select(
                    IntegrityFinding.subject,
                    IntegrityFinding.detector,
                    IntegrityFinding.evidence,
                    IntegrityFinding.status,
                ).where(IntegrityFinding.org_id == org_id, IntegrityFinding.status.in_(WITHHOLDING))
            ).all()
        return frozenset(
            held
            for subject, detector, evidence, status in rows
            if (held := lenient_withholding(subject, detector, evidence, status)) is not None
        )

    def _reads_org(self, caller: Caller) -> bool:
        """Whether the caller may read every finding of their org (the whole queue)."""
        return self._access.authorize_api(caller, READ, ApiResource.org(caller.org_id)).allowed

    @staticmethod
    def _person(session: Session, org_id: str, subject: str) -> ApiResource:
        user = session.get(User, subject)
        if user is None or user.org_id != org_id:  # an imported history's pseudonym
            return ApiResource.person(id=subject, org_id=org_id)
        return ApiResource.person(id=user.id, org_id=org_id, team_id=user.team_id, role=user.role)

    @staticmethod
    def _subject_id(session: Session, caller: Caller, subject: str) -> str:
        """A handle of the org becomes its user id; anything else is taken as an id."""
        found = session.scalar(
            select(User.id).where(User.org_id == caller.org_id, User.handle == subject)
        )
        return found or subject

    def _readable(
        self, session: Session, caller: Caller, finding_id: str, *, lock: bool = False
    ) -> IntegrityFinding:
        row = session.get(IntegrityFinding, finding_id, with_for_update=lock)
        if row is None or row.org_id != caller.org_id:
            raise NotFoundError(f"no finding {finding_id!r}")
        resource = self._person(session, caller.org_id, row.subject)
        if not self._access.authorize_api(caller, READ, resource).allowed:
            # Someone else's finding: its existence is not the caller's business either.
            raise NotFoundError(f"no finding {finding_id!r}")
        return row

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


def _platform_record(org_id: str, row: IntegrityFinding) -> AuditRecord:
    return AuditRecord(
        action="integrity.finding.open", resource=f"finding:{row.id}", outcome="ok",
        org_id=org_id,
        details={
            "subject": row.subject, "detector": row.detector, "score": row.score,
            "source": row.source,
        },
    )  # fmt: skip


def _statuses(statuses: Iterable[str]) -> list[str]:
    wanted = list(statuses)
    bad = [s for s in wanted if s not in STATUSES]
    if bad:
        raise UserError(f"unknown status {bad[0]!r}: use {', '.join(STATUSES)}")
    return wanted


def _handles(session: Session, org_id: str, ids: Iterable[str]) -> dict[str, str]:
    """User handles of the ids that are people of the org (bounded by the caller's page)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = session.execute(
        select(User.id, User.handle).where(User.org_id == org_id, User.id.in_(wanted))
    )
    return {user_id: handle for user_id, handle in rows}
