"""Setting and reading budgets and rate limits (``meshclaw budget``, ``/v1/budgets``).

Who may set and see what is Cedar's (``budget.manage`` / ``budget.read`` on the budget's
subject: the ``Org``, a ``Team``, a ``User`` or an ``Agent``; ``policy.roles``): with
the built-in policies, platform admins any scope of their org; team admins their own
team, its people and its agents; auditors read them all; everyone reads the org's
budgets and the ones that apply to them (their team's, their own, their agents'). Every
change is audited (``budget.set``, ``budget.delete``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from meshclaw.accounts.service import Caller
from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.clock import utcnow
from meshclaw.errors import NotFoundError, UserError
from meshclaw.ids import new_id
from meshclaw.metering.models import Budget, BudgetCounter
from meshclaw.metering.prices import to_nano
from meshclaw.metering.windows import (
    METRICS,
    PERIODS,
    SCOPES,
    format_amount,
    spent_in_window,
    window_start,
)
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.store.db import Database
from meshclaw.store.models import Agent, Team, User


@dataclass(frozen=True, kw_only=True)
class BudgetInfo:
    id: str
    scope: str
    scope_id: str
    name: str
    """The team name, user handle, agent name, or ``org``."""
    metric: str
    period: str
    hard_cap: str | None
    """Human form: ``$12.5`` for cost, ``1000 tokens`` / ``60 calls`` otherwise."""
    soft_cap: str | None
    window_start: datetime
    spent: str
    """Settled spend in the current window."""
    in_flight: str
    """Reserved by calls in flight."""
    state: str
    """ok, soft (soft cap crossed) or hard (hard cap reached: calls are refused)."""


def parse_cap(metric: str, value: str | None) -> int | None:
    """A cap from the command line or API: USD for cost, an integer otherwise."""
    if value is None or value == "":
        return None
    try:
        number = Decimal(value.removeprefix("$"))
    except InvalidOperation:
        raise UserError(f"not a number: {value!r}") from None
    if number < 0:
        raise UserError(f"a cap cannot be negative: {value!r}")
    if metric == "cost":
        return to_nano(number)
    if number != number.to_integral_value():
        raise UserError(f"{metric} caps are whole numbers: {value!r}")
    return int(number)


class BudgetService:
    def __init__(
        self,
        db: Database,
        audit: AuditSink,
        access: ApiAuthorizer,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        self._audit = audit
        self._access = access
        self._on_change = on_change or (lambda: None)
        """Called after a budget changed (the guard drops its cached budget lists)."""

    def set(
        self,
        caller: Caller,
        *,
        scope: str,
        name: str,
        metric: str,
        period: str,
        hard_cap: str | None,
        soft_cap: str | None,
    ) -> BudgetInfo:
        """Create or replace the budget of (scope, name, metric, period)."""
        if scope not in SCOPES:
            raise UserError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        if metric not in METRICS:
            raise UserError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
        if period not in PERIODS:
            raise UserError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")
        hard, soft = parse_cap(metric, hard_cap), parse_cap(metric, soft_cap)
        if hard is None and soft is None:
            raise UserError("give a hard cap, a soft cap or both")
        with self._db.session() as session:
            scope_id = self._resolve(session, caller, scope, name)
            self._may_manage(caller, self._subject(session, caller.org_id, scope, scope_id))
            budget = session.scalars(
                select(Budget).where(
                    Budget.org_id == caller.org_id,
                    Budget.scope == scope,
                    Budget.scope_id == scope_id,
                    Budget.metric == metric,
                    Budget.period == period,
                )
            ).one_or_none()
            if budget is None:
                budget = Budget(
                    id=new_id("bud"),
                    org_id=caller.org_id,
                    scope=scope,
                    scope_id=scope_id,
                    metric=metric,
                    period=period,
                    created_by=caller.user_id,
                )
                session.add(budget)
            budget.hard_cap, budget.soft_cap, budget.updated_at = hard, soft, utcnow()
            session.flush()
            self._audit.append(
                session,
                AuditRecord(
                    action="budget.set",
                    resource=f"budget:{budget.id}",
                    outcome="ok",
                    org_id=caller.org_id,
                    actor_user_id=caller.user_id,
                    details={
                        "scope": scope,
                        "scope_id": scope_id,
                        "metric": metric,
                        "period": period,
                        # Strings: nano-dollar caps can exceed JSON's safe integers.
                        "hard_cap": None if hard is None else format_amount(metric, hard),
                        "soft_cap": None if soft is None else format_amount(metric, soft),
                    },
                ),
            )
            info = self._info(session, budget, name)
        self._on_change()
        return info

    def delete(self, caller: Caller, budget_id: str) -> None:
        with self._db.session() as session:
            budget = session.get(Budget, budget_id)
            if budget is None or budget.org_id != caller.org_id:
                raise NotFoundError(f"no budget {budget_id!r}")
            self._may_manage(
                caller, self._subject(session, budget.org_id, budget.scope, budget.scope_id)
            )
            session.execute(delete(BudgetCounter).where(BudgetCounter.budget_id == budget.id))
            session.delete(budget)
            self._audit.append(
                session,
                AuditRecord(
                    action="budget.delete",
                    resource=f"budget:{budget_id}",
                    outcome="ok",
                    org_id=caller.org_id,
                    actor_user_id=caller.user_id,
                    details={"scope": budget.scope, "scope_id": budget.scope_id},
                ),
            )
        self._on_change()

    def visible(self, caller: Caller) -> list[BudgetInfo]:
        """Admins see the budgets they manage; others the budgets that apply to them."""
        with self._db.session() as session:
            budgets = list(
                session.scalars(
                    select(Budget)
                    .where(Budget.org_id == caller.org_id)
                    .order_by(Budget.scope, Budget.scope_id, Budget.metric, Budget.period)
                )
            )
            infos = []
            for budget in budgets:
                subject = self._subject(session, budget.org_id, budget.scope, budget.scope_id)
                if not self._access.authorize_api(caller, "budget.read", subject).allowed:
                    continue
                infos.append(self._info(session, budget, self._name(session, budget)))
            return infos

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _resolve(session: Session, caller: Caller, scope: str, name: str) -> str:
        """The scope id for a scope name, in the caller's org."""
        org = caller.org_id
        if scope == "org":
            return org
        if scope == "team":
            team = session.scalars(
                select(Team).where(Team.org_id == org, Team.name == name)
            ).first()
            if team is None:
                raise NotFoundError(f"no team {name!r}")
            return team.id
        if scope == "user":
            user = session.scalars(
                select(User).where(User.org_id == org, User.handle == name)
            ).first()
            if user is None:
                raise NotFoundError(f"no user {name!r}")
            return user.id
        agent = session.scalars(
            select(Agent).where(Agent.org_id == org, Agent.name == name)
        ).first()
        if agent is None:
            raise NotFoundError(f"no agent {name!r}")
        return agent.id

    @staticmethod
    def _name(session: Session, budget: Budget) -> str:
        if budget.scope == "team":
            team = session.get(Team, budget.scope_id)
            return team.name if team else budget.scope_id
        if budget.scope == "user":
            user = session.get(User, budget.scope_id)
            return user.handle if user else budget.scope_id
        if budget.scope == "agent":
            agent = session.get(Agent, budget.scope_id)
            return agent.name if agent else budget.scope_id
        return "org"

    def _may_manage(self, caller: Caller, subject: ApiResource) -> None:
        self._access.require(
            caller,
            "budget.manage",
            subject,
            message="only platform admins, or team admins for their team, set budgets",
        )

    @staticmethod
    def _subject(session: Session, org_id: str, scope: str, scope_id: str) -> ApiResource:
        """What a budget is about, as Cedar sees it (a team, person or agent with its team).

        A person or agent no longer in the store is the bare id, in no team: only the
        org-wide roles reach it."""
        if scope == "team":
            team = session.get(Team, scope_id)
            return ApiResource.team(id=scope_id, org_id=org_id, name=team.name if team else "")
        if scope == "user":
            user = session.get(User, scope_id)
            return ApiResource.person(
                id=scope_id,
                org_id=org_id,
                team_id=user.team_id if user else None,
                role=user.role if user else "employee",
            )
        if scope == "agent":
            agent = session.get(Agent, scope_id)
            return ApiResource.agent(
                id=scope_id,
                org_id=org_id,
                owner_id=agent.owner_id if agent else "",
                team_id=agent.team_id if agent else None,
                name=agent.name if agent else "",
            )
        return ApiResource.org(org_id)

    @staticmethod
    def _info(session: Session, budget: Budget, name: str) -> BudgetInfo:
        window = window_start(budget.period, utcnow())
        counter = session.scalars(
            select(BudgetCounter).where(
                BudgetCounter.budget_id == budget.id, BudgetCounter.window_start == window
            )
        ).first()
        spent = (
            counter.spent
            if counter
            else spent_in_window(session, budget.scope, budget.scope_id, budget.metric, window)
        )
        reserved = counter.reserved if counter else 0
        state = "ok"
        if budget.soft_cap is not None and spent >= budget.soft_cap:
            state = "soft"
        if budget.hard_cap is not None and spent >= budget.hard_cap:
            state = "hard"
        metric = budget.metric
        return BudgetInfo(
            id=budget.id,
            scope=budget.scope,
            scope_id=budget.scope_id,
            name=name,
            metric=metric,
            period=budget.period,
            hard_cap=format_amount(metric, budget.hard_cap)
            if budget.hard_cap is not None
            else None,
            soft_cap=format_amount(metric, budget.soft_cap)
            if budget.soft_cap is not None
            else None,
            window_start=window,
            spent=format_amount(metric, spent),
            in_flight=format_amount(metric, reserved),
            state=state,
        )
