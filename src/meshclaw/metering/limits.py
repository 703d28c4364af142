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
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple, cast

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
from meshclaw.store.db import Database, Prepared
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
BUDGET_CACHE_SECONDS = 2.0
"""How long a process reuses the list of budgets that apply to a caller. Changes made
through this platform apply at once; changes made by another process within this time."""


# The counter writes of every model call, compiled once per dialect and run on the driver
# (``store.db.Prepared``): building, re-keying and binding a SQLAlchemy statement per call
# costs several times the write itself on SQLite.
_P_ID, _P_AMOUNT, _P_CAP, _P_ACTUAL, _P_SOFT = "p_id", "p_amount", "p_cap", "p_actual", "p_soft"

_RESERVE_ONE = Prepared(
    update(_C)
    .where(_C.c.id == bindparam(_P_ID), _C.c.spent + _C.c.reserved < bindparam(_P_CAP))
    .values(reserved=_C.c.reserved + bindparam(_P_AMOUNT)),
    (_P_ID, _P_AMOUNT, _P_CAP),
)
_SETTLE_ONE = Prepared(
    update(_C)
    .where(_C.c.id == bindparam(_P_ID))
    .values(reserved=_C.c.reserved - bindparam(_P_AMOUNT), spent=_C.c.spent + bindparam(_P_ACTUAL)),
    (_P_ID, _P_AMOUNT, _P_ACTUAL),
)
_RELEASE_ONE = Prepared(
    update(_C)
    .where(_C.c.id == bindparam(_P_ID))
    .values(reserved=_C.c.reserved - bindparam(_P_AMOUNT)),
    (_P_ID, _P_AMOUNT),
)
_SOFT_CROSSED = Prepared(
    update(_C)
    .where(
        _C.c.id == bindparam(_P_ID),
        _C.c.soft_alerted.is_(False),
        _C.c.spent >= bindparam(_P_SOFT),
    )
    .values(soft_alerted=True),
    (_P_ID, _P_SOFT),
)


def _by_id(n: int, name: str, id_column: Any = _C.c.id) -> Any:
    """``CASE id WHEN :p_id0 THEN :name0 ... END`` over ``n`` counters."""
    return case(
        *((id_column == bindparam(f"{_P_ID}{i}"), bindparam(f"{name}{i}")) for i in range(n))
    )


def _keys(n: int, *names: str) -> list[str]:
    return [f"{name}{i}" for i in range(n) for name in names]


@functools.lru_cache(maxsize=32)
def _reserve_many(n: int) -> Prepared:
    """All ``n`` counters or none: each is updated only if every one of them exists and
    is below its cap, so a refusal leaves nothing to undo in the caller's transaction
    (SQLite evaluates the uncorrelated count once, under the statement's write lock)."""
    ids: list[Any] = [bindparam(f"{_P_ID}{i}") for i in range(n)]
    other = _C.alias("other")
    below_cap = (
        select(func.count())
        .select_from(other)
        .where(
            other.c.id.in_(ids),
            other.c.spent + other.c.reserved < _by_id(n, _P_CAP, other.c.id),
        )
        .scalar_subquery()
    )
    statement = (
        update(_C)
        .where(_C.c.id.in_(ids), below_cap == n)
        .values(reserved=_C.c.reserved + _by_id(n, _P_AMOUNT))
    )
    return Prepared(statement, _keys(n, _P_ID, _P_AMOUNT, _P_CAP))


@functools.lru_cache(maxsize=32)
def _settle_many(n: int) -> Prepared:
    ids: list[Any] = [bindparam(f"{_P_ID}{i}") for i in range(n)]
    statement = (
        update(_C)
        .where(_C.c.id.in_(ids))
        .values(
            reserved=_C.c.reserved - _by_id(n, _P_AMOUNT),
            spent=_C.c.spent + _by_id(n, _P_ACTUAL),
        )
    )
    return Prepared(statement, _keys(n, _P_ID, _P_AMOUNT, _P_ACTUAL))


@functools.lru_cache(maxsize=32)
def _names(n: int, second: str, third: str) -> tuple[tuple[str, str, str], ...]:
    """Parameter names of counter ``i`` in the ``_many`` statements."""
    return tuple((f"{_P_ID}{i}", f"{second}{i}", f"{third}{i}") for i in range(n))


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
class _Slot:
    """One budget's counter in its current window: everything a hold needs but the
    amount, worked out once per window instead of on every call."""

    counter_id: str
    budget_id: str
    scope: str
    scope_id: str
    metric: str
    period: str
    cap: int
    """The hard cap, or ``NO_CAP``."""
    soft_cap: int | None
    window: datetime


class _Hold(NamedTuple):
    """What one call holds on one counter."""

    slot: _Slot
    amount: int


@dataclass(frozen=True, kw_only=True)
class _Plan:
    """The budgets that apply to one caller and their counters for the current windows."""

    expires: float
    """``time.monotonic()`` after which the budget list is read again."""
    budgets: tuple[_BudgetRow, ...]
    slots: tuple[_Slot, ...]
    """Sorted by counter id: the lock order. Every counter exists in the store."""
    since: datetime
    until: datetime
    """Every slot's window contains ``[since, until)``; outside it the windows changed."""

    def current(self, now: datetime) -> bool:
        return self.since <= now < self.until


class _Stale(Exception):
    """A counter the plan relies on is gone (its budget was deleted by another process)."""


def _amount(metric: str, estimate_nano: int, estimate_tokens: int) -> int:
    if metric == "cost":
        return estimate_nano
    if metric == "tokens":
        return estimate_tokens
    return 1


def _counter_id(budget_id: str, window: datetime) -> str:
    digest = hashlib.sha256(f"{budget_id}|{window.isoformat()}".encode()).hexdigest()
    return f"bct_{digest[:32]}"


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


_ScopeKey = tuple[str, str | None, str, str]


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
        self._plans: dict[_ScopeKey, _Plan] = {}
        self._one_statement = db.engine.dialect.name == "sqlite"
        """SQLite: reserve and settle every counter with one statement each. PostgreSQL:
        one statement per counter, in a fixed order (row locks without deadlocks)."""
        self._run: Callable[[Prepared, Connection, dict[str, Any]], int] = (
            Prepared.run if self._one_statement else Prepared.execute
        )
        """SQLite: the counter writes go straight to the driver (``Prepared.run``)."""
        self._begin: Callable[[], AbstractContextManager[Connection]] = (
            db.kept_connections().begin if self._one_statement else db.engine.begin
        )
        """The guard's own transactions (reserve, release): on SQLite on a kept connection
        (a pool check-out costs more than the reservation); on PostgreSQL from the pool,
        whose pre-ping keeps a connection the server dropped from failing a call."""
        self._known: set[str] = set()
        """Counter rows known to exist (skips a lookup when a plan is made; rows are never
        deleted while their budget exists)."""
        self._insert = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert

    # -- reserve ------------------------------------------------------------------------

    def reserve(
        self,
        call: PlannedCall,
        spec: AgentSpec,
        totals: RunTotals,
        *,
        conn: Connection | None = None,
    ) -> Reservation:
        self._run_caps.check(kind=call.kind, spec=spec, totals=totals)
        self._breaker(call, totals)
        if call.kind != "model":
            return Reservation(call=call)
        scope = call.scope
        key = (scope.org_id, scope.team_id, scope.user_id, scope.agent_id)
        plan = self._plans.get(key)
        if plan is not None and plan.expires <= time.monotonic():
            plan = None
        if plan is not None and not plan.budgets:
            return Reservation(call=call)  # the common case: nothing to check, no I/O
        try:
            return self._reserve(call, key, plan, conn)
        except _Stale:
            self._drop(key)
        try:  # once more, with the budgets read again
            return self._reserve(call, key, None, conn)
        except _Stale:
            self._drop(key)
            raise BudgetExceeded("budget counters changed while reserving; try again") from None

    @contextmanager
    def _writes(self, conn: Connection | None) -> Iterator[Connection]:
        """Where a reservation writes: its own transaction, or the caller's. In the
        caller's, a refusal must leave no partial hold behind: on PostgreSQL (one
        statement per counter) a savepoint is rolled back; SQLite's one statement holds
        every counter or none (``_reserve_many``), so it needs no savepoint."""
        if conn is None:
            with self._begin() as own:
                yield own
        elif self._one_statement:
            yield conn
        else:
            with conn.begin_nested():
                yield conn

    def _reserve(
        self, call: PlannedCall, key: _ScopeKey, plan: _Plan | None, outer: Connection | None
    ) -> Reservation:
        # Prepared statements on a plain connection: this runs before every model call.
        made = False
        try:
            with self._writes(outer) as conn:
                now = self._clock()
                if plan is None or not plan.current(now):
                    plan, made = self._plan(conn, key, call.scope, now, plan), True
                if not plan.slots:
                    return Reservation(call=call)
                estimate_nano, estimate_tokens = call.estimates()
                holds = [
                    _Hold(slot, _amount(slot.metric, estimate_nano, estimate_tokens))
                    for slot in plan.slots
                ]
                if self._one_statement and len(holds) > 1:
                    self._reserve_at_once(conn, holds)
                else:
                    for hold in holds:
                        params = {
                            _P_ID: hold.slot.counter_id,
                            _P_AMOUNT: hold.amount,
                            _P_CAP: hold.slot.cap,
                        }
                        if not self._run(_RESERVE_ONE, conn, params):
                            raise self._refusal(conn, hold.slot) or _Stale()
        except BaseException:
            if made:  # the counters this transaction created are gone again
                self._drop(key)
            raise
        return Reservation(call=call, holds=list(holds))

    def _reserve_at_once(self, conn: Connection, holds: list[_Hold]) -> None:
        """SQLite: one statement for every counter (the database has one writer at a
        time, so there is no lock order to keep); any counter at its cap refuses."""
        params: dict[str, Any] = {}
        for (p_id, p_amount, p_cap), (slot, amount) in zip(
            _names(len(holds), _P_AMOUNT, _P_CAP), holds, strict=True
        ):
            params[p_id] = slot.counter_id
            params[p_amount] = amount
            params[p_cap] = slot.cap
        if self._run(_reserve_many(len(holds)), conn, params) == len(holds):
            return
        for hold in holds:  # none was held: find the one at its cap
            if refusal := self._refusal(conn, hold.slot):
                raise refusal
        raise _Stale()

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
        self._plans.clear()

    def _drop(self, key: _ScopeKey) -> None:
        plan = self._plans.pop(key, None)
        if plan is not None:
            self._known.difference_update(s.counter_id for s in plan.slots)

    def _plan(
        self,
        conn: Connection,
        key: _ScopeKey,
        scope: BudgetScope,
        now: datetime,
        old: _Plan | None,
    ) -> _Plan:
        """The budgets of ``scope`` (cached for ``BUDGET_CACHE_SECONDS``) and their
        counters for the windows containing ``now``, created where missing."""
        if old is not None:
            budgets, expires = old.budgets, old.expires
        else:
            budgets, expires = self._budgets(conn, scope), time.monotonic() + BUDGET_CACHE_SECONDS
        slots: list[_Slot] = []
        since, until = now, now + timedelta(days=366)
        for budget in budgets:
            window = window_start(budget.period, now)
            since, until = max(since, window), min(until, window_end(budget.period, window))
            slot = _Slot(
                counter_id=_counter_id(budget.id, window),
                budget_id=budget.id,
                scope=budget.scope,
                scope_id=budget.scope_id,
                metric=budget.metric,
                period=budget.period,
                cap=NO_CAP if budget.hard_cap is None else budget.hard_cap,
                soft_cap=budget.soft_cap,
                window=window,
            )
            self._ensure_counter(conn, slot)
            slots.append(slot)
        # A fixed lock order across transactions: no deadlocks between racing runs.
        slots.sort(key=lambda s: s.counter_id)
        plan = _Plan(
            expires=expires,
            budgets=budgets,
            slots=tuple(slots),
            since=since,
            until=until,
        )
        if len(self._plans) > 10_000:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    def _budgets(self, conn: Connection, scope: BudgetScope) -> tuple[_BudgetRow, ...]:
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
        return tuple(
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
        )

    def _ensure_counter(self, conn: Connection, slot: _Slot) -> None:
        """Create the window's counter on first use, starting from the usage already
        recorded in the window (a budget set mid-month counts the month so far)."""
        if slot.counter_id in self._known:
            return
        if conn.execute(select(_C.c.id).where(_C.c.id == slot.counter_id)).first() is None:
            values = {
                "id": slot.counter_id,
                "budget_id": slot.budget_id,
                "window_start": slot.window,
                "spent": spent_in_window(conn, slot.scope, slot.scope_id, slot.metric, slot.window),
                "reserved": 0,
                "soft_alerted": False,
            }
            statement = self._insert(BudgetCounter).values(**values).on_conflict_do_nothing()
            conn.execute(statement)
        if len(self._known) > 100_000:
            self._known.clear()
        self._known.add(slot.counter_id)

    @staticmethod
    def _refusal(conn: Connection, slot: _Slot) -> BudgetExceeded | None:
        """Why a reservation on ``slot`` failed: its hard cap (None: the counter is gone)."""
        row = conn.execute(
            select(_C.c.spent, _C.c.reserved).where(_C.c.id == slot.counter_id)
        ).first()
        if row is None or slot.cap == NO_CAP or row.spent + row.reserved < slot.cap:
            return None
        return BudgetExceeded(
            f"{slot.scope} budget: the {ADJECTIVES[slot.period]} {slot.metric} hard cap "
            f"{format_amount(slot.metric, slot.cap)} is reached "
            f"({format_amount(slot.metric, row.spent)} since {slot.window:%Y-%m-%d %H:%M} UTC)"
        )

    # -- settle / release ---------------------------------------------------------------

    def settle(
        self, session: Session, reservation: Reservation, *, cost_nano_usd: int, tokens: int
    ) -> None:
        if reservation.done:
            return
        reservation.done = True
        holds: list[_Hold] = reservation.holds
        if not holds:
            return
        self._release_if_rolled_back(session, reservation)
        conn = session.connection()
        if self._one_statement and len(holds) > 1:
            params: dict[str, Any] = {}
            for (p_id, p_amount, p_actual), (slot, amount) in zip(
                _names(len(holds), _P_AMOUNT, _P_ACTUAL), holds, strict=True
            ):
                params[p_id] = slot.counter_id
                params[p_amount] = amount
                params[p_actual] = _amount(slot.metric, cost_nano_usd, tokens)
            self._run(_settle_many(len(holds)), conn, params)
        else:
            for slot, amount in holds:
                self._run(
                    _SETTLE_ONE,
                    conn,
                    {
                        _P_ID: slot.counter_id,
                        _P_AMOUNT: amount,
                        _P_ACTUAL: _amount(slot.metric, cost_nano_usd, tokens),
                    },
                )
        for slot, _ in holds:
            if slot.soft_cap is not None and self._run(
                _SOFT_CROSSED, conn, {_P_ID: slot.counter_id, _P_SOFT: slot.soft_cap}
            ):
                self._soft_alert(session, reservation.call.scope, slot)

    def _release_if_rolled_back(self, session: Session, reservation: Reservation) -> None:
        """If the settling transaction does not commit, the estimate reserved earlier
        (committed on its own) is given back instead of staying held all window."""
        session.info.setdefault(_SETTLING, []).append((self, reservation))

    def _soft_alert(self, session: Session, scope: BudgetScope, slot: _Slot) -> None:
        assert slot.soft_cap is not None
        self._audit.append(
            session,
            AuditRecord(
                action="budget.soft_cap",
                resource=f"budget:{slot.budget_id}",
                outcome="alert",
                org_id=scope.org_id,
                actor_user_id=scope.user_id,
                actor_agent_id=scope.agent_id,
                details={
                    "scope": slot.scope,
                    "scope_id": slot.scope_id,
                    "metric": slot.metric,
                    "period": slot.period,
                    "window_start": slot.window.isoformat(),
                    "soft_cap": format_amount(slot.metric, slot.soft_cap),
                    "run_id": scope.run_id,
                },
            ),
        )
        cap = format_amount(slot.metric, slot.soft_cap)
        enqueue(
            session, org_id=scope.org_id, kind="budget.soft_cap",
            resource=f"budget:{slot.budget_id}",
            recipients=budget_watchers(session, scope.org_id, slot.scope, slot.scope_id),
            subject=f"Soft cap reached: {slot.scope} {slot.metric} budget ({slot.period})",
            body=(
                f"The {slot.period} {slot.metric} budget of {slot.scope} {slot.scope_id} "
                f"passed its soft cap of {cap} in the window starting "
                f"{slot.window:%Y-%m-%d %H:%M} UTC (run {scope.run_id}). Calls continue "
                "until the hard cap, if any."
            ),
        )  # fmt: skip

    def release(self, reservation: Reservation) -> None:
        if reservation.done:
            return
        reservation.done = True
        if not reservation.holds:
            return
        with self._begin() as conn:
            for slot, amount in reservation.holds:
                self._run(_RELEASE_ONE, conn, {_P_ID: slot.counter_id, _P_AMOUNT: amount})
