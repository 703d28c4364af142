"""Budget counters: one row per budget and window, and the statements that write them.

A counter's id is derived from its budget and window (``window_counter_id``), so every
process finds the same row without a lookup. ``spent`` is settled spend, ``reserved``
what calls in flight hold (``metering.limits`` explains reserve-then-settle);
``call_amount`` is what one call adds to a counter of a metric.

The counter writes of every model call are compiled once per dialect and run on the
driver (``store.db.Prepared``): building, re-keying and binding a SQLAlchemy statement
per call costs several times the write itself on SQLite. PostgreSQL writes one counter
per statement (``*_ONE``, in lock order); SQLite all of a call's counters in one
(``reserve_many`` / ``settle_many``, whose parameters are named by ``names``).
"""

from __future__ import annotations

import functools
import hashlib
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, func, select, update

from meshclaw.metering.models import BudgetCounter
from meshclaw.store.db import Prepared

NO_CAP = 2**62
"""Stands for "no hard cap" inside a single SQL statement."""
COUNTERS = cast(Table, BudgetCounter.__table__)

P_ID, P_AMOUNT, P_CAP, P_ACTUAL, P_SOFT = "p_id", "p_amount", "p_cap", "p_actual", "p_soft"

RESERVE_ONE = Prepared(
    update(COUNTERS)
    .where(
        COUNTERS.c.id == bindparam(P_ID), COUNTERS.c.spent + COUNTERS.c.reserved < bindparam(P_CAP)
    )
    .values(reserved=COUNTERS.c.reserved + bindparam(P_AMOUNT)),
    (P_ID, P_AMOUNT, P_CAP),
)
SETTLE_ONE = Prepared(
    update(COUNTERS)
    .where(COUNTERS.c.id == bindparam(P_ID))
    .values(
        reserved=COUNTERS.c.reserved - bindparam(P_AMOUNT),
        spent=COUNTERS.c.spent + bindparam(P_ACTUAL),
    ),
    (P_ID, P_AMOUNT, P_ACTUAL),
)
RELEASE_ONE = Prepared(
    update(COUNTERS)
    .where(COUNTERS.c.id == bindparam(P_ID))
    .values(reserved=COUNTERS.c.reserved - bindparam(P_AMOUNT)),
    (P_ID, P_AMOUNT),
)
SOFT_CROSSED = Prepared(
    update(COUNTERS)
    .where(
        COUNTERS.c.id == bindparam(P_ID),
        COUNTERS.c.soft_alerted.is_(False),
        COUNTERS.c.spent >= bindparam(P_SOFT),
    )
    .values(soft_alerted=True),
    (P_ID, P_SOFT),
)


def window_counter_id(budget_id: str, window: datetime) -> str:
    digest = hashlib.sha256(f"{budget_id}|{window.isoformat()}".encode()).hexdigest()
    return f"bct_{digest[:32]}"


def call_amount(metric: str, cost_nano: int, tokens: int) -> int:
    if metric == "cost":
        return cost_nano
    if metric == "tokens":
        return tokens
    return 1


def _by_id(n: int, name: str, id_column: Any = COUNTERS.c.id) -> Any:
    """``CASE id WHEN :p_id0 THEN :name0 ... END`` over ``n`` counters."""
    return case(
        *((id_column == bindparam(f"{P_ID}{i}"), bindparam(f"{name}{i}")) for i in range(n))
    )


def _keys(n: int, *names: str) -> list[str]:
    return [f"{name}{i}" for i in range(n) for name in names]


@functools.lru_cache(maxsize=32)
def reserve_many(n: int) -> Prepared:
    """All ``n`` counters or none: each is updated only if every one of them exists and
    is below its cap, so a refusal leaves nothing to undo in the caller's transaction
    (SQLite evaluates the uncorrelated count once, under the statement's write lock)."""
    ids: list[Any] = [bindparam(f"{P_ID}{i}") for i in range(n)]
    other = COUNTERS.alias("other")
    below_cap = (
        select(func.count())
        .select_from(other)
        .where(
            other.c.id.in_(ids),
            other.c.spent + other.c.reserved < _by_id(n, P_CAP, other.c.id),
        )
        .scalar_subquery()
    )
    statement = (
        update(COUNTERS)
        .where(COUNTERS.c.id.in_(ids), below_cap == n)
        .values(reserved=COUNTERS.c.reserved + _by_id(n, P_AMOUNT))
    )
    return Prepared(statement, _keys(n, P_ID, P_AMOUNT, P_CAP))


@functools.lru_cache(maxsize=32)
def settle_many(n: int) -> Prepared:
    ids: list[Any] = [bindparam(f"{P_ID}{i}") for i in range(n)]
    statement = (
        update(COUNTERS)
        .where(COUNTERS.c.id.in_(ids))
        .values(
            reserved=COUNTERS.c.reserved - _by_id(n, P_AMOUNT),
            spent=COUNTERS.c.spent + _by_id(n, P_ACTUAL),
        )
    )
    return Prepared(statement, _keys(n, P_ID, P_AMOUNT, P_ACTUAL))


@functools.lru_cache(maxsize=32)
def names(n: int, second: str, third: str) -> tuple[tuple[str, str, str], ...]:
    """Parameter names of counter ``i`` in the ``_many`` statements."""
    return tuple((f"{P_ID}{i}", f"{second}{i}", f"{third}{i}") for i in range(n))
