"""``/v1/budgets`` (budgets and rate limits), ``/v1/usage/reprice``, and ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, StrictBool

from meshclaw.api.deps import Authed, PlatformDep, Timestamp
from meshclaw.clock import as_utc
from meshclaw.errors import NotFoundError, PermissionDenied
from meshclaw.metering.budgets import BudgetInfo
from meshclaw.metering.reprice import RepriceResult, reprice

router = APIRouter(tags=["metering"])


class BudgetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: str
    """org, team, user or agent."""
    name: str
    """The team name, user handle or agent name (ignored for ``org``)."""
    metric: str
    """cost (USD), tokens or calls."""
    period: str
    """minute, hour, day, week or month."""
    hard_cap: str | None = None
    soft_cap: str | None = None


class RepriceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: Timestamp | None = None
    until: Timestamp | None = None
    dry_run: StrictBool = False


@router.get("/v1/budgets")
def list_budgets(platform: PlatformDep, who: Authed) -> list[BudgetInfo]:
    """Budgets the caller manages or that apply to them, with the current window's state."""
    return platform.budgets.visible(who)


@router.put("/v1/budgets")
def set_budget(body: BudgetIn, platform: PlatformDep, who: Authed) -> BudgetInfo:
    """Create or replace the budget of (scope, name, metric, period). Audited."""
    return platform.budgets.set(who, **body.model_dump())


@router.delete("/v1/budgets/{budget_id}", status_code=204)
def delete_budget(budget_id: str, platform: PlatformDep, who: Authed) -> Response:
    platform.budgets.delete(who, budget_id)
    return Response(status_code=204)


@router.post("/v1/usage/reprice")
def reprice_usage(body: RepriceIn, platform: PlatformDep, who: Authed) -> RepriceResult:
    """Re-price history with the current price table (platform admins; audited)."""
    return reprice(
        platform.db,
        platform.audit,
        platform.prices,
        who,
        since=as_utc(body.since) if body.since else None,
        until=as_utc(body.until) if body.until else None,
        dry_run=body.dry_run,
    )


@router.get("/metrics", include_in_schema=False)
def metrics(platform: PlatformDep, who: Authed) -> Response:
    """Prometheus text format (platform admins and auditors; scrape with a bearer token)."""
    if who.role not in ("platform_admin", "auditor"):
        raise PermissionDenied("metrics are for platform admins and auditors")
    registry = platform.telemetry.registry
    if registry is None:
        raise NotFoundError("metrics are switched off (telemetry.metrics = false)")
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
