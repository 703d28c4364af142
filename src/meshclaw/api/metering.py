"""``/v1/budgets`` (budgets and rate limits), ``/v1/usage/reprice``, the org's own prices
(``POST /v1/prices``, ``/v1/prices/entries``, ``/v1/prices/export``) and ``/metrics``.

``GET /v1/prices`` (the table in force on a day) is the directory's (``api.directory``).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from meshclaw.api.deps import (
    SESSION_COOKIE,
    Authed,
    Day,
    Offset,
    PlatformDep,
    Timestamp,
    current_caller,
)
from meshclaw.clock import as_utc
from meshclaw.errors import NotFoundError
from meshclaw.metering.budgets import BudgetInfo
from meshclaw.metering.price_book import PriceEntryInfo
from meshclaw.metering.reprice import RepriceResult, reprice
from meshclaw.platform import Platform
from meshclaw.policy.api import ApiResource

router = APIRouter(tags=["metering"])

_bearer = HTTPBearer(auto_error=False)


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


class PriceIn(BaseModel):
    """A price from ``effective_from`` on, USD per million tokens as decimal text
    (``"2.50"``: exact, never a binary float)."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(max_length=100)
    model: str = Field(max_length=200)
    """A model name, or a glob like ``claude-*``."""
    input: str = Field(max_length=40)
    output: str = Field(max_length=40)
    cached_input: str | None = Field(default=None, max_length=40)
    """Default: the input price."""
    cache_write: str | None = Field(default=None, max_length=40)
    """Default: the input price."""
    effective_from: Day
    """First UTC day the price applies."""


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


@router.post("/v1/prices", tags=["metering"], status_code=201)
def add_price(body: PriceIn, platform: PlatformDep, who: Authed) -> PriceEntryInfo:
    """Add a price to the org's table from ``effective_from`` on (platform admins;
    audited). Nothing is replaced: the latest entry in force wins, older ones stay for
    history; ``POST /v1/usage/reprice`` re-prices calls already made."""
    return platform.price_book.add(who, body.model_dump())


@router.get("/v1/prices/entries", tags=["metering"])
def price_entries(
    platform: PlatformDep,
    who: Authed,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> list[PriceEntryInfo]:
    """The prices the org's admins added, newest first (ties by id), with who added them:
    ``offset`` skips, ``limit`` caps the page."""
    return platform.price_book.entries(who, limit=limit, offset=offset)


@router.get("/v1/prices/export", tags=["metering"], response_class=Response)
def export_prices(platform: PlatformDep, who: Authed) -> Response:
    """The org's whole price table as a price table file (YAML): the file's entries and
    the org's, history included; ``price_table`` can load it as it is."""
    table = platform.price_book.export(who)
    return Response(
        table.to_yaml(),
        media_type="application/yaml",
        headers={"Content-Disposition": 'attachment; filename="prices.yaml"'},
    )


@router.post("/v1/usage/reprice")
def reprice_usage(body: RepriceIn, platform: PlatformDep, who: Authed) -> RepriceResult:
    """Re-price history with the org's price table (platform admins; audited)."""
    return reprice(
        platform.db,
        platform.audit,
        platform.price_book,
        who,
        since=as_utc(body.since) if body.since else None,
        until=as_utc(body.until) if body.until else None,
        dry_run=body.dry_run,
        access=platform.access,
    )


@router.get("/metrics", include_in_schema=False)
def metrics(
    request: Request,
    platform: PlatformDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Response:
    """Prometheus text format: the caller's org's series (platform admins and auditors);
    every org's for the operator's scrape token (``telemetry.metrics_scrape_token_sha256``)."""
    org_id: str | None = None
    if not _operator_scrape(platform, credentials):
        who = current_caller(request, platform, credentials, request.cookies.get(SESSION_COOKIE))
        platform.access.require(
            who,
            "metrics.read",
            ApiResource.org(who.org_id),
            message="metrics are for platform admins and auditors:",
        )
        org_id = who.org_id
    text = platform.telemetry.exposition(org_id)
    if text is None:
        raise NotFoundError("metrics are switched off (telemetry.metrics = false)")
    return Response(text, media_type=CONTENT_TYPE_LATEST)


def _operator_scrape(platform: Platform, credentials: HTTPAuthorizationCredentials | None) -> bool:
    """Whether the bearer is the install's scrape token (compared as hashes, in constant
    time: the setting holds only the hash, so the config never holds the secret)."""
    expected = platform.settings.telemetry.metrics_scrape_token_sha256
    if expected is None or credentials is None:
        return False
    digest = hashlib.sha256(credentials.credentials.encode()).hexdigest()
    return hmac.compare_digest(digest, expected)
