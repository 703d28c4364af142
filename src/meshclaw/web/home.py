"""The home page: my agents, my recent runs, my outcomes, my cost this period, approvals."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from meshclaw.metering.usage import period_start, usage_report
from meshclaw.web._pages import ViewerDep, render

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def home(request: Request, viewer: ViewerDep) -> HTMLResponse:
    platform, caller = viewer.platform, viewer.caller
    month_start = period_start(datetime.now(UTC).date(), "month")
    since = datetime(month_start.year, month_start.month, 1, tzinfo=UTC)
    own_usage = usage_report(
        platform.db,
        caller,
        group_by="user",
        since=since,
        user_id=caller.user_id,
        access=platform.access,
    )
    outcomes = platform.outcomes.list_outcomes(caller, limit=10)
    credited = sum(1 for o in outcomes if o.state == "credited")
    return render(
        request,
        "home.html",
        viewer,
        agents=[a for a in platform.agents.list_agents(caller) if a.owner_id == caller.user_id],
        runs=platform.runs.find(caller, limit=10, mine=True),
        outcomes=outcomes,
        credited=credited,
        to_review=platform.outcomes.list_outcomes(caller, to_review=True, limit=10),
        cost=sum((row.cost_usd for row in own_usage), Decimal(0)),
        month=month_start.strftime("%B %Y"),
        approvals=platform.approvals.pending(caller),
    )
