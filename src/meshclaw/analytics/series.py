"""Usage and outcomes over time for one person, one team or the org, under the privacy tiers.

What the dashboard's "Usage & outcomes" charts show: per day, ISO week or month, the
cost spent on model and tool calls, the outcomes recorded, how many of them are credited
now (accepted by someone other than the owner, and not undone since) and the cost per
credited outcome. Tokens appear only as cost. Outcomes count in the period they were
recorded; cost in the period it was spent.

Scopes, and who may see each (the same tiers as ``analytics.privacy`` and
``metering.usage``):

- ``me``: everyone, their own numbers (``analytics.view_person`` on themselves).
- ``team:<id>``: whom Cedar allows ``analytics.view_team`` on the team (team admins
  their team, platform admins any), and only a team of at least ``k`` people.
- ``org``: whom Cedar allows ``analytics.view_org`` on the org, as for usage reports
  (platform admins and auditors), and only an org of at least ``k`` people.

Both tables are aggregated in SQL (one ``GROUP BY`` day each over an indexed window of at
most ``WINDOW[period]`` periods); cost reads closed days from the daily usage roll-up
(``metering.rollup``), so a page costs about the same with 100 k runs as with ten.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, get_args

from sqlalchemy import case, func, select
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement

from meshclaw.accounts.service import Caller
from meshclaw.analytics.privacy import VIEW_PERSON, VIEW_TEAM, authorize, k_of
from meshclaw.clock import utcnow
from meshclaw.errors import NotFoundError, PermissionDenied, UserError
from meshclaw.metering.prices import from_nano
from meshclaw.metering.rollup import UsageRollup
from meshclaw.metering.usage import VIEW_ORG, Period, period_start
from meshclaw.outcomes.models import Outcome
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.store.db import Database
from meshclaw.store.models import Org, Team, User

ScopeKind = Literal["me", "team", "org"]
PERIODS: tuple[Period, ...] = get_args(Period)
WINDOW: dict[Period, int] = {"day": 30, "week": 12, "month": 12}
"""How many periods a series covers, the current one included."""
_CENT = Decimal("0.000001")


@dataclass(frozen=True, kw_only=True)
class Scope:
    key: str
    """What a selector sends: ``me``, ``team:<team id>`` or ``org``."""
    kind: ScopeKind
    label: str
    team_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class Point:
    start: date
    """First day of the period (UTC; weeks start on Monday)."""
    cost_usd: Decimal
    outcomes: int
    """Outcomes recorded in the period, verified or not."""
    credited: int
    """Of those, the ones credited now (accepted by someone else, not undone)."""

    @property
    def cost_per_outcome(self) -> Decimal | None:
        return (self.cost_usd / self.credited).quantize(_CENT) if self.credited else None


@dataclass(frozen=True, kw_only=True)
class Series:
    scope: Scope
    period: Period
    points: list[Point]
    """Oldest first, one per period of the window (empty periods are zeros)."""

    @property
    def cost_usd(self) -> Decimal:
        return sum((p.cost_usd for p in self.points), Decimal(0))

    @property
    def outcomes(self) -> int:
        return sum(p.outcomes for p in self.points)

    @property
    def credited(self) -> int:
        return sum(p.credited for p in self.points)

    @property
    def cost_per_outcome(self) -> Decimal | None:
        return (self.cost_usd / self.credited).quantize(_CENT) if self.credited else None


def period_starts(today: date, period: Period, count: int) -> list[date]:
    """The first days of the ``count`` periods ending with the one containing ``today``."""
    current = period_start(today, period)
    if period == "day":
        return [current - timedelta(days=i) for i in reversed(range(count))]
    if period == "week":
        return [current - timedelta(weeks=i) for i in reversed(range(count))]
    months = current.year * 12 + current.month - 1
    return [date((m := months - i) // 12, m % 12 + 1, 1) for i in reversed(range(count))]


class UsageSeries:
    """Reads the series; every method takes the caller and applies their privacy tier."""

    def __init__(
        self, db: Database, access: ApiAuthorizer, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._db = db
        self._access = access
        self._clock = clock

    def scopes(self, caller: Caller) -> list[Scope]:
        """The scopes ``caller`` may look at: themselves first, their team, other teams, org."""
        k, org_size, teams = self._groups(caller.org_id)
        out = [self._me(caller)]
        for team_id, name, size in sorted(teams, key=lambda t: (t[0] != caller.team_id, t[1])):
            resource = _team(caller, team_id, name)
            if size >= k and self._access.authorize_api(caller, VIEW_TEAM, resource).allowed:
                out.append(_team_scope(team_id, name))
        if org_size >= k and self._sees_org(caller):
            out.append(Scope(key="org", kind="org", label="Whole organisation"))
        return out

    def scope(self, caller: Caller, key: str) -> Scope:
        """Resolve a selector's value; ``PermissionDenied`` when ``caller`` may not see it."""
        if key == "me":
            return self._me(caller)
        k, org_size, teams = self._groups(caller.org_id)
        if key == "org":
            self._access.require(
                caller,
                VIEW_ORG,
                ApiResource.org(caller.org_id),
                message="the org's numbers are for platform admins and auditors",
            )
            if org_size < k:
                raise PermissionDenied(_too_small("the org", org_size, k))
            return Scope(key="org", kind="org", label="Whole organisation")
        if key.startswith("team:"):
            team_id = key.removeprefix("team:")
            found = [(name, size) for tid, name, size in teams if tid == team_id]
            if not found:
                raise NotFoundError(f"no team {team_id}")
            ((name, size),) = found
            authorize(self._access, caller, VIEW_TEAM, _team(caller, team_id, name))
            if size < k:
                raise PermissionDenied(_too_small(f"team {name}", size, k))
            return _team_scope(team_id, name)
        raise UserError(f"unknown scope {key!r}: use me, team:<team id> or org")

    def series(self, caller: Caller, scope: str = "me", period: str = "week") -> Series:
        """Cost, outcomes and credited outcomes per period over the window, oldest first."""
        if period not in PERIODS:
            raise UserError(f"unknown period {period!r}: use day, week or month")
        per: Period = period  # narrowed by the check above
        resolved = self.scope(caller, scope)
        starts = period_starts(self._clock().astimezone(UTC).date(), per, WINDOW[per])
        since = datetime(starts[0].year, starts[0].month, starts[0].day, tzinfo=UTC)
        cost: dict[date, int] = dict.fromkeys(starts, 0)
        recorded: dict[date, int] = dict.fromkeys(starts, 0)
        credited: dict[date, int] = dict.fromkeys(starts, 0)
        usage = UsageRollup(self._db, clock=self._clock).source(caller.org_id, since=since)
        q_cost = select(usage.c.day, func.coalesce(func.sum(usage.c.cost_nano_usd), 0)).group_by(
            usage.c.day
        )
        outcome_day = self._day(Outcome.created_at)
        q_out = (
            select(
                outcome_day,
                func.count(),
                func.coalesce(func.sum(case((Outcome.state == "credited", 1), else_=0)), 0),
            )
            .where(Outcome.org_id == caller.org_id, Outcome.created_at >= since)
            .group_by(outcome_day)
        )
        if resolved.kind == "me":
            q_cost = q_cost.where(usage.c.user_id == caller.user_id)
            q_out = q_out.where(Outcome.user_id == caller.user_id)
        elif resolved.kind == "team":
            q_cost = q_cost.where(usage.c.team_id == resolved.team_id)
            q_out = q_out.where(Outcome.team_id == resolved.team_id)
        with self._db.session() as session:
            for day, nano in session.execute(q_cost):
                cost[_bucket(day, per)] = cost.get(_bucket(day, per), 0) + int(nano)
            for day, n, ok in session.execute(q_out):
                recorded[_bucket(day, per)] = recorded.get(_bucket(day, per), 0) + int(n)
                credited[_bucket(day, per)] = credited.get(_bucket(day, per), 0) + int(ok)
        points = [
            Point(start=s, cost_usd=from_nano(cost[s]), outcomes=recorded[s], credited=credited[s])
            for s in starts
        ]
        return Series(scope=resolved, period=per, points=points)

    # ---- helpers -----------------------------------------------------------------------

    def _sees_org(self, caller: Caller) -> bool:
        return self._access.authorize_api(caller, VIEW_ORG, ApiResource.org(caller.org_id)).allowed

    def _me(self, caller: Caller) -> Scope:
        resource = ApiResource.person(
            id=caller.user_id, org_id=caller.org_id, team_id=caller.team_id, role=caller.role
        )
        authorize(self._access, caller, VIEW_PERSON, resource)
        return Scope(key="me", kind="me", label=f"Me ({caller.handle})")

    def _groups(self, org_id: str) -> tuple[int, int, list[tuple[str, str, int]]]:
        """The org's k, its head count, and each team's (id, name, head count)."""
        with self._db.session() as session:
            org = session.get(Org, org_id)
            k = k_of(org.settings if org is not None else None)
            org_size = session.scalar(select(func.count(User.id)).where(User.org_id == org_id))
            sizes = (
                select(User.team_id, func.count(User.id).label("n"))
                .where(User.org_id == org_id, User.team_id.is_not(None))
                .group_by(User.team_id)
                .subquery()
            )
            teams = session.execute(
                select(Team.id, Team.name, func.coalesce(sizes.c.n, 0))
                .outerjoin(sizes, sizes.c.team_id == Team.id)
                .where(Team.org_id == org_id)
            ).all()
        return k, int(org_size or 0), [(t, n, int(size)) for t, n, size in teams]

    def _day(self, column: InstrumentedAttribute[Any]) -> ColumnElement[str]:
        """``YYYY-MM-DD`` (UTC) of a timestamp column, in the engine's own SQL."""
        if self._db.engine.dialect.name == "postgresql":
            return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
        return func.substr(column, 1, 10)  # SQLite keeps UTC timestamps as ISO text


def _team(caller: Caller, team_id: str, name: str) -> ApiResource:
    return ApiResource.team(id=team_id, org_id=caller.org_id, name=name)


def _team_scope(team_id: str, name: str) -> Scope:
    return Scope(key=f"team:{team_id}", kind="team", label=f"Team {name}", team_id=team_id)


def _too_small(what: str, size: int, k: int) -> str:
    return f"{what} has {size} people: groups smaller than {k} are not shown"


def _bucket(day: object, period: Period) -> date:
    return period_start(date.fromisoformat(str(day)[:10]), period)
