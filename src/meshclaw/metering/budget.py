"""Budget hooks: the gateway asks *before* a call spends anything, and settles after.

``BudgetGuard`` is the seam. For every model or tool call the gateway calls
``reserve`` (raise ``BudgetExceeded`` to refuse: nothing is called, the run stops
cleanly) inside the transaction that starts the call's step, so the reservation and the
step commit together (a second commit per call would cost as much as the budget check
itself); then exactly one of ``settle`` (in the transaction that stores the usage
record, so spend and usage commit together) or ``release`` (the call failed or was
cancelled). ``RunBudgetGuard`` enforces the spec's per-run caps; ``metering.limits``
adds org/team/user/agent budgets, rate limits and the runaway-loop circuit breaker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from meshclaw.errors import BudgetExceeded
from meshclaw.metering.prices import from_nano
from meshclaw.spec.models import AgentSpec

CallKind = Literal["model", "tool"]


@dataclass(kw_only=True)
class RunTotals:
    """What a run has spent so far (restored from the store when a run resumes)."""

    tokens: int = 0
    cost_nano_usd: int = 0
    model_calls: int = 0
    tool_calls: int = 0
    fingerprints: dict[str, int] = field(default_factory=dict)
    """How often each distinct call (``PlannedCall.fingerprint``) was made in this run."""


@dataclass(frozen=True, kw_only=True)
class BudgetScope:
    """Who a call is attributed to: every budget of these applies."""

    org_id: str
    team_id: str | None
    user_id: str
    agent_id: str
    run_id: str


@dataclass(frozen=True, kw_only=True)
class PlannedCall:
    """A call about to be made, as the budget sees it."""

    kind: CallKind
    scope: BudgetScope
    fingerprint: str
    """Stable digest of what is called with what (repeated identical calls trip a breaker)."""
    estimate_nano_usd: int = 0
    """An upper estimate of the call's cost, reserved while it is in flight."""
    estimate_tokens: int = 0
    estimator: Callable[[], tuple[int, int]] | None = None
    """Computes (cost estimate, token estimate) on demand, instead of the two fields:
    only a guard with budgets to check pays for estimating a long conversation."""

    def estimates(self) -> tuple[int, int]:
        if self.estimator is not None:
            return self.estimator()
        return self.estimate_nano_usd, self.estimate_tokens


@dataclass(kw_only=True)
class Reservation:
    """What ``reserve`` holds for one call until it is settled or released."""

    call: PlannedCall
    holds: list[Any] = field(default_factory=list)
    """Guard-specific handles (e.g. counter rows and the amounts reserved on them)."""
    done: bool = False


class BudgetGuard(Protocol):
    def reserve(
        self,
        call: PlannedCall,
        spec: AgentSpec,
        totals: RunTotals,
        *,
        conn: Connection | None = None,
    ) -> Reservation:
        """Raise ``BudgetExceeded`` to refuse the call before it is made; else hold it.

        With ``conn`` the hold is written in that connection's open transaction and
        commits (or rolls back, then there is nothing to release) with it; a refusal
        leaves that transaction as it was. Without, the guard commits it on its own."""
        ...

    def settle(
        self, session: Session, reservation: Reservation, *, cost_nano_usd: int, tokens: int
    ) -> None:
        """Record the call's actual spend in the caller's transaction."""
        ...

    def release(self, reservation: Reservation) -> None:
        """The call was not completed: give back what was reserved."""
        ...


class RunBudgetGuard:
    """Per-run caps from ``spec.budget``: steps, tokens and cost."""

    def check(self, *, kind: CallKind, spec: AgentSpec, totals: RunTotals) -> None:
        budget = spec.budget
        if kind != "model":
            return
        if totals.model_calls >= budget.max_steps:
            raise BudgetExceeded(f"run reached max_steps ({budget.max_steps})")
        if budget.max_tokens_per_run is not None and totals.tokens >= budget.max_tokens_per_run:
            raise BudgetExceeded(
                f"run used {totals.tokens} tokens, cap is {budget.max_tokens_per_run}"
            )
        if budget.max_cost_usd_per_run is None:
            return
        spent = from_nano(totals.cost_nano_usd)
        if spent >= budget.max_cost_usd_per_run:
            raise BudgetExceeded(
                f"run spent ${spent.normalize()}, cap is ${budget.max_cost_usd_per_run}"
            )

    def reserve(
        self,
        call: PlannedCall,
        spec: AgentSpec,
        totals: RunTotals,
        *,
        conn: Connection | None = None,
    ) -> Reservation:
        self.check(kind=call.kind, spec=spec, totals=totals)
        return Reservation(call=call)

    def settle(
        self, session: Session, reservation: Reservation, *, cost_nano_usd: int, tokens: int
    ) -> None:
        reservation.done = True

    def release(self, reservation: Reservation) -> None:
        reservation.done = True
