"""Budget hooks checked by the gateway *before* a call spends anything.

This issue enforces the per-run limits of the spec. The metering issue adds
user/team/agent/org budgets and rate limits behind the same Protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

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


class BudgetGuard(Protocol):
    def check(self, *, kind: CallKind, spec: AgentSpec, totals: RunTotals) -> None:
        """Raise ``BudgetExceeded`` to refuse the call before it is made."""
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
        spent = from_nano(totals.cost_nano_usd)
        if budget.max_cost_usd_per_run is not None and spent >= budget.max_cost_usd_per_run:
            raise BudgetExceeded(
                f"run spent ${spent.normalize()}, cap is ${budget.max_cost_usd_per_run}"
            )
