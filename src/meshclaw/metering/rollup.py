"""Daily usage roll-up: reports read a few summed rows per closed day instead of every call.

``usage_daily`` holds, per org and closed UTC day, the usage records summed per
attribution (team, user, agent, kind, provider, model): every dimension the reports group
or filter by. ``UsageRollup.source`` is what reports select from: roll-up rows for the
whole closed days inside the requested range, unioned with raw records for the partial
days at its edges and for the days not yet closed, so every sum equals the sum of the raw
records.

Days are rolled lazily and idempotently: a read first rolls any closed day of its range
that is missing or stale (one ``INSERT ... SELECT ... GROUP BY`` per day, each in its own
short transaction); ``roll_closed_days`` does the same for every org, for a scheduler.
A day is *closed* once it ended ``SETTLE`` ago, so calls metered in a transaction that
began before midnight have committed before their day is summed.

Staleness is kept by the database, not by the writers: triggers on ``usage_records``
(migration ``usage_daily_0001``) mark a day stale in ``usage_daily_days`` whenever a
record dated before the current day is inserted (late arrivals), updated (re-pricing) or
deleted, whatever code writes it. Rolling a day first upserts its ``usage_daily_days``
row as fresh and only then reads the records: on PostgreSQL a concurrent late insert
either committed before the read (and is summed) or waits on that row and marks the day
stale again after the roll-up commits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import (
    Date,
    Select,
    Subquery,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from meshclaw.clock import utcnow
from meshclaw.metering.models import UsageDaily, UsageDailyDay
from meshclaw.store.db import Database
from meshclaw.store.models import Org, UsageRecord

SETTLE = timedelta(hours=1)
"""How long after midnight (UTC) a day counts as closed and may be rolled up."""
_DIMENSIONS = ("team_id", "user_id", "agent_id", "kind", "provider", "model")
_SUMS = (
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_nano_usd",
)
COLUMNS = ("day", *_DIMENSIONS, "calls", *_SUMS)
"""The columns of ``UsageRollup.source``: ``calls`` counts usage records."""


def record_day(db: Database) -> ColumnElement[date]:
    """The UTC day of a usage record, as a ``Date``, in the engine's own SQL."""
    if db.engine.dialect.name == "postgresql":
        return cast(func.timezone("UTC", UsageRecord.created_at), Date)
    # SQLite stores UTC datetimes as ISO text: the date is the first ten characters.
    return type_coerce(func.substr(UsageRecord.created_at, 1, 10), Date)


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


@dataclass(frozen=True, kw_only=True)
class _Plan:
    """How a range splits: rolled days ``[first, end)``, raw records outside them."""

    first: date
    end: date


class UsageRollup:
    """Rolls closed days up and builds the combined source reports select from."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._db = db
        self._clock = clock

    def closed_before(self) -> date:
        """The first day that is not closed yet (today, or yesterday just after midnight)."""
        return (self._clock() - SETTLE).astimezone(UTC).date()

    def source(
        self, org_id: str, *, since: datetime | None = None, until: datetime | None = None
    ) -> Subquery:
        """The org's usage in ``[since, until)`` with the columns ``COLUMNS``: summed rows
        for whole closed days (rolled up first when missing or stale), raw records (one
        call each) for the rest. Group and filter it like the records themselves."""
        plan = self._plan(org_id, since, until)
        parts: list[Select[tuple[object, ...]]] = []
        if plan is None:
            parts.append(self._raw(org_id, since, until))
        else:
            self.ensure(org_id, plan.first, plan.end)
            if since is not None and since < midnight(plan.first):
                parts.append(self._raw(org_id, since, midnight(plan.first)))
            parts.append(self._rolled(org_id, plan))
            parts.append(self._raw(org_id, midnight(plan.end), until))
        query = parts[0] if len(parts) == 1 else union_all(*parts)
        return query.subquery("usage")

    def ensure(self, org_id: str, first: date, end: date) -> int:
        """Roll up every day of ``[first, end)`` that is missing or stale; how many were."""
        end = min(end, self.closed_before())
        with self._db.session() as session:
            fresh = set(
                session.scalars(
                    select(UsageDailyDay.day).where(
                        UsageDailyDay.org_id == org_id,
                        UsageDailyDay.day >= first,
                        UsageDailyDay.day < end,
                        UsageDailyDay.stale.is_(False),
                    )
                )
            )
        todo = [first + timedelta(days=i) for i in range((end - first).days)]
        todo = [day for day in todo if day not in fresh]
        for day in todo:
            self._roll(org_id, day)
        return len(todo)

    def roll_closed_days(self) -> int:
        """Roll up every org's closed days that are missing or stale; how many were.
        Idempotent and safe beside reads doing the same: for a scheduler, e.g. hourly."""
        with self._db.session() as session:
            orgs = list(session.scalars(select(Org.id)))
        end, rolled = self.closed_before(), 0
        for org_id in orgs:
            oldest = self._oldest(org_id)
            if oldest is not None:
                rolled += self.ensure(org_id, oldest, end)
        return rolled

    # ---- helpers -----------------------------------------------------------------------

    def _oldest(self, org_id: str) -> date | None:
        """The day of the org's first usage record (an index lookup), if any."""
        with self._db.session() as session:
            oldest = session.scalar(
                select(func.min(UsageRecord.created_at)).where(UsageRecord.org_id == org_id)
            )
        return None if oldest is None else oldest.astimezone(UTC).date()

    def _plan(self, org_id: str, since: datetime | None, until: datetime | None) -> _Plan | None:
        oldest = self._oldest(org_id)
        if oldest is None:
            return None
        # No day before the org's first record needs rolling, however early ``since`` is.
        first = oldest
        if since is not None:
            since = since.astimezone(UTC)
            whole = since.date() if since == midnight(since.date()) else since.date() + timedelta(1)
            first = max(first, whole)
        end = self.closed_before()
        if until is not None:
            end = min(end, until.astimezone(UTC).date())
        return _Plan(first=first, end=end) if first < end else None

    def _raw(
        self, org_id: str, since: datetime | None, until: datetime | None
    ) -> Select[tuple[object, ...]]:
        query: Select[tuple[object, ...]] = select(
            record_day(self._db).label("day"),
            *(getattr(UsageRecord, name) for name in _DIMENSIONS),
            literal(1).label("calls"),
            *(getattr(UsageRecord, name) for name in _SUMS),
        ).where(UsageRecord.org_id == org_id)
        if since is not None:
            query = query.where(UsageRecord.created_at >= since)
        if until is not None:
            query = query.where(UsageRecord.created_at < until)
        return query

    def _rolled(self, org_id: str, plan: _Plan) -> Select[tuple[object, ...]]:
        return select(*(getattr(UsageDaily, name) for name in COLUMNS)).where(
            UsageDaily.org_id == org_id, UsageDaily.day >= plan.first, UsageDaily.day < plan.end
        )

    def _roll(self, org_id: str, day: date) -> None:
        """Replace ``day``'s roll-up with the sums of its records, in one transaction."""
        dimensions = [getattr(UsageRecord, name) for name in _DIMENSIONS]
        summed = (
            select(
                literal(org_id),
                literal(day, Date),
                *dimensions,
                func.count(),
                *(func.sum(getattr(UsageRecord, name)) for name in _SUMS),
            )
            .where(
                UsageRecord.org_id == org_id,
                UsageRecord.created_at >= midnight(day),
                UsageRecord.created_at < midnight(day + timedelta(days=1)),
            )
            .group_by(*dimensions)
        )
        dialect = postgresql if self._db.engine.dialect.name == "postgresql" else sqlite
        mark_fresh = (
            dialect.insert(UsageDailyDay)
            .values(org_id=org_id, day=day, stale=False)
            .on_conflict_do_update(index_elements=["org_id", "day"], set_={"stale": False})
        )
        with self._db.session() as session:
            # Fresh first, records second: a late write then either is summed below or
            # marks the day stale again after this commits (see the module docstring).
            session.execute(mark_fresh)
            session.execute(
                delete(UsageDaily).where(UsageDaily.org_id == org_id, UsageDaily.day == day)
            )
            session.execute(
                insert(UsageDaily).from_select(
                    ["org_id", "day", *_DIMENSIONS, "calls", *_SUMS], summed
                )
            )
