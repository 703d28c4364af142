"""Dashboard pages: runs, and one run's step-by-step trace, live while it runs.

The run page works without JavaScript (reload it to see new steps). With JavaScript,
``static/app.js`` follows ``GET /v1/runs/{id}/events`` (server-sent events) and reloads
the trace fragment (``/ui/runs/{id}/trace``) whenever a step or the status changes.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from meshclaw.errors import ConflictError
from meshclaw.web._pages import PREFIX, FormDep, ViewerDep, render
from meshclaw.web._trace import trace_steps

router = APIRouter()

PAGE_SIZE = 25
MAX_PAGE = 10_000
STATUSES = ("queued", "running", "waiting_approval", "succeeded", "failed", "cancelled")
_NOTES = {
    "cancel": "Cancellation requested: the run stops at its next step.",
    "finished": "The run had already finished; there was nothing to cancel.",
}


@router.get("/runs", response_class=HTMLResponse)
def run_list(
    request: Request,
    viewer: ViewerDep,
    agent: str | None = None,
    status: str | None = None,
    page: str | None = None,
) -> HTMLResponse:
    platform, caller = viewer.platform, viewer.caller
    error = None
    agent = (agent or "").strip() or None
    status = (status or "").strip() or None
    if status is not None and status not in STATUSES:
        error = f"Unknown status {status!r}: showing every status."
        status = None
    number = int(page) if page and page.isascii() and page.isdigit() else 1
    number = min(max(number, 1), MAX_PAGE)
    # One more than a page tells whether there is a next one, without counting them all.
    found = platform.runs.find(
        caller, agent=agent, status=status, limit=PAGE_SIZE + 1, offset=(number - 1) * PAGE_SIZE
    )
    query = urlencode({k: v for k, v in (("agent", agent), ("status", status)) if v})
    return render(
        request,
        "runs.html",
        viewer,
        runs=found[:PAGE_SIZE],
        agents=platform.agents.list_agents(caller),
        agent=agent,
        status=status,
        statuses=STATUSES,
        page=number,
        has_next=len(found) > PAGE_SIZE,
        query=query,
        error=error,
    )


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(
    request: Request, viewer: ViewerDep, run_id: str, note: str | None = None
) -> HTMLResponse:
    run = viewer.platform.runs.get(viewer.caller, run_id)
    steps = viewer.platform.runs.steps(viewer.caller, run_id)
    return render(
        request,
        "runs_view.html",
        viewer,
        run=run,
        steps=trace_steps(steps),
        flash=_NOTES.get(note or ""),
    )


@router.get("/runs/{run_id}/trace", response_class=HTMLResponse)
def run_trace(request: Request, viewer: ViewerDep, run_id: str) -> HTMLResponse:
    """The live part of the run page, as an HTML fragment for ``app.js``."""
    run = viewer.platform.runs.get(viewer.caller, run_id)
    steps = viewer.platform.runs.steps(viewer.caller, run_id)
    response = render(request, "runs_trace.html", viewer, run=run, steps=trace_steps(steps))
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/runs/{run_id}/cancel")
def cancel_run(request: Request, viewer: ViewerDep, run_id: str, _: FormDep) -> Response:
    try:
        viewer.platform.runs.cancel(viewer.caller, run_id)
    except ConflictError:
        note = "finished"
    else:
        note = "cancel"
    return RedirectResponse(f"{PREFIX}/runs/{run_id}?note={note}", status_code=303)
