"""Cron triggers from agent specs, fired once per minute across any number of schedulers.

Celery beat (``meshclaw scheduler``) calls ``CronFirer.tick`` every few seconds. Two
things keep a schedule from firing twice when several scheduler replicas run:

1. a leader lease (a row in ``scheduler_leases``, taken and renewed with conditional
   updates): only the leader scans the specs; if it dies, another replica takes over
   when the lease expires and continues from the leader's watermark;
2. a unique row per ``(agent, schedule, minute)`` in ``cron_firings``, inserted in the
   run's own transaction: even two leaders (a paused one and its successor) fire once.

A missed minute (every scheduler down) is fired late, up to ``CATCH_UP`` back; older
ones are skipped rather than started in a burst. A firing whose run could not be created
(the store blinked) leaves no row, and the watermark stays before its minute, so later
ticks try it again, for as long as it is within ``CATCH_UP``. It holds nothing back: the
same schedule's later minutes (and every other schedule) still fire on time, and when the
held-back watermark makes a tick scan them again, their firing rows skip them. A refusal
(the owner may no longer run the agent) is the same at every attempt: it is recorded as a
firing without a run and not retried. A due minute the window passes without a firing
row is dropped, never silently: one ``trigger.dropped`` audit record per agent and
schedule (how many minutes, the first and the last), written with the watermark that
passes them. Expressions are evaluated in UTC with ``celery.schedules.crontab`` semantics
(day-of-month and day-of-week must both match).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery.schedules import crontab
from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from meshclaw.audit.sink import AuditRecord
from meshclaw.clock import utcnow
from meshclaw.errors import UserError
from meshclaw.ids import new_id
from meshclaw.platform import Platform
from meshclaw.spec.loader import parse_stored_spec
from meshclaw.spec.models import AgentSpec, CronTrigger
from meshclaw.store.models import Agent, AgentVersion, User
from meshclaw.triggers.models import CronFiring, SchedulerLease

log = logging.getLogger(__name__)

LEADER = "cron"
LEASE = timedelta(seconds=60)
CATCH_UP = timedelta(minutes=10)
MINUTE = timedelta(minutes=1)
DROP_SCAN = timedelta(days=7)
"""How far back dropped minutes are looked for and audited after a long outage."""
DROPPED = (
    "not fired within the 10-minute catch-up: its run could not be created, "
    "or no scheduler was running"
)


class _Retry(Exception):
    """A firing's run could not be created; a later tick tries the minute again."""


@dataclass(frozen=True)
class CronExpr:
    """A five-field cron expression (minute hour day-of-month month day-of-week)."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]
    """0 = Sunday, as in cron."""

    @classmethod
    def parse(cls, expression: str) -> CronExpr:
        minute, hour, dom, month, dow = expression.split()
        tab = crontab(
            minute=minute, hour=hour, day_of_month=dom, month_of_year=month, day_of_week=dow
        )
        return cls(
            frozenset(tab.minute),
            frozenset(tab.hour),
            frozenset(tab.day_of_month),
            frozenset(tab.month_of_year),
            frozenset(tab.day_of_week),
        )

    def matches(self, at: datetime) -> bool:
        return (
            at.minute in self.minutes
            and at.hour in self.hours
            and at.day in self.days_of_month
            and at.month in self.months
            and at.isoweekday() % 7 in self.days_of_week
        )


def _minutes(after: datetime, until: datetime) -> Iterator[datetime]:
    at = after + MINUTE
    while at <= until:
        yield at
        at += MINUTE


def _floor(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


class CronFirer:
    """Fires the cron triggers of every agent's current spec, as the leader only."""

    def __init__(
        self,
        platform: Platform,
        *,
        dispatch: Callable[[str], None] | None,
        owner: str,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._platform = platform
        self._db = platform.db
        self._dispatch = dispatch
        """Sends a new run to the workers (None: the in-process worker polls for it)."""
        self.owner = owner
        self._clock = clock

    def lead(self, now: datetime) -> datetime | None:
        """Take or renew the leader lease; its watermark if we lead, else None."""
        with self._db.session() as session:
            renewed = session.execute(
                update(SchedulerLease)
                .where(
                    SchedulerLease.name == LEADER,
                    or_(SchedulerLease.owner == self.owner, SchedulerLease.expires_at < now),
                )
                .values(owner=self.owner, expires_at=now + LEASE)
            )
            if renewed.rowcount:  # type: ignore[attr-defined]
                row = session.get(SchedulerLease, LEADER)
                assert row is not None
                return row.watermark or _floor(now) - MINUTE
        try:
            with self._db.session() as session:
                session.add(SchedulerLease(name=LEADER, owner=self.owner, expires_at=now + LEASE))
        except IntegrityError:
            return None  # another replica leads
        return _floor(now) - MINUTE

    def tick(self) -> list[str]:
        """Fire what is due since the last tick; the ids of the runs started."""
        now = self._clock()
        watermark = self.lead(now)
        if watermark is None:
            return []
        until = _floor(now)
        start = _floor(max(watermark, until - CATCH_UP))
        agents = self._cron_agents() if until > watermark else []
        started: list[str] = []
        # The watermark moves here, or to before the earliest firing to try again: the
        # minutes after it that did fire are skipped next time by their firing rows.
        done = until
        for agent_id, owner, spec in agents:
            for trigger in spec.triggers:
                if not isinstance(trigger, CronTrigger):
                    continue
                expr = CronExpr.parse(trigger.schedule)
                for minute in _minutes(start, until):
                    if expr.matches(minute):
                        try:
                            run_id = self._fire(agent_id, owner, trigger, minute)
                        except _Retry:  # later minutes still fire; this one is retried
                            done = min(done, minute - MINUTE)
                            continue
                        if run_id is not None:
                            started.append(run_id)
        dropped = self._dropped(agents, watermark, start) if start > watermark else []
        with self._db.session() as session:
            moved = session.execute(
                update(SchedulerLease)
                .where(SchedulerLease.name == LEADER, SchedulerLease.owner == self.owner)
                .values(watermark=max(done, watermark))
            )
            if moved.rowcount:  # type: ignore[attr-defined]
                for record in dropped:  # with the watermark that passes them: audited once
                    self._platform.audit.append(session, record)
        return started

    def _dropped(
        self, agents: list[tuple[str, User, AgentSpec]], after: datetime, through: datetime
    ) -> list[AuditRecord]:
        """``trigger.dropped`` records of the minutes in ``(after, through]`` that were due and
        never fired: the catch-up window has passed them (their run could not be created,
        or no scheduler ran), per agent and schedule."""
        after = max(after, through - DROP_SCAN)
        records: list[AuditRecord] = []
        for agent_id, owner, spec in agents:
            for trigger in spec.triggers:
                if not isinstance(trigger, CronTrigger):
                    continue
                expr = CronExpr.parse(trigger.schedule)
                due = [m for m in _minutes(after, through) if expr.matches(m)]
                if not due:
                    continue
                fired = self._fired_between(agent_id, trigger, due[0], due[-1])
                missed = [m for m in due if m not in fired]
                if not missed:
                    continue
                log.warning(
                    "cron %r of agent %s: %d minute(s) dropped", trigger.schedule, agent_id,
                    len(missed),
                )  # fmt: skip
                records.append(
                    AuditRecord(
                        action="trigger.dropped",
                        resource=f"agent:{agent_id}",
                        outcome="error",
                        org_id=owner.org_id,
                        actor_user_id=owner.id,
                        actor_agent_id=agent_id,
                        details={
                            "trigger": "cron",
                            "schedule": trigger.schedule,
                            "minutes": len(missed),
                            "first": missed[0].isoformat(),
                            "last": missed[-1].isoformat(),
                            "reason": DROPPED,
                        },
                    )
                )
        return records

    def _fired_between(
        self, agent_id: str, trigger: CronTrigger, first: datetime, last: datetime
    ) -> set[datetime]:
        with self._db.session() as session:
            return set(
                session.scalars(
                    select(CronFiring.fire_at).where(
                        CronFiring.agent_id == agent_id,
                        CronFiring.trigger_key == trigger.schedule,
                        CronFiring.fire_at >= first,
                        CronFiring.fire_at <= last,
                    )
                )
            )

    def _fired(self, agent_id: str, trigger: CronTrigger, at: datetime) -> bool:
        with self._db.session() as session:
            found = session.scalar(
                select(CronFiring.id).where(
                    CronFiring.agent_id == agent_id,
                    CronFiring.trigger_key == trigger.schedule,
                    CronFiring.fire_at == at,
                )
            )
        return found is not None

    def _cron_agents(self) -> list[tuple[str, User, AgentSpec]]:
        with self._db.session() as session:
            rows = session.execute(
                select(Agent.id, AgentVersion.spec_yaml, User)
                .join(
                    AgentVersion,
                    (AgentVersion.agent_id == Agent.id)
                    & (AgentVersion.version == Agent.latest_version),
                )
                .join(User, User.id == Agent.owner_id)
                .where(Agent.archived_at.is_(None), AgentVersion.spec_yaml.contains("cron"))
            ).all()
        agents = []
        for agent_id, spec_yaml, owner in rows:
            try:
                agents.append((agent_id, owner, parse_stored_spec(spec_yaml)))
            except Exception:  # a stored spec always parsed once; never stop the others
                log.exception("agent %s: stored spec does not parse", agent_id)
        return agents

    def _fire(self, agent_id: str, owner: User, trigger: CronTrigger, at: datetime) -> str | None:
        """Start the run of one minute, once: None if it fired before (or was refused);
        ``_Retry`` if the run could not be created (nothing was written)."""

        def record(session: Session, run_id: str | None) -> None:
            session.execute(
                insert(CronFiring).values(
                    id=new_id("cfr"), agent_id=agent_id, trigger_key=trigger.schedule,
                    fire_at=at, run_id=run_id, created_at=utcnow(),
                )
            )  # fmt: skip

        try:
            if self._fired(agent_id, trigger, at):
                return None  # this minute already fired (another scheduler)
        except SQLAlchemyError:
            log.exception("cron trigger of agent %s: the store did not answer", agent_id)
            raise _Retry from None
        caller = self._platform.accounts.caller_for(owner)
        try:
            info = self._platform.runs.create(
                caller, agent_id, trigger.input or "", trigger="cron", also=record
            )
        except UserError as exc:  # the same at every attempt: the minute is settled
            log.warning("cron trigger of agent %s refused: %s", agent_id, exc)
            try:
                with self._db.session() as session:
                    record(session, None)
            except IntegrityError:
                pass
            return None
        except Exception as exc:
            if isinstance(exc, IntegrityError) and self._fired(agent_id, trigger, at):
                return None  # another scheduler fired it just now
            log.exception("cron trigger of agent %s could not start a run", agent_id)
            raise _Retry from None
        if self._dispatch is not None:
            try:
                self._dispatch(info.id)
            except Exception:  # the run is queued: the lease sweeper sends it on later
                log.exception("cron run %s was created but not handed to a worker", info.id)
        log.info("cron %r of agent %s fired run %s", trigger.schedule, agent_id, info.id)
        return info.id
