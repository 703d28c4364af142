"""An org's outcome history as frames, read once and then only what is new.

Leaderboards rank every outcome an org ever produced; reading 100 k outcomes and their
feedback from the store takes seconds, most of it per-row decoding. Both tables only
grow: an outcome's credit-relevant fields (owner, type, ref, beneficiaries, verified,
value, time) are fixed when it is recorded, and feedback is append-only evidence
(``outcomes.models``). So a process keeps each org's frames and, on the next read,
fetches only rows newer than the newest it holds.

Correctness does not rest on timestamps being monotonic: after appending, the row count
in the store must equal the count held, else (a row committed late with an older time,
or one inserted while we read) the org is read again from scratch. Each process has its
own cache; the store is the only truth, so several API processes stay correct.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from meshclaw.clock import as_utc
from meshclaw.outcomes.models import Outcome, OutcomeFeedback
from meshclaw.store.db import Database

_TS = pl.Datetime("us", "UTC")
OUTCOME_SCHEMA: dict[str, Any] = {
    "id": pl.String, "line": pl.UInt32, "ts": _TS, "team": pl.String, "user": pl.String,
    "agent": pl.String, "run": pl.String, "type": pl.String, "ref": pl.String,
    "beneficiary": pl.String, "verified": pl.Boolean, "value": pl.Float64,
}  # fmt: skip
FEEDBACK_SCHEMA: dict[str, Any] = {
    "id": pl.String, "line": pl.UInt32, "ts": _TS, "outcome": pl.String,
    "by": pl.String, "verdict": pl.String,
}  # fmt: skip


@dataclass(frozen=True)
class Mark:
    """How far a table of one org has been read: rows held and the newest row's time."""

    count: int
    newest: datetime | None


@dataclass(frozen=True)
class History:
    outcomes: pl.DataFrame
    feedback: pl.DataFrame
    marks: tuple[Mark, Mark]
    """(outcomes, feedback): equal marks mean equal history, so results keyed by them
    (``AnalyticsService``'s credit) may be reused."""


class OutcomeHistory:
    """Per-org outcome and feedback frames, kept up to date incrementally."""

    def __init__(self, db: Database, *, max_orgs: int = 32) -> None:
        self._db = db
        self._max_orgs = max_orgs
        self._held: OrderedDict[str, History] = OrderedDict()
        self._lock = threading.Lock()
        self._org_locks: dict[str, threading.Lock] = {}

    def read(self, org_id: str) -> History:
        """The org's outcomes and feedback, in (time, id) order with 1-based ``line``."""
        with self._lock:
            org_lock = self._org_locks.setdefault(org_id, threading.Lock())
        with org_lock:  # one reader per org fills the cache; others wait and reuse it
            with self._lock:
                held = self._held.get(org_id)
            with self._db.session() as session:
                fresh = self._refresh(session, org_id, held)
            with self._lock:
                self._held[org_id] = fresh
                self._held.move_to_end(org_id)
                while len(self._held) > self._max_orgs:
                    self._held.popitem(last=False)
            return fresh

    def forget(self, org_id: str | None = None) -> None:
        """Drop what is held (all orgs when ``org_id`` is None)."""
        with self._lock:
            if org_id is None:
                self._held.clear()
            else:
                self._held.pop(org_id, None)

    def _refresh(self, session: Session, org_id: str, held: History | None) -> History:
        if held is None:
            return _read_all(session, org_id)
        outcomes = _newer_outcomes(session, org_id, held.marks[0], held.outcomes)
        feedback = _newer_feedback(session, org_id, held.marks[1], held.feedback)
        if outcomes is None or feedback is None:
            return _read_all(session, org_id)
        return History(outcomes, feedback, (_mark_of(outcomes), _mark_of(feedback)))


def _read_all(session: Session, org_id: str) -> History:
    outcomes = _outcome_frame(_outcome_rows(session, org_id, after=None), first_line=1)
    feedback = _feedback_frame(_feedback_rows(session, org_id, after=None), first_line=1)
    return History(outcomes, feedback, (_mark_of(outcomes), _mark_of(feedback)))


def _newer_outcomes(
    session: Session, org_id: str, mark: Mark, held: pl.DataFrame
) -> pl.DataFrame | None:
    """``held`` with the rows recorded since ``mark``; None if the store disagrees."""
    if mark == _store_mark(session, Outcome, org_id):
        return held
    rows = _outcome_rows(session, org_id, after=mark.newest)
    grown = pl.concat([held, _outcome_frame(rows, first_line=mark.count + 1)])
    # Counted after reading: a row inserted meanwhile, or one with an older time, shows.
    return grown if _store_mark(session, Outcome, org_id) == _mark_of(grown) else None


def _newer_feedback(
    session: Session, org_id: str, mark: Mark, held: pl.DataFrame
) -> pl.DataFrame | None:
    if mark == _store_mark(session, OutcomeFeedback, org_id):
        return held
    rows = _feedback_rows(session, org_id, after=mark.newest)
    grown = pl.concat([held, _feedback_frame(rows, first_line=mark.count + 1)])
    return grown if _store_mark(session, OutcomeFeedback, org_id) == _mark_of(grown) else None


def _store_mark(
    session: Session, table: type[Outcome] | type[OutcomeFeedback], org_id: str
) -> Mark:
    count, newest = session.execute(
        select(func.count(), func.max(table.created_at)).where(table.org_id == org_id)
    ).one()
    return Mark(int(count), as_utc(newest) if newest is not None else None)


def _mark_of(frame: pl.DataFrame) -> Mark:
    newest = frame["ts"].max() if frame.height else None
    return Mark(frame.height, newest if isinstance(newest, datetime) else None)


def _outcome_rows(session: Session, org_id: str, *, after: datetime | None) -> Sequence[Any]:
    query = (
        select(
            Outcome.id, Outcome.created_at, Outcome.team_id, Outcome.user_id, Outcome.agent_id,
            Outcome.run_id, Outcome.type, Outcome.ref, Outcome.beneficiaries, Outcome.verified,
            Outcome.value,
        )
        .where(Outcome.org_id == org_id)
        .order_by(Outcome.created_at, Outcome.id)
    )  # fmt: skip
    if after is not None:
        query = query.where(Outcome.created_at > after)
    return session.execute(query).all()


def _feedback_rows(session: Session, org_id: str, *, after: datetime | None) -> Sequence[Any]:
    query = (
        select(
            OutcomeFeedback.id, OutcomeFeedback.created_at, OutcomeFeedback.outcome_id,
            OutcomeFeedback.by, OutcomeFeedback.verdict,
        )
        .where(OutcomeFeedback.org_id == org_id)
        .order_by(OutcomeFeedback.created_at, OutcomeFeedback.id)
    )  # fmt: skip
    if after is not None:
        query = query.where(OutcomeFeedback.created_at > after)
    return session.execute(query).all()


def _outcome_frame(rows: Sequence[Any], *, first_line: int) -> pl.DataFrame:
    table = [
        (o.id, i, o.created_at, o.team_id or "", o.user_id, o.agent_id, o.run_id, o.type,
         o.ref, _beneficiary(o.user_id, o.beneficiaries), o.verified, o.value)
        for i, o in enumerate(rows, start=first_line)
    ]  # fmt: skip
    return pl.DataFrame(table, schema=OUTCOME_SCHEMA, orient="row")


def _feedback_frame(rows: Sequence[Any], *, first_line: int) -> pl.DataFrame:
    table = [
        (f.id, i, f.created_at, f.outcome_id,
         "external" if f.by.startswith("external:") else f.by, f.verdict)
        for i, f in enumerate(rows, start=first_line)
    ]  # fmt: skip
    return pl.DataFrame(table, schema=FEEDBACK_SCHEMA, orient="row")


def _beneficiary(owner: str, beneficiaries: list[Any] | None) -> str:
    """The event format has one beneficiary: anyone other than the owner, else the owner."""
    others = [b for b in beneficiaries or [] if b != owner]
    return str(others[0]) if others else owner
