"""``/v1/outcomes`` (records, feedback, weights, cost per outcome) and ``/v1/feedback``.

``/v1/feedback/{token}`` is the one-click link in a mail or chat message: the signed token
is its authentication (no bearer token). ``GET`` only shows the outcome and a form (mail
scanners prefetch links, so a GET never records a verdict); ``POST`` records it.
"""

from __future__ import annotations

import html
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, Strict

from meshclaw.api.deps import Authed, Offset, PlatformDep
from meshclaw.errors import PermissionDenied
from meshclaw.outcomes.cost import CostRow
from meshclaw.outcomes.recheck import RecheckSummary
from meshclaw.outcomes.service import OutcomeInfo

router = APIRouter(tags=["outcomes"])

MAX_OUTCOMES = 1000
"""Most outcomes one listing returns."""

Verdict = Literal["accepted", "rejected", "reverted", "reopened", "rolled_back", "cancelled"]


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Verdict
    note: str | None = Field(default=None, max_length=2000)


class LinkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reviewer: str | None = Field(default=None, min_length=1, max_length=200)
    """Your own user id (the default): a link is only ever given to its reviewer."""


class LinkOut(BaseModel):
    token: str
    path: str


class WeightIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight: Annotated[float, Strict()] = Field(ge=0, le=100)


@router.get("/v1/outcomes")
def list_outcomes(
    platform: PlatformDep,
    who: Authed,
    to_review: bool = False,
    state: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_OUTCOMES)] = 100,
    offset: Offset = 0,
) -> list[OutcomeInfo]:
    """Your outcomes, or (``to_review``) those addressed to you that you can accept; newest
    first, ``offset`` skips, ``limit`` caps the page."""
    return platform.outcomes.list_outcomes(
        who, to_review=to_review, state=state, limit=limit, offset=offset
    )


@router.get("/v1/outcomes/{outcome_id}")
def get_outcome(outcome_id: str, platform: PlatformDep, who: Authed) -> OutcomeInfo:
    return platform.outcomes.get(who, outcome_id)


@router.post("/v1/outcomes/{outcome_id}/feedback")
def give_feedback(
    outcome_id: str, body: FeedbackIn, platform: PlatformDep, who: Authed
) -> OutcomeInfo:
    """Accept or reject an outcome you received. Your own acceptance never counts."""
    # Who may not read the outcome gets 404 like on GET, not a 403 that says it exists.
    platform.outcomes.get(who, outcome_id)
    return platform.outcomes.feedback(who, outcome_id, body.verdict, note=body.note, via="api")


@router.post("/v1/outcomes/{outcome_id}/link")
def make_link(outcome_id: str, body: LinkIn, platform: PlatformDep, who: Authed) -> LinkOut:
    """A signed one-click feedback link for your own verdict on an outcome you received.

    Links to other people are sent by the platform with its message, never handed out:
    whoever holds a link answers for its reviewer."""
    if body.reviewer not in (None, who.user_id):
        platform.outcomes.get(who, outcome_id)  # 404 before 403 for what the caller cannot see
        raise PermissionDenied("a feedback link is only given to the person it is for")
    token = platform.outcomes.link_for_self(who, outcome_id)
    return LinkOut(token=token, path=f"/v1/feedback/{token}")


@router.get("/v1/outcome-types")
def outcome_types(platform: PlatformDep, who: Authed) -> dict[str, float]:
    """Every outcome type's weight in your org (admin-set, else the shipped default)."""
    return platform.outcomes.weights(who.org_id)


@router.put("/v1/outcome-types/{type_name}")
def set_outcome_weight(
    type_name: str, body: WeightIn, platform: PlatformDep, who: Authed
) -> dict[str, float]:
    """Platform admins (``outcome.weight``): set a type's weight. Audited."""
    return platform.outcomes.set_weight(who, type_name, body.weight)


@router.post("/v1/outcomes/recheck")
async def recheck(platform: PlatformDep, who: Authed) -> RecheckSummary:
    """Platform admins (``outcome.recheck``): run their org's due durability re-checks now
    (the scheduler runs every org's on ``outcomes_recheck_seconds``)."""
    return await platform.recheck_outcomes(who)


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<meta name='robots' content='noindex'></head>"
        f"<body style='font-family:sans-serif;max-width:40em;margin:2em auto'>{body}</body></html>"
    )


@router.get("/v1/feedback/{token}", response_class=HTMLResponse)
def feedback_page(token: str, platform: PlatformDep) -> HTMLResponse:
    """The page a one-click link opens: what the outcome is, and accept / reject buttons."""
    outcome = platform.outcomes.check_link(token)
    what = html.escape(f"{outcome.type.replace('_', ' ')}: {outcome.ref}")
    return _page(
        "Was this useful?",
        f"<h1>Was this useful?</h1><p>{what}</p>"
        "<form method='post' action='?verdict=accepted'><button>Yes, accept</button></form>"
        "<form method='post' action='?verdict=rejected'><button>No, reject</button></form>",
    )


@router.post("/v1/feedback/{token}", response_class=HTMLResponse)
def feedback_submit(
    token: str, verdict: Literal["accepted", "rejected"], platform: PlatformDep
) -> HTMLResponse:
    """Record the verdict chosen on the page (a query parameter: no form parsing needed)."""
    platform.outcomes.feedback_by_link(token, verdict)
    return _page("Thank you", f"<h1>Thank you</h1><p>Recorded: {html.escape(verdict)}.</p>")


@router.get("/v1/outcomes-cost")
def cost_per_outcome(
    platform: PlatformDep, who: Authed, by: Literal["agent", "user", "team"] = "agent"
) -> list[CostRow]:
    """Spend per accepted, durable outcome. Employees see their own; team admins their team;
    platform admins and auditors the org (teams smaller than k are left out)."""
    return platform.analytics.cost_per_outcome(who, by=by)
