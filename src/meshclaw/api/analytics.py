"""``/v1/analytics``: leaderboards (team by default), team and personal numbers, opt-in,
and "who looked at my numbers". Privacy tiers: ``analytics.privacy``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from meshclaw.analytics.service import ViewRecord
from meshclaw.api.deps import Authed, Offset, PlatformDep

router = APIRouter(tags=["analytics"])


class SettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: StrictInt | None = Field(default=None, ge=2, le=1000)
    """Smallest group shown (k-anonymity)."""
    individual_boards: StrictBool | None = None
    cutoff_weekday: StrictInt | None = Field(default=None, ge=0, le=6)
    cutoff_hour: StrictInt | None = Field(default=None, ge=0, le=23)


class OptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    opt_in: StrictBool


@router.get("/v1/analytics/leaderboard")
def leaderboard(
    platform: PlatformDep,
    who: Authed,
    by: Literal["team", "user"] = "team",
    top: Annotated[int | None, Query(ge=1, le=10_000)] = None,
) -> dict[str, Any]:
    """Ranked by accepted, durable outcome value (docs/outcomes.md). Teams smaller than k
    are left out; the individual board exists only if the org enabled it, and lists only
    people who opted in."""
    analytics = platform.analytics
    board = (
        analytics.team_board(who, top=top) if by == "team" else analytics.people_board(who, top=top)
    )
    return {
        "entries": [
            {"rank": e.rank, by: e.id, "score": e.score, "pending_review": e.pending}
            for e in board.entries
        ]
    }


@router.get("/v1/analytics/teams/{team_id}")
def team(team_id: str, platform: PlatformDep, who: Authed) -> dict[str, Any]:
    """A team's adoption, cost per outcome, acceptance and durability (k-anonymous)."""
    return platform.analytics.team_summary(who, team_id)


@router.get("/v1/analytics/people/{user_id}")
def person(
    user_id: str, platform: PlatformDep, who: Authed, reason: str | None = None
) -> dict[str, Any]:
    """Your own numbers; someone else's only as an audited drill-down with a ``reason``."""
    return platform.analytics.person(who, user_id, reason=reason)


@router.get("/v1/analytics/views")
def views(
    platform: PlatformDep,
    who: Authed,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> list[ViewRecord]:
    """Who looked at my numbers, when and why; newest first, ``offset`` skips."""
    return platform.analytics.views_of(who, limit=limit, offset=offset)


@router.put("/v1/analytics/opt-in")
def opt_in(body: OptIn, platform: PlatformDep, who: Authed) -> dict[str, bool]:
    """Appear (or not) on individual leaderboards where the org has them."""
    return {"opt_in": platform.analytics.opt_in(who, body.opt_in)}


@router.get("/v1/analytics/settings")
def get_settings(platform: PlatformDep, who: Authed) -> dict[str, Any]:
    """k, whether individual boards exist, and the weekly measurement cut-off."""
    return platform.analytics.settings(who)


@router.put("/v1/analytics/settings")
def put_settings(body: SettingsIn, platform: PlatformDep, who: Authed) -> dict[str, Any]:
    """Platform admins: change the org's analytics settings. Audited."""
    return platform.analytics.update_settings(who, **body.model_dump())
