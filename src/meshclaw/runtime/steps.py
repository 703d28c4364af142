"""Run steps and usage records in the store, written by the gateway as calls start and end.

Three things keep these writes cheap; each step is two transactions of a few statements.

**A call's end is committed with the run's next write** (write-behind). A step is
committed as ``running`` before its call is made. When the call ends and no other call
of the run is in flight, its end (``CallEnd``: the step's result, the usage record, the
budget settle and the audit record, all or nothing) is kept on the run's
``StepJournal`` and committed in the same transaction as the run's next write: the next
call's start, a refusal, or the run's end. Nothing is awaited in between (the next call
is authorised and budgeted first, without awaiting), so a crash can still lose only the
call in flight, whose step then reads ``running`` and is made again on resume exactly
as if the crash had come during the call; and since the next call is made only after
that transaction commits, nothing outside acts on a result that is not stored. The end
of a call that finishes while others of the run are still in flight (parallel tool
calls) is written at once. Only an executor that commits the journal whenever the run
stops turns write-behind on; anything else calling the gateway gets every end at once.

**Statements are compiled once** (``store.db.Prepared``) and run on the driver, instead
of being re-keyed, bound and wrapped by SQLAlchemy on every call.

**One connection per gateway on SQLite** (``_Lane``) instead of a pooled connection and a
new session per transaction.

**A leased run's writes are fenced** (``Fence``). A scale-out worker holds its run by a
lease (``workers.leases``); if the lease runs out while the worker is merely slow, another
worker takes the run over and re-makes the call in flight. Every transaction of a leased
run therefore first locks the run's row on the condition that the lease is still this
execution's (same owner, same claim number); if it is not, the transaction writes nothing
for the run: no step start or end, no usage record, no budget settle, no audit record.
Locking the row (an ``UPDATE`` that changes nothing) orders the check against the
successor's claim on both engines: a claim waits for a fenced transaction in flight and
then sees its writes, and a fenced transaction that comes after a claim finds the lease
gone. Runs without a lease (the embedded worker, the CLI) skip the check.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, bindparam, null, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from meshclaw.clock import utcnow
from meshclaw.errors import BudgetExceeded, RunCancelled
from meshclaw.ids import new_id
from meshclaw.metering.budget import Reservation
from meshclaw.store.db import Database, Prepared
from meshclaw.store.models import Run, RunStep, UsageRecord
from meshclaw.text import without_nul

if TYPE_CHECKING:
    from meshclaw.runtime.context import RunContext

SUPERSEDED = "superseded: another worker took the run over"

STEPS = cast(Table, RunStep.__table__)
USAGE = cast(Table, UsageRecord.__table__)
_RUNS = cast(Table, Run.__table__)

_FENCE = (
    _RUNS.update()
    .where(
        _RUNS.c.id == bindparam("b_run"),
        _RUNS.c.lease_owner == bindparam("b_owner"),
        _RUNS.c.attempts == bindparam("b_attempt"),
    )
    # Changes nothing; it takes the row's write lock (see the module's docstring).
    .values(attempts=_RUNS.c.attempts)
)

_INSERT_STEP = STEPS.insert()
_FIND_STEP = select(STEPS.c.id).where(
    STEPS.c.run_id == bindparam("b_run"), STEPS.c.seq == bindparam("b_seq")
)
_SET_STEP = STEPS.update().where(STEPS.c.id == bindparam("b_id"))
_END_STEP_IF_RUNNING = STEPS.update().where(
    STEPS.c.id == bindparam("b_id"), STEPS.c.status == "running"
)
_INSERT_USAGE = USAGE.insert()
# The writes of every call, compiled once (see ``store.db.Prepared``).
_START = Prepared(
    _INSERT_STEP,
    (
        "id",
        "run_id",
        "seq",
        "cost_nano_usd",
        "kind",
        "name",
        "status",
        "request",
        "decision",
        "error",
        "started_at",
        "ended_at",
    ),
)
_END_KEYS = ("b_id", "status", "error", "decision", "cost_nano_usd", "ended_at", "response")
_END = Prepared(_SET_STEP, _END_KEYS)
_END_IF_RUNNING = Prepared(_END_STEP_IF_RUNNING, _END_KEYS)
_USAGE = Prepared(_INSERT_USAGE, [c.key for c in USAGE.columns])
_NO_RESPONSE = {"response": null()}
"""SQL NULL for a step without a response: passed as a parameter, ``None`` would be
stored as the JSON text ``null``."""

USAGE_ZERO: dict[str, Any] = {
    "provider": None,
    "model": None,
    "tool": None,
    "status": "ok",
    "input_tokens": 0,
    "output_tokens": 0,
    "cached_tokens": 0,
    "cache_write_tokens": 0,
    "reasoning_tokens": 0,
    "estimated": False,
    "latency_ms": 0,
    "cost_nano_usd": 0,
    "price_version": None,
}
"""Every usage column a call may leave out: each insert names all columns, so the
statement compiles once."""


def insert_step(
    conn: Connection,
    *,
    run_id: str,
    seq: int,
    kind: str,
    name: str,
    status: str,
    request: dict[str, Any],
    started_at: datetime,
    response: dict[str, Any] | None = None,
    decision: str | None = None,
    error: str | None = None,
    ended_at: datetime | None = None,
    resumed_through: int = 0,
) -> str:
    """Write step ``seq`` of a run, or overwrite it when a resumed run re-runs that step.

    Only steps numbered at or below ``resumed_through`` (where the run resumed) can exist
    already, so a fresh step skips the lookup. Returns the step's id.
    """
    values: dict[str, Any] = {
        "kind": kind,
        "name": name,
        "status": status,
        "request": request,
        "decision": decision,
        "error": error,
        "started_at": started_at,
        "ended_at": ended_at,
    }
    if response is not None:  # else left out of the insert: SQL NULL (see ``_NO_RESPONSE``)
        values["response"] = response
    if seq <= resumed_through:
        existing = conn.execute(_FIND_STEP, {"b_run": run_id, "b_seq": seq}).scalar()
        if existing is not None:
            statement = _SET_STEP if response is not None else _SET_STEP.values(_NO_RESPONSE)
            conn.execute(statement, {"b_id": existing, **values})
            return str(existing)
    step_id = new_id("stp")
    row = {"id": step_id, "run_id": run_id, "seq": seq, "cost_nano_usd": 0, **values}
    if response is None:
        _START.execute(conn, row)
    else:
        conn.execute(_INSERT_STEP, row)
    return step_id


def end_step(
    conn: Connection,
    step_id: str,
    *,
    status: str,
    response: dict[str, Any] | None,
    error: str | None,
    decision: str,
    cost_nano_usd: int,
    ended_at: datetime,
    only_running: bool = False,
) -> bool:
    """Record how a step ended; with ``only_running``, only if it is still ``running``
    (another worker that took the run over marks it ``lost``). True if written."""
    values: dict[str, Any] = {
        "b_id": step_id,
        "status": status,
        "error": error,
        "decision": decision,
        "cost_nano_usd": cost_nano_usd,
        "ended_at": ended_at,
    }
    if response is not None:
        values["response"] = response
        return bool((_END_IF_RUNNING if only_running else _END).execute(conn, values))
    statement = _END_STEP_IF_RUNNING if only_running else _SET_STEP
    return bool(conn.execute(statement.values(_NO_RESPONSE), values).rowcount)


def attribution(ctx: RunContext) -> dict[str, Any]:
    """Who and what a usage record of ``ctx``'s run is attributed to, and when."""
    return {
        "org_id": ctx.org_id,
        "team_id": ctx.team_id,
        "user_id": ctx.user_id,
        "agent_id": ctx.agent_id,
        "agent_version": ctx.agent_version,
        "run_id": ctx.run_id,
        "trigger": ctx.trigger,
        "created_at": utcnow(),
    }


def insert_usage(conn: Connection, values: dict[str, Any]) -> None:
    """One usage record; ``values`` holds the attribution and whatever differs from
    ``USAGE_ZERO``."""
    _USAGE.execute(conn, {"id": new_id("use"), **USAGE_ZERO, **values})


@dataclass(frozen=True, kw_only=True)
class Fence:
    """The lease one execution of a run holds: who claimed it, and which claim it was
    (``runs.attempts`` after the claim). A worker that re-claims its own run after the
    lease ran out holds a new claim, so an earlier execution is fenced out too."""

    owner: str
    attempt: int


def holds(conn: Connection, run_id: str, fence: Fence | None) -> bool:
    """Lock the run's row if ``fence`` is still its lease; True without a fence."""
    if fence is None:
        return True
    values = {"b_run": run_id, "b_owner": fence.owner, "b_attempt": fence.attempt}
    return bool(conn.execute(_FENCE, values).rowcount)


def _nothing(session: Session) -> None:
    return None


def _no_op() -> None:
    return None


@dataclass(kw_only=True)
class CallEnd:
    """A finished call's writes: the step's end, then (``then``) its usage record, budget
    settle and audit record, all in one transaction."""

    step_id: str
    status: str
    response: dict[str, Any] | None
    error: str | None
    decision: str
    cost_nano_usd: int
    ended_at: datetime
    only_running: bool
    """Written only if the step is still ``running`` (see ``end_step``), and ``then`` only
    if it was: a model call's metering counts once even if another worker re-made it."""
    then: Callable[[Session], None]
    superseded: Callable[[], None]
    """Called after the transaction if the step was no longer ours (nothing was written
    for it): gives back what the call had reserved."""

    def write(self, session: Session) -> bool:
        """Write the end in ``session``'s transaction; False if another worker took it."""
        written = end_step(
            session.connection(),
            self.step_id,
            status=self.status,
            response=self.response,
            error=self.error,
            decision=self.decision,
            cost_nano_usd=self.cost_nano_usd,
            ended_at=self.ended_at,
            only_running=self.only_running,
        )
        if written:
            self.then(session)
        return written


def call_end(
    step_id: str,
    status: str,
    response: dict[str, Any] | None,
    decision: str,
    *,
    error: str | None = None,
    cost_nano_usd: int = 0,
    only_running: bool = False,
    then: Callable[[Session], None] | None = None,
    superseded: Callable[[], None] | None = None,
) -> CallEnd:
    """The end of a call that ends now."""
    return CallEnd(
        step_id=step_id,
        status=status,
        response=response,
        error=None if error is None else without_nul(error),  # a vendor's or a tool's text
        decision=decision[:200],
        cost_nano_usd=cost_nano_usd,
        ended_at=utcnow(),
        only_running=only_running,
        then=then or _nothing,
        superseded=superseded or _no_op,
    )


@dataclass(kw_only=True)
class StepJournal:
    """A run's calls in flight and the call end waiting to be committed."""

    write_behind: bool = False
    """Keep the last call's end for the run's next write. Only an executor that commits
    the journal whenever the run stops (``StepWriter.commit_pending``) turns it on."""
    in_flight: int = 0
    """Calls of the run started and not yet ended."""
    pending: CallEnd | None = None
    """The end of the run's last call, not yet committed."""


class _Lane:
    """One connection kept open for a gateway's writes, on SQLite (see ``StepWriter``).

    Checking a connection out of the pool and building a session cost about as much as a
    step's writes. Here one session bound to one connection serves every transaction,
    one at a time, in the thread that first used it (a gateway serves one event loop).
    Any other use (another thread, a transaction inside a transaction) gets an ordinary
    ``Database.session``; so does PostgreSQL, where the pool's pre-ping keeps a
    connection the server dropped from failing a call, and a round trip costs more than
    the pool anyway.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._on = db.engine.dialect.name == "sqlite"
        self._claim = threading.Lock()
        self._thread: int | None = None
        self._session: Session | None = None
        self._busy = False
        self._finalizer: weakref.finalize[Any, _Lane] | None = None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back on any error."""
        if not self._on or self._busy or not self._owned():
            with self._db.session() as session:
                yield session
            return
        self._busy = True
        try:
            session = self._session or self._open()
            try:
                with session.begin():
                    yield session
            except DBAPIError:
                self.close()  # a connection that failed is not kept; the next write opens one
                raise
        finally:
            self._busy = False

    def _owned(self) -> bool:
        me = threading.get_ident()
        if self._thread is None:
            with self._claim:
                if self._thread is None:
                    self._thread = me
        return self._thread == me

    def _open(self) -> Session:
        conn = self._db.engine.connect()
        self._session = Session(bind=conn, expire_on_commit=False)
        # Returned to the pool even if the gateway is dropped without being closed.
        self._finalizer = weakref.finalize(self, _close, self._session, conn)
        return self._session

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._session = self._finalizer = None
        self._thread = None


def _close(session: Session, conn: Connection) -> None:
    session.close()
    conn.close()


class StepWriter:
    """Writes a run's steps: each start at once, each end at once or with the next write."""

    def __init__(self, db: Database) -> None:
        self._lane = _Lane(db)

    def close(self) -> None:
        """Give back the connection kept for writing (the gateway is closed)."""
        self._lane.close()

    @contextmanager
    def transaction(
        self,
        ctx: RunContext,
        *,
        strict: bool = True,
        first: Callable[[Session], None] = _nothing,
    ) -> Iterator[Session]:
        """A transaction for ``ctx``'s run that first writes the call end its journal
        holds, so that the end and whatever the caller writes commit together.

        ``first`` runs before that end is written, once the lease is known to be ours:
        budget counters are locked before the audit log's head in every transaction
        (an end writes its audit record after settling), so two runs never wait on each
        other in opposite orders (PostgreSQL).

        If the run's lease (``ctx.fence``) is no longer this execution's, or that end's
        step was meanwhile taken over by another worker, nothing is written for the end
        and, when ``strict``, ``RunCancelled`` is raised before anything else is. Without
        ``strict`` the caller's own writes must then be conditional on the lease.
        """
        end, ctx.journal.pending = ctx.journal.pending, None
        superseded: CallEnd | None = None
        try:
            with self._lane.session() as session:
                ours = holds(session.connection(), ctx.run_id, ctx.fence)
                if ours:
                    first(session)
                if end is not None and not (ours and end.write(session)):
                    superseded = end
                if strict and (not ours or superseded is not None):
                    raise RunCancelled(SUPERSEDED)
                yield session
        finally:
            if superseded is not None:
                superseded.superseded()  # after the transaction: it may write on its own

    def commit_pending(self, ctx: RunContext) -> None:
        """Stop keeping call ends back for ``ctx``, and commit the one held, if any."""
        ctx.journal.write_behind = False
        if ctx.journal.pending is not None:
            with self.transaction(ctx, strict=False):
                pass

    def start(
        self,
        ctx: RunContext,
        seq: int,
        kind: str,
        name: str,
        request: dict[str, Any],
        reserve: Callable[[Connection], Reservation],
    ) -> tuple[str, Reservation]:
        """Commit step ``seq`` as ``running`` before its call is made, with the call's
        budget reservation (``reserve``) in the same transaction; return the step's id
        and the reservation. If ``reserve`` refuses (``BudgetExceeded``), no step is
        written, the journal's pending end still commits, and the refusal is raised."""
        held: list[Reservation] = []
        refusal: list[BudgetExceeded] = []

        def reserve_first(session: Session) -> None:
            try:
                held.append(reserve(session.connection()))
            except BudgetExceeded as exc:
                refusal.append(exc)

        with self.transaction(ctx, first=reserve_first) as session:
            if held:
                step_id = insert_step(
                    session.connection(),
                    run_id=ctx.run_id,
                    seq=seq,
                    kind=kind,
                    name=name,
                    status="running",
                    request=request,
                    started_at=utcnow(),
                    resumed_through=ctx.resumed_through,
                )
        if refusal:
            raise refusal[0]
        ctx.journal.in_flight += 1
        return step_id, held[0]

    def refused(
        self,
        ctx: RunContext,
        seq: int,
        *,
        kind: str,
        name: str,
        status: str,
        request: dict[str, Any],
        response: dict[str, Any] | None,
        decision: str,
        reason: str,
        then: Callable[[Session], None],
    ) -> None:
        """Commit step ``seq`` of a call that was not made (refused, or held for a
        person), and ``then`` its audit record in the same transaction."""
        now = utcnow()
        with self.transaction(ctx) as session:
            insert_step(
                session.connection(),
                run_id=ctx.run_id,
                seq=seq,
                kind=kind,
                name=name,
                status=status,
                request=request,
                response=response,
                decision=decision[:200],
                error=reason,
                started_at=now,
                ended_at=now,
                resumed_through=ctx.resumed_through,
            )
            then(session)

    def end(self, ctx: RunContext, end: CallEnd) -> None:
        """Commit a call's end now, or keep it for the run's next write when write-behind
        is on and no other call of the run is in flight. Raises ``RunCancelled`` if the
        step was taken over by another worker (then nothing is written for it)."""
        journal = ctx.journal
        journal.in_flight = max(0, journal.in_flight - 1)
        if journal.write_behind and journal.in_flight == 0 and journal.pending is None:
            journal.pending = end
            return
        try:
            with self.transaction(ctx) as session:
                written = end.write(session)
        except RunCancelled:  # the lease is no longer ours: nothing was written
            end.superseded()
            raise
        if not written:
            end.superseded()
            raise RunCancelled(SUPERSEDED)
