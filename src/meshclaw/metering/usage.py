"""Usage reports: tokens and cost per user, team, agent or model. Tokens are cost, never credit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Select, case, func, select
from sqlalchemy.sql.elements import SQLColumnExpression

from meshclaw.accounts.service import Caller
from meshclaw.metering.prices import from_nano
from meshclaw.store.db import Database
from meshclaw.store.models import Agent, Team, UsageRecord, User

GroupBy = Literal["user", "team", "agent", "model"]
ORG_WIDE_ROLES = ("platform_admin", "auditor")


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


def usage_report(
    db: Database,
    caller: Caller,
    *,
    group_by: GroupBy = "user",
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[UsageRow]:
    """Employees see their own usage, team admins their team's, org roles the org's."""
    key: SQLColumnExpression[str] = {
        "user": User.handle,
        "team": func.coalesce(Team.name, "(no team)"),
        "agent": Agent.name,
        "model": func.coalesce(UsageRecord.provider, "")
        + "/"
        + func.coalesce(UsageRecord.model, ""),
    }[group_by]
    is_model = UsageRecord.kind == "model"
    query: Select[*tuple[Any, ...]] = (
        select(
            key.label("key"),
            func.sum(case((is_model, 1), else_=0)),
            func.count(UsageRecord.id),
            func.sum(UsageRecord.input_tokens),
            func.sum(UsageRecord.output_tokens),
            func.sum(UsageRecord.cached_tokens),
            func.sum(UsageRecord.reasoning_tokens),
            func.sum(UsageRecord.cost_nano_usd),
        )
        .join(User, User.id == UsageRecord.user_id)
        .join(Agent, Agent.id == UsageRecord.agent_id)
        .outerjoin(Team, Team.id == UsageRecord.team_id)
        .where(UsageRecord.org_id == caller.org_id)
        .group_by(key)
        .order_by(key)
    )
    if group_by == "model":
        query = query.where(is_model)
    if caller.role == "team_admin":
        query = query.where(UsageRecord.team_id == caller.team_id)
    elif caller.role not in ORG_WIDE_ROLES:
        query = query.where(UsageRecord.user_id == caller.user_id)
    if since is not None:
        query = query.where(UsageRecord.created_at >= since)
    if until is not None:
        query = query.where(UsageRecord.created_at < until)
    rows = []
    with db.session() as session:
        for key_value, model_calls, calls, inp, out, cached, reasoning, cost in session.execute(
            query
        ):
            rows.append(
                UsageRow(
                    key=str(key_value),
                    model_calls=int(model_calls or 0),
                    tool_calls=int(calls) - int(model_calls or 0),
                    input_tokens=int(inp or 0),
                    output_tokens=int(out or 0),
                    cached_tokens=int(cached or 0),
                    reasoning_tokens=int(reasoning or 0),
                    cost_usd=from_nano(int(cost or 0)),
                )
            )
    return rows
