"""Tables of the metering capability: budgets and rate limits, their live counters, and
the daily usage roll-up."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from meshclaw.clock import utcnow
from meshclaw.store.models import Base


class Budget(Base):
    """A cap on what one org, team, user or agent may spend per period.

    ``metric`` is what is counted: ``cost`` (nano-dollars), ``tokens`` or ``calls`` (a
    rate limit when the period is a ``minute`` or an ``hour``). The hard cap refuses a
    model call before it is made; crossing the soft cap writes a ``budget.soft_cap``
    audit event once per period.
    """

    __tablename__ = "budgets"
    __table_args__ = (UniqueConstraint("org_id", "scope", "scope_id", "metric", "period"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    scope: Mapped[str] = mapped_column(String(10))
    """org, team, user or agent."""
    scope_id: Mapped[str] = mapped_column(String(40))
    """The org, team, user or agent id."""
    metric: Mapped[str] = mapped_column(String(10))
    """cost, tokens or calls."""
    period: Mapped[str] = mapped_column(String(10))
    """minute, hour, day, week or month (UTC; weeks start on Monday)."""
    hard_cap: Mapped[int | None] = mapped_column(BigInteger)
    """In the metric's unit (nano-dollars for cost); None: no hard cap."""
    soft_cap: Mapped[int | None] = mapped_column(BigInteger)
    created_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class BudgetCounter(Base):
    """Spend within one budget's current window: settled plus reserved for calls in flight.

    Reservations make enforcement atomic under concurrency: a call may start only while
    ``spent + reserved`` is under the hard cap, and reserves its estimate in the same
    conditional ``UPDATE``; settling swaps the estimate for the actual spend.
    """

    __tablename__ = "budget_counters"
    __table_args__ = (
        UniqueConstraint("budget_id", "window_start"),
        Index("ix_budget_counters_window", "window_start"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    budget_id: Mapped[str] = mapped_column(ForeignKey("budgets.id", ondelete="CASCADE"))
    window_start: Mapped[datetime]
    spent: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved: Mapped[int] = mapped_column(BigInteger, default=0)
    soft_alerted: Mapped[bool] = mapped_column(Boolean, default=False)


class UsageDaily(Base):
    """Usage records of one closed UTC day summed per attribution, so reports over long
    ranges read a few rows per day instead of every call (``metering.rollup``).

    Derived data: rebuilt from ``usage_records`` whenever its day goes stale, so it has
    no foreign keys of its own.
    """

    __tablename__ = "usage_daily"
    __table_args__ = (Index("ix_usage_daily_org_day", "org_id", "day"),)
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    org_id: Mapped[str] = mapped_column(String(40))
    day: Mapped[date] = mapped_column(Date)
    """The UTC day of the records' ``created_at``."""
    team_id: Mapped[str | None] = mapped_column(String(40))
    user_id: Mapped[str] = mapped_column(String(40))
    agent_id: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(10))
    provider: Mapped[str | None] = mapped_column(String(100))
    model: Mapped[str | None] = mapped_column(String(200))
    calls: Mapped[int] = mapped_column(BigInteger)
    """Usage records summed into this row."""
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cached_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger)
    cost_nano_usd: Mapped[int] = mapped_column(BigInteger)


class UsageDailyDay(Base):
    """Whether one org's day is rolled up in ``usage_daily`` and still matches its records.

    Database triggers on ``usage_records`` (migration ``usage_daily_0001``) set ``stale``
    when a record of a past day is inserted, changed or deleted, whoever writes it; the
    next read (or ``UsageRollup.roll_closed_days``) rolls the day up again.
    """

    __tablename__ = "usage_daily_days"
    org_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    stale: Mapped[bool] = mapped_column(Boolean)
