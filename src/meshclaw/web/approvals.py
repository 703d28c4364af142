"""Dashboard page: the approvals inbox.

Each held tool call shows exactly what would happen if approved (tool, action, the
arguments as they will be sent) and why the policy held it. Approving or denying goes
through ``platform.approvals.decide`` (Cedar's ``approval.grant``, audited); when that
queued the run again it is handed to a worker, as ``POST /v1/approvals/{id}/approve`` does.
Below the inbox: recent decisions on runs the viewer may decide. The inbox is paged
(``limit``, ``offset``: plain links, the ``_pager.html`` macros), oldest first with ties
broken by id, like ``GET /v1/approvals``.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from meshclaw.errors import ConflictError
from meshclaw.policy.approvals import ApprovalInfo
from meshclaw.web._pages import PREFIX, FormDep, Viewer, ViewerDep, query_int, render
from meshclaw.web._trace import pretty

router = APIRouter()

MAX_NOTE = 2000
RECENT_DECISIONS = 25
PAGE_SIZES = (10, 25, 50)
"""Held calls shown per inbox page (``limit``); each is a card with its arguments."""
_DONE = {
    "approved": "Approved: the call goes through once and the run continues.",
    "denied": "Denied: the run continues and the model is told who refused the call.",
}


@router.get("/approvals", response_class=HTMLResponse)
def inbox(
    request: Request,
    viewer: ViewerDep,
    done: str | None = None,
    limit: str | None = None,
    offset: str | None = None,
) -> HTMLResponse:
    size, start = query_int(limit, PAGE_SIZES[1], PAGE_SIZES), query_int(offset, 0)
    return _inbox(request, viewer, flash=_DONE.get(done or ""), size=size, start=start)


@router.post("/approvals/{approval_id}")
def decide(request: Request, viewer: ViewerDep, approval_id: str, fields: FormDep) -> Response:
    platform, caller = viewer.platform, viewer.caller
    decision = fields.get("decision")
    note = fields.get("note", "").replace("\r\n", "\n").strip() or None
    if decision not in ("approve", "deny"):
        return _inbox(request, viewer, error="Choose Approve or Deny.", status=422)
    if note is not None and len(note) > MAX_NOTE:
        message = f"The note is too long: at most {MAX_NOTE:,} characters."
        return _inbox(request, viewer, status=422, notes={approval_id: (note, message)})
    try:
        info = platform.approvals.decide(
            caller, approval_id, approve=decision == "approve", note=note
        )
    except ConflictError as exc:  # decided meanwhile, expired, or the run moved on
        return _inbox(request, viewer, error=str(exc).capitalize() + ".", status=409)
    dispatcher = getattr(request.app.state, "dispatcher", None)
    if dispatcher is not None and platform.runs.get(caller, info.run_id).status == "queued":
        dispatcher.dispatch(info.run_id)
    done = "approved" if decision == "approve" else "denied"
    return RedirectResponse(f"{PREFIX}/approvals?done={done}", status_code=303)


def _inbox(
    request: Request,
    viewer: Viewer,
    *,
    flash: str | None = None,
    error: str | None = None,
    status: int = 200,
    notes: dict[str, tuple[str, str]] | None = None,
    size: int = PAGE_SIZES[1],
    start: int = 0,
) -> HTMLResponse:
    # Each pending call is authorised one by one (the service cuts the page after the
    # policy), so the total is known only by reading them all: the inbox is short-lived.
    everything = viewer.platform.approvals.pending(viewer.caller)
    pending = everything[start : start + size]

    def page_url(new_offset: int) -> str:
        return f"{PREFIX}/approvals?{urlencode({'limit': size, 'offset': new_offset})}"

    return render(
        request,
        "approvals.html",
        viewer,
        status_code=status,
        pending=[(a, pretty(a.arguments)) for a in pending],
        total=len(everything),
        offset=start,
        next_url=page_url(start + size) if start + size < len(everything) else None,
        prev_url=page_url(max(0, start - size)) if start > 0 else None,
        decided=[(a, pretty(a.arguments)) for a in _decided(viewer)],
        notes=notes or {},
        max_note=MAX_NOTE,
        flash=flash,
        error=error,
    )


def _decided(viewer: Viewer) -> list[ApprovalInfo]:
    return viewer.platform.approvals.decided(viewer.caller, limit=RECENT_DECISIONS)
