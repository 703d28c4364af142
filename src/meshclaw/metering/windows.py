"""Budget vocabulary and windows: what a budget limits, over which window, and how much.

A budget caps one metric (``cost`` in nano-dollars, ``tokens``, or model ``calls``) of one
scope (``org``, ``team``, ``user`` or ``agent``) per window of a period. Windows are UTC
and calendar-aligned (weeks start on Monday); what a scope spent in a window is read
from the usage records (``spent_in_window``), which is where a budget's counter starts
(``metering.limits``) and what ``meshclaw budget`` and the metrics report.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from meshclaw.metering.prices import from_nano
from meshclaw.store.models import UsageRecord

Period = Literal["minute", "hour", "day", "week", "month"]
Metric = Literal["cost", "tokens", "calls"]
Scope = Literal["org", "team", "user", "agent"]
PERIODS: tuple[Period, ...] = ("minute", "hour", "day", "week", "month")
METRICS: tuple[Metric, ...] = ("cost", "tokens", "calls")
SCOPES: tuple[Scope, ...] = ("org", "team", "user", "agent")
ADJECTIVES = {
    "minute": "per-minute",
    "hour": "hourly",
    "day": "daily",
    "week": "weekly",
    "month": "monthly",
}


def window_start(period: str, now: datetime) -> datetime:
    """Start of the UTC window of ``period`` containing ``now``."""
    now = now.astimezone(UTC)
    if period == "minute":
        return now.replace(second=0, microsecond=0)
    if period == "hour":
        return now.replace(minute=0, second=0, microsecond=0)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return day


def window_end(period: str, start: datetime) -> datetime:
    """The start of the window after the one of ``period`` that starts at ``start``."""
    if period == "minute":
        return start + timedelta(minutes=1)
    if period == "hour":
        return start + timedelta(hours=1)
    if period == "week":
        return start + timedelta(days=7)
    if period == "month":
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return start + timedelta(days=1)


def format_amount(metric: str, amount: int) -> str:
    if metric == "cost":
        return f"${from_nano(amount).quantize(from_nano(1000)).normalize():f}"
    return f"{amount} {metric}"


def spent_in_window(
    session: Session | Connection, scope: str, scope_id: str, metric: str, window: datetime
) -> int:
    """What the usage records say a scope spent since ``window`` began."""
    column = {
        "org": UsageRecord.org_id,
        "team": UsageRecord.team_id,
        "user": UsageRecord.user_id,
        "agent": UsageRecord.agent_id,
    }[scope]
    amount: Any = {
        "cost": func.sum(UsageRecord.cost_nano_usd),
        "tokens": func.sum(UsageRecord.input_tokens + UsageRecord.output_tokens),
    }.get(metric, func.count(UsageRecord.id))
    query = select(func.coalesce(amount, 0)).where(
        column == scope_id, UsageRecord.kind == "model", UsageRecord.created_at >= window
    )
    return int(session.scalar(query) or 0)
