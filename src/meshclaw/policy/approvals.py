"""Human approvals: a held tool call waits durably until a person decides.

When the policy answers *needs approval* (e.g. a write after untrusted content entered
the run), the gateway asks ``Approvals.resolve`` what to do with that exact call:

* no approval yet: one is created (``pending``), the step is recorded as
  ``waiting_approval`` and the run pauses (its status becomes ``waiting_approval``);
* ``approved``: the call goes through once, re-checked by the policy with
  ``context.approved`` (it must still be inside the agent's scope); the approval becomes
  ``used``. A retry of the same step (same arguments, after a crash) may use it again;
  no other call can;
* ``denied`` or ``expired``: the call is refused and the model is told why.

``decide`` is what an approver calls (CLI ``meshclaw approval``, API ``/approvals``):
the policy must allow ``approval.grant`` on the run (the owner, or a platform admin),
the approver sees the exact tool and arguments, and every decision is audited with
who made it. Deciding the last pending approval of a run queues it again, and the
executor continues it from its persisted steps.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.clock import utcnow
from meshclaw.errors import ConflictError, NotFoundError
from meshclaw.ids import new_id
from meshclaw.notify.outbox import enqueue
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.policy.authorizer import Decision
from meshclaw.policy.models import Approval
from meshclaw.store.db import Database
from meshclaw.store.models import Run, User

if TYPE_CHECKING:
    from meshclaw.accounts.service import Caller

DEFAULT_TTL = timedelta(hours=24)

Verdict = Literal["pending", "approved", "denied", "expired"]


def arguments_hash(arguments: dict[str, Any]) -> str:
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class HeldCall:
    """What the gateway knows about a call the policy held."""

    org_id: str
    run_id: str
    agent_id: str
    owner_id: str
    seq: int
    tool_call_id: str
    tool: str
    action: str
    arguments: dict[str, Any]
    decision: Decision


@dataclass(frozen=True, kw_only=True)
class Resolution:
    verdict: Verdict
    approval_id: str
    reason: str
    decided_by: str | None = None


@dataclass(frozen=True, kw_only=True)
class ApprovalInfo:
    id: str
    run_id: str
    agent_id: str
    owner_id: str
    tool: str
    """``connector.tool``."""
    action: str
    arguments: dict[str, Any]
    """The exact arguments the call will be made with if approved."""
    reason: str
    status: str
    requested_at: datetime
    expires_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    note: str | None


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=utcnow().tzinfo)


def _info(row: Approval) -> ApprovalInfo:
    return ApprovalInfo(
        id=row.id,
        run_id=row.run_id,
        agent_id=row.agent_id,
        owner_id=row.owner_id,
        tool=row.tool,
        action=row.action,
        arguments=row.arguments,
        reason=row.reason,
        status=row.status,
        requested_at=_aware(row.requested_at),
        expires_at=_aware(row.expires_at),
        decided_by=row.decided_by,
        decided_at=_aware(row.decided_at) if row.decided_at else None,
        note=row.note,
    )


class Approvals:
    def __init__(
        self, db: Database, audit: AuditSink, access: ApiAuthorizer, ttl: timedelta = DEFAULT_TTL
    ) -> None:
        self._db = db
        self._audit = audit
        self._access = access
        self._ttl = ttl

    # -- the gateway's side ----------------------------------------------------------------

    def resolve(self, held: HeldCall) -> Resolution:
        """What to do with a held call: create its approval, or apply the decision."""
        digest = arguments_hash(held.arguments)
        now = utcnow()
        with self._db.session() as session:
            row = session.scalar(
                select(Approval).where(
                    Approval.run_id == held.run_id, Approval.step_seq == held.seq
                )
            )
            if row is None:
                row = self._create(session, held, digest, now)
                return Resolution(verdict="pending", approval_id=row.id, reason=row.reason)
            if row.tool != held.tool or row.arguments_hash != digest:
                # Not the call that was approved: never let an approval travel.
                return Resolution(
                    verdict="denied",
                    approval_id=row.id,
                    reason=f"approval {row.id} was for another call",
                )
            if row.status == "pending" and _aware(row.expires_at) <= now:
                row.status = "expired"
                self._audit.append(session, self._record(row, "approval.expire", "expired", None))
            if row.status == "approved":
                if _aware(row.expires_at) <= now:
                    row.status = "expired"
                    return Resolution(
                        verdict="expired", approval_id=row.id, reason=f"approval {row.id} expired"
                    )
                row.status, row.used_at = "used", now
                return self._resolution(session, row, "approved")
            if row.status == "used":
                # The same step retried after a crash: same call, same idempotency key.
                return self._resolution(session, row, "approved")
            if row.status == "denied":
                return self._resolution(session, row, "denied")
            if row.status == "expired":
                return Resolution(
                    verdict="expired", approval_id=row.id, reason=f"approval {row.id} expired"
                )
            return Resolution(verdict="pending", approval_id=row.id, reason=row.reason)

    def _create(self, session: Any, held: HeldCall, digest: str, now: datetime) -> Approval:
        row = Approval(
            id=new_id("apr"),
            org_id=held.org_id,
            run_id=held.run_id,
            agent_id=held.agent_id,
            owner_id=held.owner_id,
            step_seq=held.seq,
            tool_call_id=held.tool_call_id,
            tool=held.tool,
            action=held.action,
            arguments=held.arguments,
            arguments_hash=digest,
            reason=held.decision.reason,
            status="pending",
            requested_at=now,
            expires_at=now + self._ttl,
        )
        session.add(row)
        self._audit.append(session, self._record(row, "approval.request", "pending", None))
        enqueue(
            session, org_id=row.org_id, kind="approval.requested", resource=f"approval:{row.id}",
            recipients=[row.owner_id],
            subject=f"Approval needed: {row.tool} in run {row.run_id}",
            body=(
                f"Your agent wants to call {row.tool} ({row.action}) and the policy holds it "
                f"for a person to decide: {row.reason}. Review the exact arguments and approve "
                f"or deny with `meshclaw approvals show {row.id}` or in the dashboard under "
                f"Approvals, before {row.expires_at:%Y-%m-%d %H:%M} UTC."
            ),
        )  # fmt: skip
        return row

    @staticmethod
    def _resolution(session: Session, row: Approval, verdict: Verdict) -> Resolution:
        # The reason lands in the trace and in the model's context: name the person.
        person = session.get(User, row.decided_by) if row.decided_by else None
        who = person.handle if person is not None else (row.decided_by or "unknown")
        note = f": {row.note}" if row.note else ""
        word = "approved" if verdict == "approved" else "denied"
        return Resolution(
            verdict=verdict,
            approval_id=row.id,
            reason=f"{word} by {who} (approval {row.id}){note}",
            decided_by=row.decided_by,
        )

    # -- the approver's side ---------------------------------------------------------------

    def pending(
        self, caller: Caller, *, limit: int | None = None, offset: int = 0
    ) -> list[ApprovalInfo]:
        """Pending approvals the caller may decide, oldest first; ``offset``/``limit``
        count the ones the caller may decide (each is authorised, so the page is cut after
        the policy)."""
        with self._db.session() as session:
            rows = session.execute(
                select(Approval, Run)
                .join(Run, Run.id == Approval.run_id)
                .where(
                    Approval.org_id == caller.org_id,
                    Approval.status == "pending",
                    Run.status == "waiting_approval",
                )
                .order_by(Approval.requested_at, Approval.id)
            ).all()
            decidable = (
                approval
                for approval, run in rows
                if self._access.authorize_api(caller, "approval.grant", _run_resource(run)).allowed
            )
            end = None if limit is None else offset + limit
            return [_info(a) for a in itertools.islice(decidable, offset, end)]

    def get(self, caller: Caller, approval_id: str) -> ApprovalInfo:
        with self._db.session() as session:
            row, _ = self._find(session, caller, approval_id)
            return _info(row)

    def decided(self, caller: Caller, *, limit: int = 25, scan: int = 200) -> list[ApprovalInfo]:
        """Recent decisions (approved, denied, expired) the caller may decide, newest first.

        Reads at most ``scan`` recent decisions of the org and keeps those whose run the
        policy lets the caller decide, like ``pending``.
        """
        with self._db.session() as session:
            rows = session.execute(
                select(Approval, Run)
                .join(Run, Run.id == Approval.run_id)
                .where(Approval.org_id == caller.org_id, Approval.status != "pending")
                .order_by(Approval.requested_at.desc(), Approval.id.desc())
                .limit(scan)
            ).all()
            allowed = (
                _info(approval)
                for approval, run in rows
                if self._access.authorize_api(caller, "approval.grant", _run_resource(run)).allowed
            )
            return list(itertools.islice(allowed, limit))

    def decide(
        self, caller: Caller, approval_id: str, *, approve: bool, note: str | None = None
    ) -> ApprovalInfo:
        """Approve or deny a pending call; queues the run once nothing else is pending."""
        now = utcnow()
        expired: ApprovalInfo | None = None
        with self._db.session() as session:
            row, run = self._find(session, caller, approval_id)
            self._access.require(
                caller,
                "approval.grant",
                _run_resource(run),
                message=f"you may not decide approvals of run {run.id}",
            )
            if row.status != "pending":
                raise ConflictError(f"approval {row.id} is already {row.status}")
            if run.status != "waiting_approval":
                raise ConflictError(f"run {run.id} is {run.status}, not waiting for approval")
            if _aware(row.expires_at) <= now:
                # Recorded (committed) before the caller hears it is too late.
                row.status = "expired"
                self._audit.append(session, self._record(row, "approval.expire", "expired", None))
                expired = _info(row)
        if expired is not None:
            raise ConflictError(
                f"approval {expired.id} expired at {expired.expires_at.isoformat()}"
            )
        with self._db.session() as session:
            # Conditional, so two approvers deciding at once cannot both win.
            won = session.execute(
                update(Approval)
                .where(Approval.id == approval_id, Approval.status == "pending")
                .values(
                    status="approved" if approve else "denied",
                    decided_by=caller.user_id,
                    decided_at=now,
                    note=note,
                )
                .execution_options(synchronize_session=False)
            )
            if not won.rowcount:  # type: ignore[attr-defined]
                raise ConflictError(f"approval {approval_id} was decided by someone else")
            row, run = self._find(session, caller, approval_id)
            action = "approval.grant" if approve else "approval.deny"
            self._audit.append(session, self._record(row, action, row.status, caller.user_id))
            still_pending = session.scalar(
                select(Approval.id).where(
                    Approval.run_id == run.id, Approval.status == "pending", Approval.id != row.id
                )
            )
            if still_pending is None:
                session.execute(
                    update(Run)
                    .where(Run.id == run.id, Run.status == "waiting_approval")
                    .values(status="queued")
                )
            return _info(row)

    def approved_step(self, run_id: str, seq: int) -> bool:
        """Whether a person approved the call of step ``seq`` (for explanations)."""
        with self._db.session() as session:
            status = session.scalar(
                select(Approval.status).where(Approval.run_id == run_id, Approval.step_seq == seq)
            )
        return status in ("approved", "used")

    def expire_due(self) -> int:
        """Expire pending approvals past their deadline and queue their runs again, so
        each run goes on and its model hears the call expired. For a periodic sweeper."""
        now = utcnow()
        count = 0
        with self._db.session() as session:
            due = session.scalars(
                select(Approval).where(Approval.status == "pending", Approval.expires_at <= now)
            ).all()
            for row in due:
                row.status = "expired"
                self._audit.append(session, self._record(row, "approval.expire", "expired", None))
                count += 1
            session.flush()
            for run_id in {row.run_id for row in due}:
                pending = session.scalar(
                    select(Approval.id).where(
                        Approval.run_id == run_id, Approval.status == "pending"
                    )
                )
                if pending is None:
                    session.execute(
                        update(Run)
                        .where(Run.id == run_id, Run.status == "waiting_approval")
                        .values(status="queued")
                    )
        return count

    def _find(self, session: Any, caller: Caller, approval_id: str) -> tuple[Approval, Run]:
        row = session.get(Approval, approval_id)
        if row is None or row.org_id != caller.org_id:
            raise NotFoundError(f"no approval {approval_id!r}")
        run = session.get(Run, row.run_id)
        assert run is not None
        # Visible to whoever may decide it or may read its run; to nobody else.
        resource = _run_resource(run)
        visible = self._access.authorize_api(caller, "approval.grant", resource).allowed
        if not visible and not self._access.authorize_api(caller, "run.read", resource).allowed:
            raise NotFoundError(f"no approval {approval_id!r}")
        return row, run

    @staticmethod
    def _record(row: Approval, action: str, outcome: str, actor: str | None) -> AuditRecord:
        return AuditRecord(
            action=action,
            resource=f"approval:{row.id}",
            outcome=outcome,
            org_id=row.org_id,
            actor_user_id=actor,
            actor_agent_id=row.agent_id,
            details={
                "run_id": row.run_id,
                "step": row.step_seq,
                "tool": row.tool,
                "arguments_hash": row.arguments_hash,
                "reason": row.reason,
                **({"note": row.note} if row.note else {}),
            },
        )


def _run_resource(run: Run) -> ApiResource:
    return ApiResource.run(
        id=run.id,
        org_id=run.org_id,
        owner_id=run.user_id,
        agent_id=run.agent_id,
        started_by=run.started_by,
        team_id=run.team_id,
    )


__all__ = [
    "DEFAULT_TTL",
    "ApprovalInfo",
    "Approvals",
    "HeldCall",
    "Resolution",
    "arguments_hash",
]
