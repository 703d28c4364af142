"""Dashboard pages: runs, and one run's step-by-step trace, live while it runs.

The run page works without JavaScript (reload it to see new steps). With JavaScript,
``static/app.js`` follows ``GET /v1/runs/{id}/events`` (server-sent events) and reloads
the trace fragment (``/ui/runs/{id}/trace``) whenever a step or the status changes, and
once more at the stream's ``end``, when the run's outcomes are recorded: the fragment
shows "recording…" between the run's end and then, and the outcomes after.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from meshclaw.errors import ConflictError, NotFoundError
from meshclaw.outcomes.service import OutcomeInfo
from meshclaw.runtime.service import STATUSES, RunInfo
from meshclaw.web._pages import PREFIX, FormDep, Viewer, ViewerDep, render
from meshclaw.web._trace import trace_steps

router = APIRouter()

PAGE_SIZE = 25
MAX_PAGE = 10_000
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
    context = _run_context(viewer, run_id)
    return render(request, "runs_view.html", viewer, **context, flash=_NOTES.get(note or ""))


@router.get("/runs/{run_id}/trace", response_class=HTMLResponse)
def run_trace(request: Request, viewer: ViewerDep, run_id: str) -> HTMLResponse:
    """The live part of the run page, as an HTML fragment for ``app.js``."""
    response = render(request, "runs_trace.html", viewer, **_run_context(viewer, run_id))
    response.headers["Cache-Control"] = "no-store"
    return response


def _run_context(viewer: Viewer, run_id: str) -> dict[str, Any]:
    """What the run page and its live fragment both show: the run, its trace, its outcomes."""
    run = viewer.platform.runs.get(viewer.caller, run_id)
    steps = viewer.platform.runs.steps(viewer.caller, run_id)
    return {
        "run": run,
        "steps": trace_steps(steps),
        "outcomes": _outcomes(viewer, run),
    }


def _outcomes(viewer: Viewer, run: RunInfo) -> tuple[list[OutcomeInfo], int]:
    """The settled run's outcomes that the viewer may read (``outcome.read``: an admin
    who reads someone's run does not always read their outcomes), and how many others
    it has; none before it is settled."""
    if not run.settled:
        return [], 0
    found, hidden = [], 0
    for outcome_id in viewer.platform.runs.outcome_ids(viewer.caller, run.id):
        try:
            found.append(viewer.platform.outcomes.get(viewer.caller, outcome_id))
        except NotFoundError:
            hidden += 1
    return found, hidden


@router.post("/runs/{run_id}/cancel")
def cancel_run(request: Request, viewer: ViewerDep, run_id: str, _: FormDep) -> Response:
    try:
        viewer.platform.runs.cancel(viewer.caller, run_id)
    except ConflictError:
        note = "finished"
    else:
        note = "cancel"
    return RedirectResponse(f"{PREFIX}/runs/{run_id}?note={note}", status_code=303)
