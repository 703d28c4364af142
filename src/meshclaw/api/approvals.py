"""``/v1/approvals``: held tool calls waiting for a person, and their decisions.

The same operations as ``meshclaw approval ...``. The policy decides who may decide
(``approval.grant`` on the run: its owner, or a platform admin); every decision is
audited with who made it. Approving the last pending call of a run queues it again.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from meshclaw.accounts.service import Caller
from meshclaw.api.deps import Authed, Offset, PlatformDep
from meshclaw.api.schemas import ApprovalOut
from meshclaw.platform import Platform
from meshclaw.policy.approvals import ApprovalInfo

router = APIRouter(prefix="/v1/approvals", tags=["approvals"])


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=2000)


def _out(info: ApprovalInfo) -> ApprovalOut:
    return ApprovalOut.model_validate(info)


@router.get("")
def list_pending(
    platform: PlatformDep,
    caller: Authed,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> list[ApprovalOut]:
    """Pending approvals the caller may decide, oldest first: ``offset`` skips, ``limit``
    caps the page."""
    return [_out(a) for a in platform.approvals.pending(caller, limit=limit, offset=offset)]


@router.get("/{approval_id}")
def get_approval(approval_id: str, platform: PlatformDep, caller: Authed) -> ApprovalOut:
    return _out(platform.approvals.get(caller, approval_id))


def _decide(
    request: Request,
    platform: Platform,
    caller: Caller,
    approval_id: str,
    approve: bool,
    body: DecisionIn | None,
) -> ApprovalOut:
    info = platform.approvals.decide(
        caller, approval_id, approve=approve, note=body.note if body else None
    )
    # Deciding the last pending call queued the run again: hand it to a worker.
    dispatcher = getattr(request.app.state, "dispatcher", None)
    if dispatcher is not None and platform.runs.get(caller, info.run_id).status == "queued":
        dispatcher.dispatch(info.run_id)
    return _out(info)


@router.post("/{approval_id}/approve")
def approve(
    approval_id: str,
    request: Request,
    platform: PlatformDep,
    caller: Authed,
    body: DecisionIn | None = None,
) -> ApprovalOut:
    """Let exactly this call through, once."""
    return _decide(request, platform, caller, approval_id, True, body)


@router.post("/{approval_id}/deny")
def deny(
    approval_id: str,
    request: Request,
    platform: PlatformDep,
    caller: Authed,
    body: DecisionIn | None = None,
) -> ApprovalOut:
    """Refuse the call; the run goes on and the model is told who refused it."""
    return _decide(request, platform, caller, approval_id, False, body)
