"""Runs as records: create, claim, cancel, inspect. Execution lives in ``executor``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from meshclaw.accounts.service import Caller
from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.clock import utcnow
from meshclaw.errors import ConflictError, NotFoundError, UserError
from meshclaw.ids import new_id
from meshclaw.metering.prices import from_nano
from meshclaw.outcomes.models import Outcome
from meshclaw.policy.api import ApiResource
from meshclaw.spec.registry import AgentRegistry, agent_resource
from meshclaw.store.db import Database
from meshclaw.store.models import Agent, AgentVersion, Run, RunStep, UsageRecord
from meshclaw.text import without_nul

TRIGGERS = ("manual", "cron", "webhook", "chat", "mail", "api")
FINISHED = ("succeeded", "failed", "cancelled")
STATUSES = ("queued", "running", "waiting_approval", *FINISHED)
"""Every status a run can be in."""
SETTLE_GRACE = timedelta(minutes=10)
"""How long after its end a run's own executor has to settle its outcomes before the
sweep (``Platform.settle_outcomes``) takes it for left behind: far longer than recording
takes (a few verification reads), so the two never race in practice."""


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    id: str
    agent_id: str
    agent_name: str
    agent_version: int
    user_id: str
    trigger: str
    status: str
    input: str
    output: str | None
    error: str | None
    step_count: int
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    outcomes_settled_at: datetime | None = None
    """When the ended run's outcomes were recorded: from then on every outcome it
    produced can be read (with its feedback requests queued). None while it runs, and for
    a moment after its end; a run whose worker died in that moment is settled later by
    the sweep (``Platform.settle_outcomes``)."""
    outcomes_error: str | None = None
    """Why recording the outcomes failed; the run is settled all the same."""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def settled(self) -> bool:
        """Finished, and its outcomes recorded: nothing about the run changes any more."""
        return self.finished and self.outcomes_settled_at is not None


@dataclass(frozen=True, kw_only=True)
class StepInfo:
    seq: int
    kind: str
    name: str
    status: str
    decision: str | None
    error: str | None
    request: dict[str, Any]
    response: dict[str, Any] | None
    cost_usd: Decimal
    started_at: datetime
    ended_at: datetime | None


class RunService:
    def __init__(self, db: Database, agents: AgentRegistry, audit: AuditSink) -> None:
        self._db = db
        self._agents = agents
        self._audit = audit

    def create(
        self,
        caller: Caller,
        agent_name_or_id: str,
        user_input: str = "",
        trigger: str = "manual",
        *,
        claimed: bool = False,
        also: Callable[[Session, str], None] | None = None,
    ) -> RunInfo:
        """Queue a run of the agent's latest version.

        ``claimed=True`` creates it already ``running`` for a caller that executes it
        itself (the CLI), so no worker sharing the store can pick it up first. ``also``
        writes in the run's own transaction (given the session and the new run's id): a
        trigger's record of what started the run commits with it or not at all.
        """
        if trigger not in TRIGGERS:
            raise ConflictError(f"unknown trigger {trigger!r}; one of {', '.join(TRIGGERS)}")
        agent = self._agents.get(caller, agent_name_or_id)
        self._agents.access.require(
            caller,
            "run.start",
            agent_resource(agent),
            message=f"agent {agent.name!r} belongs to someone else",
        )
        if agent.archived_at is not None:
            raise ConflictError(
                f"agent {agent.name!r} is archived: it starts no runs until it is restored"
            )
        _, version = self._agents.version(caller, agent.id, agent.version)
        run = Run(
            id=new_id("run"),
            org_id=agent.org_id,
            team_id=agent.team_id,
            user_id=agent.owner_id,
            started_by=caller.user_id,
            agent_id=agent.id,
            agent_version_id=version.id,
            agent_version=agent.version,
            trigger=trigger,
            input=without_nul(user_input),  # a trigger's message may hold any text
            status="running" if claimed else "queued",
            started_at=utcnow() if claimed else None,
        )
        with self._db.session() as session:
            session.add(run)
            if also is not None:
                also(session, run.id)
            self._audit.append(
                session,
                AuditRecord(
                    action="run.create",
                    resource=f"run:{run.id}",
                    outcome="ok",
                    org_id=agent.org_id,
                    actor_user_id=caller.user_id,
                    actor_agent_id=agent.id,
                    details={"agent_version": agent.version, "trigger": trigger},
                ),
            )
        return self.get(caller, run.id)

    def claim(self, run_id: str) -> bool:
        """Atomically move a queued run to running; exactly one worker wins."""
        with self._db.session() as session:
            result = session.execute(
                update(Run)
                .where(Run.id == run_id, Run.status == "queued")
                .values(status="running", started_at=utcnow())
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def queued(self, limit: int = 10) -> list[str]:
        with self._db.session() as session:
            return list(
                session.scalars(
                    select(Run.id)
                    .where(Run.status == "queued")
                    .order_by(Run.created_at)
                    .limit(limit)
                ).all()
            )

    def cancel(self, caller: Caller, run_id: str) -> RunInfo:
        with self._db.session() as session:
            run = self._find(session, caller, run_id, "run.cancel")
            if run.status in FINISHED:
                raise ConflictError(f"run {run_id} already {run.status}")
            if run.status in ("queued", "waiting_approval"):  # no worker holds it
                waiting = run.status == "waiting_approval"
                run.status, run.ended_at, run.error = (
                    "cancelled",
                    utcnow(),
                    "cancelled while waiting for approval" if waiting else "cancelled before start",
                )
                if not self._wrote(session, run.id):
                    run.outcomes_settled_at = run.ended_at  # no write: no outcome to record
                # Else the sweep records the outcomes of its writes before the approval.
            run.cancel_requested = True
            self._audit.append(
                session,
                AuditRecord(
                    action="run.cancel",
                    resource=f"run:{run.id}",
                    outcome="ok",
                    org_id=run.org_id,
                    actor_user_id=caller.user_id,
                    actor_agent_id=run.agent_id,
                ),
            )
        return self.get(caller, run_id)

    def get(self, caller: Caller, run_id: str) -> RunInfo:
        with self._db.session() as session:
            return self._info(session, self._find(session, caller, run_id))

    def outcome_ids(self, caller: Caller, run_id: str) -> list[str]:
        """The ids of the outcomes the run recorded, oldest first, if the caller may read
        the run; whether they may read each outcome is ``OutcomeService.get``'s to say."""
        with self._db.session() as session:
            self._find(session, caller, run_id)
            return list(
                session.scalars(
                    select(Outcome.id)
                    .where(Outcome.run_id == run_id)
                    .order_by(Outcome.created_at, Outcome.id)
                )
            )

    def unsettled(
        self, *, ended_before: datetime, org_id: str | None = None, limit: int = 100
    ) -> list[str]:
        """Ended runs (of the org, or every org) whose outcomes were still not settled
        before ``ended_before``: their executor died between the run's end and its
        outcomes, the run was cancelled while waiting for an approval, or the lease
        sweeper gave up on it. Oldest first; the partial index holds only unsettled runs."""
        query = (
            select(Run.id)
            .where(  # an end time means a finished status; no status test, which
                # would lead SQLite to the status index instead of the partial one
                Run.outcomes_settled_at.is_(None),
                Run.ended_at.is_not(None),
                Run.ended_at < ended_before,
            )
            .order_by(Run.ended_at)
            .limit(limit)
        )
        if org_id is not None:
            query = query.where(Run.org_id == org_id)
        with self._db.session() as session:
            return list(session.scalars(query))

    def find(
        self,
        caller: Caller,
        *,
        agent: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
        mine: bool = False,
    ) -> list[RunInfo]:
        """Runs of the caller's own agents (admins: the whole org, unless ``mine``)."""
        if status is not None and status not in STATUSES:
            raise UserError(f"unknown run status {status!r}: one of {', '.join(STATUSES)}")
        with self._db.session() as session:
            query = select(Run).where(Run.org_id == caller.org_id)
            if mine or not self._sees_whole_org(caller):
                query = query.where(Run.user_id == caller.user_id)
            if agent is not None:
                query = query.join(Agent, Agent.id == Run.agent_id).where(
                    (Agent.name == agent) | (Agent.id == agent)
                )
            if status is not None:
                query = query.where(Run.status == status)
            query = query.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit).offset(offset)
            return self._infos(session, list(session.scalars(query).all()))

    def steps(self, caller: Caller, run_id: str, after_seq: int = 0) -> list[StepInfo]:
        with self._db.session() as session:
            self._find(session, caller, run_id)
        return self.steps_unchecked(run_id, after_seq)

    def steps_unchecked(self, run_id: str, after_seq: int = 0) -> list[StepInfo]:
        """Steps without an access check: for the executor's own follower only."""
        with self._db.session() as session:
            rows = session.scalars(
                select(RunStep)
                .where(RunStep.run_id == run_id, RunStep.seq > after_seq)
                .order_by(RunStep.seq)
            ).all()
            return [
                StepInfo(
                    seq=s.seq,
                    kind=s.kind,
                    name=s.name,
                    status=s.status,
                    decision=s.decision,
                    error=s.error,
                    request=s.request,
                    response=s.response,
                    cost_usd=from_nano(s.cost_nano_usd),
                    started_at=s.started_at,
                    ended_at=s.ended_at,
                )
                for s in rows
            ]

    def _find(self, session: Session, caller: Caller, run_id: str, action: str = "run.read") -> Run:
        """The run if the policy lets ``caller`` do ``action`` on it; else "not found"
        (a run someone may not see does not exist for them)."""
        run = session.get(Run, run_id)
        if run is None or run.org_id != caller.org_id:
            raise NotFoundError(f"no run {run_id!r}")
        if not self._agents.access.authorize_api(caller, action, run_resource(run)).allowed:
            raise NotFoundError(f"no run {run_id!r}")
        return run

    @staticmethod
    def _wrote(session: Session, run_id: str) -> bool:
        """Whether the run made a tool call that went through (only those can be writes
        with outcomes; reads cannot be told apart here, and are rare before a hold)."""
        return (
            session.scalar(
                select(RunStep.id)
                .where(RunStep.run_id == run_id, RunStep.kind == "tool", RunStep.status == "ok")
                .limit(1)
            )
            is not None
        )

    def _sees_whole_org(self, caller: Caller) -> bool:
        """Whether the policy lets ``caller`` read runs of agents owned by others."""
        probe = ApiResource.run(
            id="run:any", org_id=caller.org_id, owner_id="user:other", agent_id="agent:any"
        )
        return self._agents.access.authorize_api(caller, "run.read", probe).allowed

    @classmethod
    def _info(cls, session: Session, run: Run) -> RunInfo:
        return cls._infos(session, [run])[0]

    @staticmethod
    def _infos(session: Session, runs: list[Run]) -> list[RunInfo]:
        """The runs with their usage totals and agent names: a fixed number of queries
        (one ``GROUP BY`` each), not a few per run."""
        if not runs:
            return []
        ids = [run.id for run in runs]
        totals = {
            run_id: (int(inp), int(out), int(nano))
            for run_id, inp, out, nano in session.execute(
                select(
                    UsageRecord.run_id,
                    func.coalesce(func.sum(UsageRecord.input_tokens), 0),
                    func.coalesce(func.sum(UsageRecord.output_tokens), 0),
                    func.coalesce(func.sum(UsageRecord.cost_nano_usd), 0),
                )
                .where(UsageRecord.run_id.in_(ids))
                .group_by(UsageRecord.run_id)
            )
        }
        names: dict[str, str] = {
            agent_id: name
            for agent_id, name in session.execute(
                select(Agent.id, Agent.name).where(Agent.id.in_({run.agent_id for run in runs}))
            )
        }
        live = [run.id for run in runs if run.status not in FINISHED]
        steps: dict[str, int] = {}
        if live:  # a finished run's step count is final; a live one's is counted
            steps = {
                run_id: int(n)
                for run_id, n in session.execute(
                    select(RunStep.run_id, func.count(RunStep.id))
                    .where(RunStep.run_id.in_(live))
                    .group_by(RunStep.run_id)
                )
            }
        out = []
        for run in runs:
            inp, out_tokens, nano = totals.get(run.id, (0, 0, 0))
            out.append(
                RunInfo(
                    id=run.id,
                    agent_id=run.agent_id,
                    agent_name=names.get(run.agent_id, ""),
                    agent_version=run.agent_version,
                    user_id=run.user_id,
                    trigger=run.trigger,
                    status=run.status,
                    input=run.input,
                    output=run.output,
                    error=run.error,
                    step_count=run.step_count if run.status in FINISHED else steps.get(run.id, 0),
                    created_at=run.created_at,
                    started_at=run.started_at,
                    ended_at=run.ended_at,
                    input_tokens=inp,
                    output_tokens=out_tokens,
                    cost_usd=from_nano(nano),
                    outcomes_settled_at=run.outcomes_settled_at,
                    outcomes_error=run.outcomes_error,
                )
            )
        return out


def run_resource(run: Run) -> ApiResource:
    """A run as the subject of an API action."""
    return ApiResource.run(
        id=run.id,
        org_id=run.org_id,
        owner_id=run.user_id,
        agent_id=run.agent_id,
        started_by=run.started_by,
        team_id=run.team_id,
    )


def version_yaml(session: Session, version_id: str) -> str:
    row = session.get(AgentVersion, version_id)
    if row is None:
        raise NotFoundError(f"no agent version {version_id!r}")
    return row.spec_yaml
