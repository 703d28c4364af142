"""Org, team, user and agent budgets and rate limits, enforced atomically in the call path.

**Reserve, then settle.** Before a model call, one transaction takes every budget that
applies to the caller (org, team, user, agent) and, for each in a fixed order, runs
``UPDATE budget_counters SET reserved = reserved + :estimate WHERE id = :window AND
spent + reserved < :hard_cap``. If any update matches no row the call is refused and
the transaction rolls back; otherwise the estimate is held while the call is in flight.
Settling (in the transaction that stores the usage record) swaps the estimate for the
actual spend. Because a call can start only while settled plus in-flight spend is under
the cap, and in-flight calls count at their (upper) estimate, concurrent runs racing a
cap overshoot it by at most one call's cost — the last call admitted.

**Soft caps** write one ``budget.soft_cap`` audit event per budget window, in the
settling transaction. **The runaway-loop breaker** refuses the N+1st identical call
(same model request, or same tool with the same arguments) within one run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import Table, and_, bindparam, case, event, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.clock import utcnow
from meshclaw.errors import BudgetExceeded
from meshclaw.metering.budget import (
    BudgetScope,
    PlannedCall,
    Reservation,
    RunBudgetGuard,
    RunTotals,
)
from meshclaw.metering.models import Budget, BudgetCounter
from meshclaw.metering.prices import PriceTable, from_nano, to_nano
from meshclaw.notify.outbox import budget_watchers, enqueue
from meshclaw.providers._estimate import estimate_usage
from meshclaw.providers.base import ModelRequest, ToolCall, Usage
from meshclaw.spec.models import AgentSpec
from meshclaw.store.db import Database
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
NO_CAP = 2**62
"""Stands for "no hard cap" inside a single SQL statement."""
INPUT_RESERVE_FACTOR = 2
DEFAULT_OUTPUT_RESERVE = 4096
"""Output tokens reserved for a call whose spec sets no ``max_tokens``."""


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


def format_amount(metric: str, amount: int) -> str:
    if metric == "cost":
        return f"${from_nano(amount).quantize(from_nano(1000)).normalize():f}"
    return f"{amount} {metric}"


def model_fingerprint(request: ModelRequest) -> str:
    """What the model is asked, cheaply: within one run a conversation only grows, so
    its length and last message identify a request (hashing it all would cost
    milliseconds per call on long contexts)."""
    last = request.messages[-1] if request.messages else None
    body = {
        "model": request.model,
        "length": len(request.messages),
        "last": None
        if last is None
        else [last.role, last.content, [[c.name, c.arguments] for c in last.tool_calls]],
        "tools": sorted(t.name for t in request.tools),
    }
    return _digest("model", body)


def tool_fingerprint(call: ToolCall) -> str:
    return _digest("tool", [call.name, call.arguments])


def _digest(kind: str, body: Any) -> str:
    raw = json.dumps(body, sort_keys=True, default=str, separators=(",", ":"))
    return f"{kind}:{hashlib.sha256(raw.encode()).hexdigest()[:32]}"


def estimate_call(prices: PriceTable, provider: str, request: ModelRequest) -> tuple[int, int]:
    """An upper estimate of a model call's cost (nano-dollars) and tokens, to reserve.

    The offline estimate is about 4 characters per token; tokenisers differ (code, JSON
    and non-Latin text cost more), so the input side is doubled. Output is the spec's
    ``max_tokens``, else ``DEFAULT_OUTPUT_RESERVE``. Over-reserving only delays *other*
    calls near a cap while this one is in flight; under-reserving would let concurrent
    calls overshoot it.
    """
    prompt = INPUT_RESERVE_FACTOR * estimate_usage(request, None, ()).input_tokens
    limit = request.parameters.get("max_tokens")
    output = limit if isinstance(limit, int) and limit > 0 else DEFAULT_OUTPUT_RESERVE
    cost = prices.cost_usd(
        provider, request.model, Usage(input_tokens=prompt, output_tokens=output)
    )
    return (to_nano(cost) if cost is not None else 0), prompt + output


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


_C = cast(Table, BudgetCounter.__table__)
"""Counters are updated with Core statements: no ORM bookkeeping on the hot path."""
BUDGET_CACHE_SECONDS = 2.0
"""How long a process reuses the list of budgets that apply to a caller. Changes made
through this platform apply at once; changes made by another process within this time."""


# Statements are built once with bind parameters: building SQLAlchemy expressions per
# call costs more than running them on SQLite.
_P_ID, _P_AMOUNT, _P_CAP, _P_ACTUAL = "p_id", "p_amount", "p_cap", "p_actual"

_RESERVE_ONE = (
    update(_C)
    .where(_C.c.id == bindparam(_P_ID), _C.c.spent + _C.c.reserved < bindparam(_P_CAP))
    .values(reserved=_C.c.reserved + bindparam(_P_AMOUNT))
)
_SETTLE_ONE = (
    update(_C)
    .where(_C.c.id == bindparam(_P_ID))
    .values(reserved=_C.c.reserved - bindparam(_P_AMOUNT), spent=_C.c.spent + bindparam(_P_ACTUAL))
)
_RELEASE_ONE = (
    update(_C)
    .where(_C.c.id == bindparam(_P_ID))
    .values(reserved=_C.c.reserved - bindparam(_P_AMOUNT))
)


def _by_id(n: int, name: str) -> Any:
    """``CASE id WHEN :p_id0 THEN :name0 ... END`` over ``n`` counters."""
    return case(*((_C.c.id == bindparam(f"{_P_ID}{i}"), bindparam(f"{name}{i}")) for i in range(n)))


@functools.lru_cache(maxsize=32)
def _reserve_many(n: int) -> Any:
    ids: list[Any] = [bindparam(f"{_P_ID}{i}") for i in range(n)]
    return (
        update(_C)
        .where(_C.c.id.in_(ids), _C.c.spent + _C.c.reserved < _by_id(n, _P_CAP))
        .values(reserved=_C.c.reserved + _by_id(n, _P_AMOUNT))
    )


@functools.lru_cache(maxsize=32)
def _settle_many(n: int) -> Any:
    ids: list[Any] = [bindparam(f"{_P_ID}{i}") for i in range(n)]
    return (
        update(_C)
        .where(_C.c.id.in_(ids))
        .values(
            reserved=_C.c.reserved - _by_id(n, _P_AMOUNT),
            spent=_C.c.spent + _by_id(n, _P_ACTUAL),
        )
    )


_SETTLING = "meshclaw.metering.settling"
"""``Session.info`` key: reservations settled in the session's open transaction."""


@event.listens_for(Session, "after_commit")
def _settled(session: Session) -> None:
    session.info.pop(_SETTLING, None)


@event.listens_for(Session, "after_rollback")
def _not_settled(session: Session) -> None:
    for guard, reservation in session.info.pop(_SETTLING, ()):
        reservation.done = False
        guard.release(reservation)


@dataclass(frozen=True, kw_only=True)
class _BudgetRow:
    id: str
    scope: str
    scope_id: str
    metric: str
    period: str
    hard_cap: int | None
    soft_cap: int | None


@dataclass(frozen=True, kw_only=True)
class _Hold:
    counter_id: str
    budget_id: str
    scope: str
    scope_id: str
    metric: str
    period: str
    amount: int
    soft_cap: int | None
    window: datetime


def _amount(metric: str, estimate_nano: int, estimate_tokens: int) -> int:
    if metric == "cost":
        return estimate_nano
    if metric == "tokens":
        return estimate_tokens
    return 1


def _counter_id(budget_id: str, window: datetime) -> str:
    digest = hashlib.sha256(f"{budget_id}|{window.isoformat()}".encode()).hexdigest()
    return f"bct_{digest[:32]}"


class LimitGuard:
    """A ``BudgetGuard``: per-run caps, the runaway breaker, and stored budgets."""

    def __init__(
        self,
        db: Database,
        audit: AuditSink,
        *,
        max_identical_calls: int = 5,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._audit = audit
        self._run_caps = RunBudgetGuard()
        self._max_identical = max_identical_calls
        self._clock = clock
        self._cache: dict[tuple[str, str | None, str, str], tuple[float, list[_BudgetRow]]] = {}
        self._one_statement = db.engine.dialect.name == "sqlite"
        """SQLite: reserve and settle every counter with one statement each. PostgreSQL:
        one statement per counter, in a fixed order (row locks without deadlocks)."""
        self._known: set[str] = set()
        """Counter rows known to exist (skips a lookup per call; rows are never deleted
        while their budget exists)."""
        self._insert = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert

    # -- reserve ------------------------------------------------------------------------

    def reserve(self, call: PlannedCall, spec: AgentSpec, totals: RunTotals) -> Reservation:
        self._run_caps.check(kind=call.kind, spec=spec, totals=totals)
        self._breaker(call, totals)
        if call.kind != "model":
            return Reservation(call=call)
        if self._cached(call.scope) == []:
            return Reservation(call=call)  # the common case: nothing to check, no I/O
        # Core statements on a plain connection: this runs before every model call.
        with self._db.engine.begin() as conn:
            budgets = self._budgets(conn, call.scope)
            if not budgets:
                return Reservation(call=call)
            now = self._clock()
            estimate_nano, estimate_tokens = call.estimates()
            holds: list[_Hold] = []
            for budget in budgets:
                window = window_start(budget.period, now)
                hold = _Hold(
                    counter_id=_counter_id(budget.id, window),
                    budget_id=budget.id,
                    scope=budget.scope,
                    scope_id=budget.scope_id,
                    metric=budget.metric,
                    period=budget.period,
                    amount=_amount(budget.metric, estimate_nano, estimate_tokens),
                    soft_cap=budget.soft_cap,
                    window=window,
                )
                holds.append(hold)
            # A fixed lock order across transactions: no deadlocks between racing runs.
            holds.sort(key=lambda h: h.counter_id)
            for hold in holds:
                self._ensure_counter(conn, hold)
            by_id = {b.id: b for b in budgets}
            if self._one_statement and len(holds) > 1:
                self._reserve_at_once(conn, holds, by_id)
                return Reservation(call=call, holds=list(holds))
            for hold in holds:
                cap = by_id[hold.budget_id].hard_cap
                params = {
                    _P_ID: hold.counter_id,
                    _P_AMOUNT: hold.amount,
                    _P_CAP: NO_CAP if cap is None else cap,
                }
                if conn.execute(_RESERVE_ONE, params).rowcount == 0:
                    assert cap is not None
                    raise self._refusal(conn, hold, cap)
        return Reservation(call=call, holds=list(holds))

    def _reserve_at_once(
        self, conn: Connection, holds: list[_Hold], by_id: dict[str, _BudgetRow]
    ) -> None:
        """SQLite: one statement for every counter (the database has one writer at a
        time, so there is no lock order to keep); any counter at its cap refuses."""
        caps = {h.counter_id: by_id[h.budget_id].hard_cap for h in holds}
        params: dict[str, Any] = {}
        for i, hold in enumerate(holds):
            cap = caps[hold.counter_id]
            params[f"{_P_ID}{i}"] = hold.counter_id
            params[f"{_P_AMOUNT}{i}"] = hold.amount
            params[f"{_P_CAP}{i}"] = NO_CAP if cap is None else cap
        done = conn.execute(_reserve_many(len(holds)), params)
        if done.rowcount == len(holds):
            return
        for hold in holds:  # find the one at its cap; raising rolls everything back
            cap = caps[hold.counter_id]
            spent = conn.execute(
                select(_C.c.spent + _C.c.reserved).where(_C.c.id == hold.counter_id)
            ).scalar_one()
            if cap is not None and spent >= cap:
                raise self._refusal(conn, hold, cap)
        raise BudgetExceeded("budget counters changed while reserving; try again")

    def _breaker(self, call: PlannedCall, totals: RunTotals) -> None:
        seen = totals.fingerprints.get(call.fingerprint, 0)
        if self._max_identical and seen >= self._max_identical:
            raise BudgetExceeded(
                f"circuit breaker: the same {call.kind} call was already made {seen} times "
                "in this run (runaway loop?)"
            )
        totals.fingerprints[call.fingerprint] = seen + 1

    def forget(self) -> None:
        """Budgets changed: drop the cached lists."""
        self._cache.clear()

    def _cached(self, scope: BudgetScope) -> list[_BudgetRow] | None:
        key = (scope.org_id, scope.team_id, scope.user_id, scope.agent_id)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        return None

    def _budgets(self, conn: Connection, scope: BudgetScope) -> list[_BudgetRow]:
        if (cached := self._cached(scope)) is not None:
            return cached
        key = (scope.org_id, scope.team_id, scope.user_id, scope.agent_id)
        now = time.monotonic()
        mine = [
            Budget.scope == "org",
            and_(Budget.scope == "user", Budget.scope_id == scope.user_id),
            and_(Budget.scope == "agent", Budget.scope_id == scope.agent_id),
        ]
        if scope.team_id is not None:
            mine.append(and_(Budget.scope == "team", Budget.scope_id == scope.team_id))
        query = select(
            Budget.id,
            Budget.scope,
            Budget.scope_id,
            Budget.metric,
            Budget.period,
            Budget.hard_cap,
            Budget.soft_cap,
        ).where(Budget.org_id == scope.org_id, or_(*mine))
        rows = [
            _BudgetRow(
                id=b.id,
                scope=b.scope,
                scope_id=b.scope_id,
                metric=b.metric,
                period=b.period,
                hard_cap=b.hard_cap,
                soft_cap=b.soft_cap,
            )
            for b in conn.execute(query)
        ]
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + BUDGET_CACHE_SECONDS, rows)
        return rows

    def _ensure_counter(self, conn: Connection, hold: _Hold) -> None:
        """Create the window's counter on first use, starting from the usage already
        recorded in the window (a budget set mid-month counts the month so far)."""
        if hold.counter_id in self._known:
            return
        if conn.execute(select(_C.c.id).where(_C.c.id == hold.counter_id)).first() is None:
            values = {
                "id": hold.counter_id,
                "budget_id": hold.budget_id,
                "window_start": hold.window,
                "spent": spent_in_window(conn, hold.scope, hold.scope_id, hold.metric, hold.window),
                "reserved": 0,
                "soft_alerted": False,
            }
            statement = self._insert(BudgetCounter).values(**values).on_conflict_do_nothing()
            conn.execute(statement)
        if len(self._known) > 100_000:
            self._known.clear()
        self._known.add(hold.counter_id)

    @staticmethod
    def _refusal(conn: Connection, hold: _Hold, cap: int) -> BudgetExceeded:
        spent = conn.scalar(select(_C.c.spent).where(_C.c.id == hold.counter_id)) or 0
        return BudgetExceeded(
            f"{hold.scope} budget: the {ADJECTIVES[hold.period]} {hold.metric} hard cap "
            f"{format_amount(hold.metric, cap)} is reached "
            f"({format_amount(hold.metric, spent)} since {hold.window:%Y-%m-%d %H:%M} UTC)"
        )

    # -- settle / release ---------------------------------------------------------------

    def settle(
        self, session: Session, reservation: Reservation, *, cost_nano_usd: int, tokens: int
    ) -> None:
        if reservation.done:
            return
        reservation.done = True
        holds: list[_Hold] = reservation.holds
        if holds:
            self._release_if_rolled_back(session, reservation)
        actuals = {
            h.counter_id: {"cost": cost_nano_usd, "tokens": tokens}.get(h.metric, 1) for h in holds
        }
        at_once = self._one_statement and len(holds) > 1
        if at_once:
            params: dict[str, Any] = {}
            for i, hold in enumerate(holds):
                params[f"{_P_ID}{i}"] = hold.counter_id
                params[f"{_P_AMOUNT}{i}"] = hold.amount
                params[f"{_P_ACTUAL}{i}"] = actuals[hold.counter_id]
            session.execute(_settle_many(len(holds)), params)
        for hold in holds:
            if not at_once:
                session.execute(
                    _SETTLE_ONE,
                    {
                        _P_ID: hold.counter_id,
                        _P_AMOUNT: hold.amount,
                        _P_ACTUAL: actuals[hold.counter_id],
                    },
                )
            if hold.soft_cap is not None:
                self._check_soft_cap(session, reservation.call.scope, hold)

    def _release_if_rolled_back(self, session: Session, reservation: Reservation) -> None:
        """If the settling transaction does not commit, the estimate reserved earlier
        (committed on its own) is given back instead of staying held all window."""
        session.info.setdefault(_SETTLING, []).append((self, reservation))

    def _check_soft_cap(self, session: Session, scope: BudgetScope, hold: _Hold) -> None:
        crossed = session.execute(
            update(_C)
            .where(
                _C.c.id == hold.counter_id,
                _C.c.soft_alerted.is_(False),
                _C.c.spent >= hold.soft_cap,
            )
            .values(soft_alerted=True)
        )
        if crossed.rowcount:  # type: ignore[attr-defined]
            self._soft_alert(session, scope, hold)

    def _soft_alert(self, session: Session, scope: BudgetScope, hold: _Hold) -> None:
        assert hold.soft_cap is not None
        self._audit.append(
            session,
            AuditRecord(
                action="budget.soft_cap",
                resource=f"budget:{hold.budget_id}",
                outcome="alert",
                org_id=scope.org_id,
                actor_user_id=scope.user_id,
                actor_agent_id=scope.agent_id,
                details={
                    "scope": hold.scope,
                    "scope_id": hold.scope_id,
                    "metric": hold.metric,
                    "period": hold.period,
                    "window_start": hold.window.isoformat(),
                    "soft_cap": format_amount(hold.metric, hold.soft_cap),
                    "run_id": scope.run_id,
                },
            ),
        )
        cap = format_amount(hold.metric, hold.soft_cap)
        enqueue(
            session, org_id=scope.org_id, kind="budget.soft_cap",
            resource=f"budget:{hold.budget_id}",
            recipients=budget_watchers(session, scope.org_id, hold.scope, hold.scope_id),
            subject=f"Soft cap reached: {hold.scope} {hold.metric} budget ({hold.period})",
            body=(
                f"The {hold.period} {hold.metric} budget of {hold.scope} {hold.scope_id} "
                f"passed its soft cap of {cap} in the window starting "
                f"{hold.window:%Y-%m-%d %H:%M} UTC (run {scope.run_id}). Calls continue "
                "until the hard cap, if any."
            ),
        )  # fmt: skip

    def release(self, reservation: Reservation) -> None:
        if reservation.done:
            return
        reservation.done = True
        if not reservation.holds:
            return
        with self._db.engine.begin() as conn:
            for hold in reservation.holds:
                assert isinstance(hold, _Hold)
                conn.execute(_RELEASE_ONE, {_P_ID: hold.counter_id, _P_AMOUNT: hold.amount})
