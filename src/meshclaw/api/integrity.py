"""``/v1/integrity``: the review queue of integrity findings, as ``meshclaw integrity``.

Reviewers (the policy's ``integrity.review``: auditors and platform admins by default)
see the org's findings and move them open → under_review → confirmed | dismissed, with a
reason for the last two; everyone else sees only the findings about themselves, and
someone else's finding is "not found". A move that the finding's status does not allow is
a 409 that says why.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from meshclaw.api.deps import Authed, Offset, PlatformDep
from meshclaw.integrity.findings import (
    MAX_PAGE,
    MAX_REASON,
    MOVE_TO,
    PENDING,
    FindingView,
    HistoryEntry,
)

router = APIRouter(prefix="/v1/integrity", tags=["integrity"])

Status = Literal["open", "under_review", "confirmed", "dismissed"]
Reviewed = Literal["under_review", "confirmed", "dismissed"]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class FindingOut(_Out):
    id: str
    subject: str
    """The person concerned: a user id, or an imported history's pseudonymous id."""
    subject_handle: str | None
    detector: str
    status: Status
    strength: float
    """How sure this detector is, in [0, 1]."""
    score: float
    """The person's combined score in the scan that raised or last updated it."""
    source: str
    reason: str | None
    reviewed_by: str | None
    created_at: datetime
    updated_at: datetime


class FindingPageOut(BaseModel):
    findings: list[FindingOut]
    total: int
    limit: int
    offset: int
    next_offset: int | None
    detectors: dict[str, list[str]]
    """Per subject on the page: detectors of their findings open or under review."""


class HistoryOut(_Out):
    seq: int
    """The audit record's sequence number."""
    ts: datetime
    status: Status
    actor_user_id: str | None
    actor_handle: str | None
    reason: str | None


class FindingDetailOut(FindingOut):
    evidence: dict[str, Any]
    """Run and outcome ids, times, counts, similarity scores; never raw texts."""
    related: list[FindingOut]
    """Every finding about the same person (this one included), strongest first."""
    history: list[HistoryOut]


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Reviewed
    reason: str | None = Field(default=None, max_length=MAX_REASON)
    """Required to confirm or dismiss."""


def _out(view: FindingView) -> FindingOut:
    return FindingOut.model_validate(view)


@router.get("/findings")
def list_findings(
    platform: PlatformDep,
    who: Authed,
    status: Annotated[list[Status] | None, Query()] = None,
    detector: Annotated[str | None, Query(max_length=40)] = None,
    subject: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Offset = 0,
) -> FindingPageOut:
    """The queue, highest score first (default: open and under review). ``subject`` is a
    handle or id; ``status`` may repeat."""
    page = platform.findings.find(
        who,
        statuses=status or PENDING,
        detector=detector,
        subject=subject,
        limit=limit,
        offset=offset,
    )
    return FindingPageOut(
        findings=[_out(f) for f in page.findings],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
        next_offset=page.next_offset,
        detectors=page.detectors,
    )


def _detail(
    view: FindingView, related: list[FindingView], history: list[HistoryEntry]
) -> FindingDetailOut:
    return FindingDetailOut(
        **_out(view).model_dump(),
        evidence=view.evidence,
        related=[_out(r) for r in related],
        history=[HistoryOut.model_validate(h) for h in history],
    )


@router.get("/findings/{finding_id}")
def get_finding(finding_id: str, platform: PlatformDep, who: Authed) -> FindingDetailOut:
    """One finding with its evidence, the person's other findings, and its history."""
    view = platform.findings.get(who, finding_id)
    related = platform.findings.about(who, finding_id)
    return _detail(view, related, platform.findings.history(who, finding_id))


@router.post("/findings/{finding_id}/review")
def review_finding(
    finding_id: str, body: ReviewIn, platform: PlatformDep, who: Authed
) -> FindingDetailOut:
    """Start a review (``under_review``), ``confirmed`` or ``dismissed`` (with a reason).
    Audited; a move the current status does not allow is a 409."""
    platform.findings.get(who, finding_id)  # someone else's finding is not found first
    reason = (body.reason or "").strip()
    if body.status != "under_review" and not reason:
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "reason"),
                    "msg": f"a reason is required to mark a finding {body.status}",
                    "type": "missing",
                }
            ]
        )
    view = platform.findings.move(who, finding_id, MOVE_TO[body.status], reason=reason)
    related = platform.findings.about(who, finding_id)
    return _detail(view, related, platform.findings.history(who, finding_id))
