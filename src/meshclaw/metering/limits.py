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

``LimitGuard`` is the guard; the counter rows and their prepared statements are in
``metering._counters``, windows and amounts in ``metering.windows``, call fingerprints
and estimates in ``metering.calls``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import and_, event, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.clock import utcnow
from meshclaw.errors import BudgetExceeded
from meshclaw.metering._counters import (
    COUNTERS,
    NO_CAP,
    P_ACTUAL,
    P_AMOUNT,
    P_CAP,
    P_ID,
    P_SOFT,
    RELEASE_ONE,
    RESERVE_ONE,
    SETTLE_ONE,
    SOFT_CROSSED,
    call_amount,
    names,
    reserve_many,
    settle_many,
    window_counter_id,
)
from meshclaw.metering.budget import (
    BudgetScope,
    PlannedCall,
    Reservation,
    RunBudgetGuard,
    RunTotals,
)
from meshclaw.metering.calls import DEFAULT_OUTPUT_RESERVE as DEFAULT_OUTPUT_RESERVE
from meshclaw.metering.calls import estimate_call as estimate_call
from meshclaw.metering.calls import model_fingerprint as model_fingerprint
from meshclaw.metering.calls import tool_fingerprint as tool_fingerprint
from meshclaw.metering.models import Budget, BudgetCounter
from meshclaw.metering.windows import ADJECTIVES, window_end
from meshclaw.metering.windows import METRICS as METRICS
from meshclaw.metering.windows import PERIODS as PERIODS
from meshclaw.metering.windows import SCOPES as SCOPES
from meshclaw.metering.windows import format_amount as format_amount
from meshclaw.metering.windows import spent_in_window as spent_in_window
from meshclaw.metering.windows import window_start as window_start
from meshclaw.notify.outbox import budget_watchers, enqueue
from meshclaw.spec.models import AgentSpec
from meshclaw.store.db import Database

# The names imported ``as`` themselves (from ``metering.calls`` and ``metering.windows``)
# are re-exported for code that imported them from this module before it was split.

BUDGET_CACHE_SECONDS = 2.0
"""How long a process reuses the list of budgets that apply to a caller. Changes made
through this platform apply at once; changes made by another process within this time."""


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
        every counter or none (``reserve_many``), so it needs no savepoint."""
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
                    _Hold(slot, call_amount(slot.metric, estimate_nano, estimate_tokens))
                    for slot in plan.slots
                ]
                if self._one_statement and len(holds) > 1:
                    self._reserve_at_once(conn, holds)
                else:
                    for hold in holds:
                        params = {
                            P_ID: hold.slot.counter_id,
                            P_AMOUNT: hold.amount,
                            P_CAP: hold.slot.cap,
                        }
                        if not RESERVE_ONE.write(conn, params):
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
            names(len(holds), P_AMOUNT, P_CAP), holds, strict=True
        ):
            params[p_id] = slot.counter_id
            params[p_amount] = amount
            params[p_cap] = slot.cap
        if reserve_many(len(holds)).write(conn, params) == len(holds):
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
                counter_id=window_counter_id(budget.id, window),
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
        exists = select(COUNTERS.c.id).where(COUNTERS.c.id == slot.counter_id)
        if conn.execute(exists).first() is None:
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
            select(COUNTERS.c.spent, COUNTERS.c.reserved).where(COUNTERS.c.id == slot.counter_id)
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
                names(len(holds), P_AMOUNT, P_ACTUAL), holds, strict=True
            ):
                params[p_id] = slot.counter_id
                params[p_amount] = amount
                params[p_actual] = call_amount(slot.metric, cost_nano_usd, tokens)
            settle_many(len(holds)).write(conn, params)
        else:
            for slot, amount in holds:
                SETTLE_ONE.write(
                    conn,
                    {
                        P_ID: slot.counter_id,
                        P_AMOUNT: amount,
                        P_ACTUAL: call_amount(slot.metric, cost_nano_usd, tokens),
                    },
                )
        for slot, _ in holds:
            if slot.soft_cap is not None and SOFT_CROSSED.write(
                conn, {P_ID: slot.counter_id, P_SOFT: slot.soft_cap}
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
                RELEASE_ONE.write(conn, {P_ID: slot.counter_id, P_AMOUNT: amount})
