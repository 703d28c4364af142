"""``meshclaw_budget_*`` gauges: each org, team and agent budget's state, read at scrape time.

User budgets are left out: metrics never name a person.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import select

from meshclaw.clock import utcnow
from meshclaw.metering.models import Budget, BudgetCounter
from meshclaw.metering.windows import spent_in_window, window_start
from meshclaw.store.db import Database
from meshclaw.store.models import Agent, Team
from meshclaw.telemetry._org_view import ORG_LABEL

_LABELS = [ORG_LABEL, "scope", "name", "metric", "period"]


class BudgetCollector(Collector):
    def __init__(self, db: Database) -> None:
        self._db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        spent = GaugeMetricFamily(
            "meshclaw_budget_spent",
            "Spend in the budget's current window (USD for cost, else tokens or calls).",
            labels=_LABELS,
        )
        hard = GaugeMetricFamily(
            "meshclaw_budget_hard_cap", "The budget's hard cap (same unit).", labels=_LABELS
        )
        ratio = GaugeMetricFamily(
            "meshclaw_budget_utilisation",
            "Spent over the hard cap (1 = calls refused).",
            labels=_LABELS,
        )
        with self._db.session() as session:
            query = select(Budget).where(Budget.scope != "user")
            for budget in session.scalars(query):
                window = window_start(budget.period, utcnow())
                counter = session.scalars(
                    select(BudgetCounter).where(
                        BudgetCounter.budget_id == budget.id, BudgetCounter.window_start == window
                    )
                ).first()
                amount = (
                    counter.spent
                    if counter
                    else spent_in_window(
                        session, budget.scope, budget.scope_id, budget.metric, window
                    )
                )
                name = budget.scope_id
                if budget.scope == "team":
                    team = session.get(Team, budget.scope_id)
                    name = team.name if team else name
                elif budget.scope == "agent":
                    agent = session.get(Agent, budget.scope_id)
                    name = agent.name if agent else name
                labels = [budget.org_id, budget.scope, name, budget.metric, budget.period]
                unit = 1e-9 if budget.metric == "cost" else 1.0
                spent.add_metric(labels, amount * unit)
                if budget.hard_cap is not None:
                    hard.add_metric(labels, budget.hard_cap * unit)
                    ratio.add_metric(labels, amount / budget.hard_cap if budget.hard_cap else 1.0)
        yield spent
        yield hard
        yield ratio
