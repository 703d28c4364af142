"""Cost per outcome: model and tool spend over accepted, durable outcomes.

Spend comes from the usage records (``metering``), credit from ``Outcome.state``
(``credited``, kept current by ``outcomes.service``), both grouped by the same column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from sqlalchemy import func, select

from meshclaw.outcomes.models import Outcome
from meshclaw.store.db import Database
from meshclaw.store.models import UsageRecord

NANO = Decimal(1_000_000_000)
CostBy = Literal["agent", "user", "team"]


@dataclass(frozen=True, kw_only=True)
class CostRow:
    key: str
    cost_usd: Decimal
    credited: int
    """Accepted, durable outcomes."""
    cost_per_outcome: Decimal | None


def cost_per_outcome(
    db: Database, org_id: str, *, by: CostBy = "agent", only: Mapping[str, str] | None = None
) -> list[CostRow]:
    """Model and tool spend over accepted, durable outcomes, per agent, user or team.

    ``only`` restricts to a column value (``{"user_id": ...}``); callers apply the
    privacy tier (``analytics.privacy``) before showing rows.
    """
    column = {"agent": "agent_id", "user": "user_id", "team": "team_id"}[by]
    with db.session() as session:
        usage_key = getattr(UsageRecord, column)
        q_cost = (
            select(usage_key, func.coalesce(func.sum(UsageRecord.cost_nano_usd), 0))
            .where(UsageRecord.org_id == org_id)
            .group_by(usage_key)
        )
        out_key = getattr(Outcome, column)
        q_out = (
            select(out_key, func.count())
            .where(Outcome.org_id == org_id, Outcome.state == "credited")
            .group_by(out_key)
        )
        for name, value in (only or {}).items():
            q_cost = q_cost.where(getattr(UsageRecord, name) == value)
            q_out = q_out.where(getattr(Outcome, name) == value)
        cost = {k: int(v) for k, v in session.execute(q_cost)}
        credited = {k: int(v) for k, v in session.execute(q_out)}
    rows = []
    for key in sorted(set(cost) | set(credited), key=lambda k: k or ""):
        usd = Decimal(cost.get(key, 0)) / NANO
        n = credited.get(key, 0)
        rows.append(
            CostRow(
                key=key or "(none)", cost_usd=usd, credited=n,
                cost_per_outcome=(usd / n).quantize(Decimal("0.000001")) if n else None,
            )
        )  # fmt: skip
    return rows
