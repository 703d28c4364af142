"""Usage & outcomes: cost, accepted outcomes and cost per outcome over time; one outcome.

``/ui/insights`` charts the series of ``analytics.series`` for a scope the viewer may
see (me, a team, the org) and a period (day, week, month); the numbers are also in a
table; below, the viewer's own outcomes, newest first, paged (``limit``, ``offset``)
like ``GET /v1/outcomes``. ``/ui/insights/outcomes/{id}`` shows one outcome: its
evidence check, who received it, the durability re-check and every verdict, and lets a
beneficiary accept or reject it. The services decide who sees and who may judge what;
a refusal is their message.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from meshclaw import dashboard_paths
from meshclaw.analytics.boards import handles
from meshclaw.analytics.series import PERIODS, UsageSeries
from meshclaw.dashboard_paths import OUTCOME_PAGE
from meshclaw.errors import UserError
from meshclaw.outcomes.service import OutcomeInfo
from meshclaw.web import charts
from meshclaw.web._pages import PREFIX, FormDep, Viewer, ViewerDep, query_int, render

router = APIRouter()

NOTE_MAX = 2000
OUTCOME_PAGE_SIZES = (10, 25, 50)
VERDICT_LABELS = {"accepted": "Accept", "rejected": "Reject"}
STATE_REASONS = {
    "credited": "Someone who received it accepted it and nothing has undone it: it earns credit.",
    "unaccepted": "Nobody who received it has accepted it yet. The owner's own acceptance is "
    "kept as evidence but never counts.",
    "self": "It went only to its owner: outputs to oneself earn nothing.",
    "unverified": "The connector's evidence could not confirm it: unverified claims earn nothing.",
    "undone": "It was rejected, reverted, reopened, rolled back or cancelled: it lost its "
    "credit (the event is kept below).",
}
REVIEWERS = {
    "system": "the durability re-check",
    "silence": "no answer in time (accepted by default for this type)",
    "external": "someone outside the org",
}


@router.get("/insights", response_class=HTMLResponse)
def insights(
    request: Request,
    viewer: ViewerDep,
    scope: str = "me",
    period: str = "week",
    limit: str | None = None,
    offset: str | None = None,
) -> HTMLResponse:
    platform, caller = viewer.platform, viewer.caller
    reader = UsageSeries(platform.db, platform.access)
    series = reader.series(caller, scope, period)
    size = query_int(limit, OUTCOME_PAGE_SIZES[0], OUTCOME_PAGE_SIZES)
    start = query_int(offset, 0)
    mine = series.scope.kind == "me"
    outcomes = []
    if mine:
        # One more than a page says whether a next page exists, without counting them all.
        outcomes = platform.outcomes.list_outcomes(caller, limit=size + 1, offset=start)

    def page_url(new_offset: int) -> str:
        query = {"scope": scope, "period": period, "limit": size, "offset": new_offset}
        return f"{PREFIX}/insights?{urlencode(query)}#outcomes-heading"

    return render(
        request,
        "insights.html",
        viewer,
        series=series,
        scopes=reader.scopes(caller),
        periods=PERIODS,
        k=platform.analytics.settings(caller)["k"],
        figures={
            "cost": charts.cost_figure(series),
            "outcomes": charts.outcomes_figure(series),
            "cpo": charts.cost_per_outcome_figure(series),
        },
        period_label=charts.period_label(series.period),
        point_label=charts.point_label,
        outcomes=outcomes[:size],
        outcomes_offset=start,
        next_url=page_url(start + size) if len(outcomes) > size else None,
        prev_url=page_url(max(0, start - size)) if start > 0 and mine else None,
    )


@router.get(OUTCOME_PAGE, response_class=HTMLResponse)
def outcome_page(
    request: Request, viewer: ViewerDep, outcome_id: str, recorded: str | None = None
) -> HTMLResponse:
    outcome = viewer.platform.outcomes.get(viewer.caller, outcome_id)
    flash = None
    if recorded in VERDICT_LABELS:
        flash = f"Your verdict was recorded: {recorded}."
        if recorded == "accepted" and outcome.state != "credited":
            flash += f" It earns no credit: {STATE_REASONS.get(outcome.state, outcome.state)}"
    return _outcome(request, viewer, outcome, flash=flash)


@router.post(OUTCOME_PAGE + "/feedback", response_class=HTMLResponse)
def give_feedback(request: Request, viewer: ViewerDep, form: FormDep, outcome_id: str) -> Response:
    verdict = form.get("verdict", "")
    note = form.get("note", "").strip()
    errors: dict[str, str] = {}
    if verdict not in VERDICT_LABELS:
        errors["verdict"] = "Choose Accept or Reject."
    if len(note) > NOTE_MAX:
        errors["note"] = f"The note is {len(note)} characters long; at most {NOTE_MAX} fit."
    outcomes = viewer.platform.outcomes
    if not errors:
        try:
            outcomes.feedback(viewer.caller, outcome_id, verdict, note=note or None, via="web")
        except UserError as exc:  # the service refused: say why, beside the form
            outcome = outcomes.get(viewer.caller, outcome_id)
            return _outcome(
                request, viewer, outcome, status_code=exc.http_status, refusal=str(exc), note=note
            )
        target = f"{dashboard_paths.outcome_page(outcome_id)}?recorded={verdict}"
        return RedirectResponse(target, status_code=303)
    outcome = outcomes.get(viewer.caller, outcome_id)
    return _outcome(request, viewer, outcome, status_code=422, errors=errors, note=note)


def _outcome(
    request: Request,
    viewer: Viewer,
    outcome: OutcomeInfo,
    *,
    status_code: int = 200,
    flash: str | None = None,
    refusal: str | None = None,
    errors: dict[str, str] | None = None,
    note: str = "",
) -> HTMLResponse:
    caller = viewer.caller
    people = {outcome.owner, *outcome.beneficiaries, *(f.by for f in outcome.feedback)}
    known = handles(viewer.platform.db, caller.org_id, people)
    names = {who: _name(who, known) for who in people}
    received = caller.user_id in outcome.beneficiaries and caller.user_id != outcome.owner
    return render(
        request,
        "insights_outcome.html",
        viewer,
        status_code=status_code,
        outcome=outcome,
        names=names,
        reason=STATE_REASONS.get(outcome.state, ""),
        can_judge=received,
        verdicts=VERDICT_LABELS,
        flash=flash,
        refusal=refusal,
        errors=errors or {},
        note=note,
        note_max=NOTE_MAX,
    )


def _name(who: str, known: dict[str, str]) -> str:
    """A handle for a user id; plain words for the system, silence and outsiders."""
    if who in known:
        return known[who]
    if who.startswith("external:"):
        return f"{who.removeprefix('external:')} (outside the org)"
    return REVIEWERS.get(who, who)
