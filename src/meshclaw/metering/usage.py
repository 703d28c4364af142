"""Usage reports: tokens and cost per user, team, agent or model. Tokens are cost, never credit."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any, Literal

from sqlalchemy import Select, case, func, select
from sqlalchemy.sql.elements import SQLColumnExpression

from meshclaw.accounts.service import Caller
from meshclaw.metering.prices import from_nano
from meshclaw.metering.rollup import UsageRollup
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.policy.cedar import PolicyStore
from meshclaw.store.db import Database
from meshclaw.store.models import Agent, Team, User

GroupBy = Literal["user", "team", "agent", "model"]
Period = Literal["day", "week", "month"]
ORG_WIDE_ROLES = ("platform_admin", "auditor")
"""The roles the built-in policies give ``analytics.view_org`` (``policy.roles``), for
tests and docs only: decisions ask Cedar (``visibility``), so org policies apply."""
VIEW_ORG = "analytics.view_org"


@dataclass(frozen=True, kw_only=True)
class Visibility:
    """Whose usage and cost someone sees without a drill-down: the widest tier allowed."""

    kind: Literal["org", "team", "self"]
    team_id: str | None = None
    """The team, for ``team``."""


def visibility(access: ApiAuthorizer, caller: Caller) -> Visibility:
    """The org (``analytics.view_org``), else the caller's team (``analytics.view_team``
    on it), else their own numbers (``analytics.view_person`` on themselves, or
    ``PermissionDenied``). With the built-in policies: platform admins and auditors the
    org, team admins their team, everyone else themselves."""
    if access.authorize_api(caller, VIEW_ORG, ApiResource.org(caller.org_id)).allowed:
        return Visibility(kind="org")
    if caller.team_id is not None:
        team = ApiResource.team(id=caller.team_id, org_id=caller.org_id)
        if access.authorize_api(caller, "analytics.view_team", team).allowed:
            return Visibility(kind="team", team_id=caller.team_id)
    me = ApiResource.person(
        id=caller.user_id, org_id=caller.org_id, team_id=caller.team_id, role=caller.role
    )
    access.require(caller, "analytics.view_person", me, message="your own usage:")
    return Visibility(kind="self")


@cache
def builtin_access() -> ApiAuthorizer:
    """The built-in policies alone, for callers without the platform's authoriser."""
    return ApiAuthorizer(PolicyStore())


@dataclass(frozen=True, kw_only=True)
class UsageRow:
    key: str
    """The user handle, team name, agent name or ``provider/model``."""
    model_calls: int
    tool_calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal
    period: str | None = None
    """Start of the period (``YYYY-MM-DD``; weeks start on Monday, UTC) when reporting
    by period."""
    cache_write_tokens: int = 0


def period_start(day: date, period: Period) -> date:
    """The first day of the (UTC) day, ISO week or month containing ``day``."""
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return day


def usage_report(
    db: Database,
    caller: Caller,
    *,
    group_by: GroupBy = "user",
    since: datetime | None = None,
    until: datetime | None = None,
    period: Period | None = None,
    user_id: str | None = None,
    access: ApiAuthorizer | None = None,
) -> list[UsageRow]:
    """The usage ``caller`` may see (``visibility``): with the built-in policies,
    employees their own, team admins their team's, platform admins and auditors the org's.
    Pass the platform's ``access`` so the org's own policies apply (default: the
    built-ins alone).

    With ``period``, one row per key and period (days summed in SQL, then rolled up to
    weeks or months), ordered by period then key. ``user_id`` narrows the report to one
    person within what ``caller`` may see. Closed days are read from the daily roll-up
    (``metering.rollup``), the rest from the records: the sums are the records' sums.
    """
    reach = visibility(access or builtin_access(), caller)
    usage = UsageRollup(db).source(caller.org_id, since=since, until=until)
    key: SQLColumnExpression[str] = {
        "user": User.handle,
        "team": func.coalesce(Team.name, "(no team)"),
        "agent": Agent.name,
        "model": func.coalesce(usage.c.provider, "") + "/" + func.coalesce(usage.c.model, ""),
    }[group_by]
    is_model = usage.c.kind == "model"
    query: Select[*tuple[Any, ...]] = (
        select(
            key.label("key"),
            func.sum(usage.c.cache_write_tokens),
            func.sum(case((is_model, usage.c.calls), else_=0)),
            func.sum(usage.c.calls),
            func.sum(usage.c.input_tokens),
            func.sum(usage.c.output_tokens),
            func.sum(usage.c.cached_tokens),
            func.sum(usage.c.reasoning_tokens),
            func.sum(usage.c.cost_nano_usd),
        )
        .join(User, User.id == usage.c.user_id)
        .join(Agent, Agent.id == usage.c.agent_id)
        .outerjoin(Team, Team.id == usage.c.team_id)
        .group_by(key)
        .order_by(key)
    )
    if period is not None:
        query = query.add_columns(usage.c.day).group_by(usage.c.day)
    if group_by == "model":
        query = query.where(is_model)
    if reach.kind == "team":
        query = query.where(usage.c.team_id == reach.team_id)
    elif reach.kind == "self":
        query = query.where(usage.c.user_id == caller.user_id)
    if user_id is not None:
        query = query.where(usage.c.user_id == user_id)
    rows: dict[tuple[str, str | None], UsageRow] = {}
    with db.session() as session:
        for record in session.execute(query):
            key_value, cache_write, model_calls, calls, inp, out, cached, reasoning, cost = record[
                :9
            ]
            bucket = None
            if period is not None:
                bucket = period_start(date.fromisoformat(str(record[9])[:10]), period).isoformat()
            row = UsageRow(
                key=str(key_value),
                model_calls=int(model_calls or 0),
                tool_calls=int(calls) - int(model_calls or 0),
                input_tokens=int(inp or 0),
                output_tokens=int(out or 0),
                cached_tokens=int(cached or 0),
                reasoning_tokens=int(reasoning or 0),
                cost_usd=from_nano(int(cost or 0)),
                period=bucket,
                cache_write_tokens=int(cache_write or 0),
            )
            seen = rows.get((row.key, bucket))
            rows[(row.key, bucket)] = row if seen is None else _add(seen, row)
    return sorted(rows.values(), key=lambda r: (r.period or "", r.key))


def _add(a: UsageRow, b: UsageRow) -> UsageRow:
    return replace(
        a,
        model_calls=a.model_calls + b.model_calls,
        tool_calls=a.tool_calls + b.tool_calls,
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        cached_tokens=a.cached_tokens + b.cached_tokens,
        reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens,
        cache_write_tokens=a.cache_write_tokens + b.cache_write_tokens,
        cost_usd=a.cost_usd + b.cost_usd,
    )
