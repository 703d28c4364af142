"""One run per chat or mail message, and retries that hold no other message back.

Every message a trigger acts on is one unique ``inbound_deliveries`` row (agent, trigger,
message). When its run is created the row is inserted in the run's own transaction, so
it exists exactly when the run does, and two schedulers, a poll and a Slack event, or a
retried delivery start the message once.

A run that could not be created (the store blinked, a database error that outlasts the
poll) leaves a ``pending`` row instead, holding the run's input, written before the
trigger's watermark passes the message: later messages go on, and a crash loses nothing.
Pending messages are tried again at each poll once due, with back-off (``backoff``: one
minute, doubling, at most an hour); a retry's run *claims* the row in its transaction
(``pending`` -> ``started``, only if still pending), so two schedulers retrying at once
still start one run. A message not started within ``retry_for`` (the setting
``triggers.retry_hours``) is given up: the row is marked ``abandoned`` and audited
``trigger.abandoned`` with the reason. A refusal (``UserError``: the owner may no longer
run the agent) is the same at every attempt: the row is marked ``refused``, no run,
audited ``trigger.failed``.

Audit records: ``trigger.fired`` (with the run), ``trigger.deferred`` (once per message,
at its first failure), ``trigger.abandoned``, ``trigger.failed``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from meshclaw.audit.sink import AuditRecord
from meshclaw.errors import UserError
from meshclaw.ids import new_id
from meshclaw.platform import Platform
from meshclaw.store.models import Agent, User
from meshclaw.text import without_nul
from meshclaw.triggers.models import InboundDelivery

log = logging.getLogger(__name__)

PENDING, STARTED, REFUSED, ABANDONED = "pending", "started", "refused", "abandoned"
RETRY_FIRST = timedelta(minutes=1)
RETRY_MAX = timedelta(hours=1)
RETRY_BATCH = 20
"""Pending messages of one trigger tried per poll (the oldest first)."""


def backoff(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed try: 1 minute, doubling, at most 1 hour."""
    doublings: int = min(max(attempts, 1) - 1, 16)
    return min(RETRY_FIRST * (1 << doublings), RETRY_MAX)


class TriggerProblem(Exception):
    """A trigger cannot read or start now; the text is shown and audited (no secrets)."""


class _Settled(Exception):
    """The pending message was started, refused or given up meanwhile (another scheduler)."""


@dataclass(frozen=True, kw_only=True)
class Source:
    """Whose messages: one chat or mail trigger of one agent."""

    agent_id: str
    org_id: str
    owner_id: str
    trigger_key: str
    kind: str
    """``chat`` or ``mail`` (the runs' ``trigger``)."""


@dataclass(frozen=True, kw_only=True)
class _Pending:
    id: str
    message_key: str
    attempts: int
    run_input: str
    details: dict[str, Any]
    created_at: datetime


def _hours(span: timedelta) -> str:
    return f"{span.total_seconds() / 3600:g} h"


class Deliveries:
    """Starts the run of a message once; keeps, retries and gives up the ones that fail."""

    def __init__(
        self,
        platform: Platform,
        *,
        dispatch: Callable[[str], None] | None,
        clock: Callable[[], datetime],
    ) -> None:
        self.platform = platform
        self._db = platform.db
        self._dispatch = dispatch
        self._clock = clock
        self.retry_for = timedelta(hours=platform.settings.triggers.retry_hours)
        """How long a message whose run cannot be created is retried before it is given up."""

    # -- first try -----------------------------------------------------------------------

    def start(
        self, source: Source, owner: User, message_key: str, text: str, details: dict[str, Any]
    ) -> str | None:
        """Start the run for one message, once: its id, or None if the message was acted on
        before, was refused, or is kept ``pending`` for a retry. ``TriggerProblem`` only if
        not even the pending row could be written: the poll then stops before the message
        (its watermark does not pass it), so the next poll tries it again."""
        # A message is outside text: its NULs are replaced before anything is kept.
        key, text = without_nul(message_key)[:200], without_nul(text)
        if self.delivered(source, key):
            return None  # acted on before (another scheduler, an event, a pending retry)

        def record(session: Session, run_id: str) -> None:
            self._insert(session, source, key, run_id=run_id, status=STARTED)
            self._fired(session, source, run_id, key, details)

        try:
            return self._create(source, owner, text, record)
        except UserError as exc:
            try:
                with self._db.session() as session:
                    self._insert(session, source, key, run_id=None, status=REFUSED)
                    self._refused(session, source, key, exc)
            except IntegrityError:
                pass  # started meanwhile by another scheduler or an event
            return None
        except Exception as exc:
            if isinstance(exc, IntegrityError) and self.delivered(source, key):
                return None  # another scheduler or an event started it just now
            log.exception(
                "%s trigger of agent %s could not start a run", source.kind, source.agent_id
            )
            self._defer(
                source, key, text, details, f"its run could not be created ({type(exc).__name__})"
            )
            return None

    def _defer(
        self, source: Source, key: str, text: str, details: dict[str, Any], reason: str
    ) -> None:
        """Keep the message ``pending`` (given up at once when retries are off)."""
        now = self._clock()
        deadline = now + self.retry_for
        retries = self.retry_for > timedelta(0)
        kept = {
            "run_input": text,
            "details": details,
            "next_attempt_at": min(now + backoff(1), deadline),
        }
        try:
            with self._db.session() as session:
                self._insert(
                    session, source, key, run_id=None, status=PENDING if retries else ABANDONED,
                    attempts=1, error=reason, created_at=now, **(kept if retries else {}),
                )  # fmt: skip
                if retries:
                    until = f"retried until {deadline.isoformat(timespec='seconds')}"
                    deferred = {"message": key, "reason": f"{reason}; {until}"}
                    self._audit(session, "trigger.deferred", source, deferred)
                else:
                    why = f"{reason}; not retried (triggers.retry_hours is 0)"
                    given_up = {"message": key, "attempts": 1, "reason": why}
                    self._audit(session, "trigger.abandoned", source, given_up)
        except Exception as exc:
            if isinstance(exc, IntegrityError) and self.delivered(source, key):
                return  # another scheduler or an event acted on it meanwhile
            raise TriggerProblem(
                f"message {key}: {reason}, and it could not be kept for a retry "
                f"({type(exc).__name__}); it is tried again at the next poll"
            ) from None

    # -- retries -------------------------------------------------------------------------

    def retry_due(self, source: Source, owner: User) -> list[str]:
        """Try the trigger's pending messages that are due; the ids of the runs started."""
        now = self._clock()
        with self._db.session() as session:
            rows = session.execute(
                select(
                    InboundDelivery.id, InboundDelivery.message_key, InboundDelivery.attempts,
                    InboundDelivery.run_input, InboundDelivery.details, InboundDelivery.created_at,
                )
                .where(
                    InboundDelivery.agent_id == source.agent_id,
                    InboundDelivery.trigger_key == source.trigger_key,
                    InboundDelivery.status == PENDING,
                    InboundDelivery.next_attempt_at <= now,
                )
                .order_by(InboundDelivery.created_at, InboundDelivery.message_key)
                .limit(RETRY_BATCH)
            ).all()  # fmt: skip
        started: list[str] = []
        for row in rows:
            pending = _Pending(
                id=row.id, message_key=row.message_key, attempts=row.attempts,
                run_input=row.run_input or "", details=row.details or {},
                created_at=row.created_at,
            )  # fmt: skip
            run_id = self._retry(source, owner, pending, now)
            if run_id is not None:
                started.append(run_id)
        return started

    def _retry(self, source: Source, owner: User, pending: _Pending, now: datetime) -> str | None:
        def claim(session: Session, run_id: str) -> None:
            self._settle(session, pending.id, status=STARTED, run_id=run_id)
            details = pending.details | {"attempts": pending.attempts + 1}
            self._fired(session, source, run_id, pending.message_key, details)

        try:
            return self._create(source, owner, pending.run_input, claim)
        except _Settled:
            return None
        except UserError as exc:
            with self._db.session() as session:
                try:
                    self._settle(session, pending.id, status=REFUSED)
                except _Settled:
                    return None
                self._refused(session, source, pending.message_key, exc)
            return None
        except Exception as exc:
            log.exception("%s trigger of agent %s: retry failed", source.kind, source.agent_id)
            reason = f"its run could not be created ({type(exc).__name__})"
            self._failed_again(source, pending, reason, now)
            return None

    def _failed_again(self, source: Source, pending: _Pending, reason: str, now: datetime) -> None:
        attempts = pending.attempts + 1
        deadline = pending.created_at + self.retry_for
        with self._db.session() as session:
            if now >= deadline:
                self._give_up(session, source, pending.id, pending.message_key, attempts, reason)
                return
            session.execute(
                update(InboundDelivery)
                .where(InboundDelivery.id == pending.id, InboundDelivery.status == PENDING)
                .values(
                    attempts=attempts,
                    error=reason[:300],
                    next_attempt_at=min(now + backoff(attempts), deadline),
                )
            )

    def abandon_overdue(self) -> int:
        """Give up pending messages that nobody retried for an hour past their deadline: their
        trigger is gone (agent archived, trigger edited away) or cannot poll (no connector,
        no credential). The number given up."""
        now = self._clock()
        with self._db.session() as session:
            rows = session.execute(
                select(
                    InboundDelivery.id, InboundDelivery.agent_id, InboundDelivery.trigger_key,
                    InboundDelivery.message_key, InboundDelivery.attempts, InboundDelivery.error,
                    Agent.org_id, Agent.owner_id,
                )
                .join(Agent, Agent.id == InboundDelivery.agent_id)
                .where(
                    InboundDelivery.status == PENDING,
                    InboundDelivery.next_attempt_at <= now - RETRY_MAX,
                    InboundDelivery.created_at <= now - self.retry_for - RETRY_MAX,
                )
            ).all()  # fmt: skip
        given_up = 0
        for row in rows:
            source = Source(
                agent_id=row.agent_id, org_id=row.org_id, owner_id=row.owner_id,
                trigger_key=row.trigger_key, kind=row.trigger_key.split(":", 1)[0],
            )  # fmt: skip
            reason = f"{row.error or 'its run could not be created'}; its trigger no longer polls"
            with self._db.session() as session:
                given_up += self._give_up(
                    session, source, row.id, row.message_key, row.attempts, reason
                )
        return given_up

    def _give_up(
        self, session: Session, source: Source, row_id: str, key: str, attempts: int, reason: str
    ) -> int:
        """Mark a pending row ``abandoned`` and audit it, unless settled meanwhile (0)."""
        done = session.execute(
            update(InboundDelivery)
            .where(InboundDelivery.id == row_id, InboundDelivery.status == PENDING)
            .values(
                status=ABANDONED, attempts=attempts, error=reason[:300],
                next_attempt_at=None, run_input=None, details=None,
            )
        )  # fmt: skip
        if not done.rowcount:  # type: ignore[attr-defined]
            return 0
        log.warning("%s trigger of agent %s gave up message %s", source.kind, source.agent_id, key)
        why = f"gave up after {attempts} attempts in {_hours(self.retry_for)}: {reason}"
        given_up = {"message": key, "attempts": attempts, "reason": why}
        self._audit(session, "trigger.abandoned", source, given_up)
        return 1

    # -- rows and records ----------------------------------------------------------------

    def delivered(self, source: Source, key: str) -> bool:
        """The message has its row: started, refused, pending or given up."""
        with self._db.session() as session:
            found = session.scalar(
                select(InboundDelivery.id).where(
                    InboundDelivery.agent_id == source.agent_id,
                    InboundDelivery.trigger_key == source.trigger_key,
                    InboundDelivery.message_key == key,
                )
            )
        return found is not None

    def _create(
        self, source: Source, owner: User, text: str, also: Callable[[Session, str], None]
    ) -> str:
        caller = self.platform.accounts.caller_for(owner)
        info = self.platform.runs.create(
            caller, source.agent_id, text, trigger=source.kind, also=also
        )
        if self._dispatch is not None:
            self._dispatch(info.id)
        log.info("%s trigger of agent %s started run %s", source.kind, source.agent_id, info.id)
        return info.id

    def _insert(
        self, session: Session, source: Source, key: str, *, run_id: str | None, status: str,
        **values: Any,
    ) -> None:  # fmt: skip
        values.setdefault("created_at", self._clock())
        session.execute(
            insert(InboundDelivery).values(
                id=new_id("idl"), agent_id=source.agent_id, trigger_key=source.trigger_key,
                message_key=key, run_id=run_id, status=status, **values,
            )
        )  # fmt: skip

    def _settle(
        self, session: Session, row_id: str, *, status: str, run_id: str | None = None
    ) -> None:
        """Move a pending row to ``status``; ``_Settled`` if it is no longer pending."""
        done = session.execute(
            update(InboundDelivery)
            .where(InboundDelivery.id == row_id, InboundDelivery.status == PENDING)
            .values(
                status=status, run_id=run_id, next_attempt_at=None, run_input=None,
                details=None, error=None,
            )
        )  # fmt: skip
        if not done.rowcount:  # type: ignore[attr-defined]
            raise _Settled

    def _fired(
        self, session: Session, source: Source, run_id: str, key: str, details: dict[str, Any]
    ) -> None:
        record = {"run_id": run_id, "message": key} | details
        self._audit(session, "trigger.fired", source, record, outcome="ok")

    def _refused(self, session: Session, source: Source, key: str, exc: UserError) -> None:
        log.warning("%s trigger of agent %s refused: %s", source.kind, source.agent_id, exc)
        self._audit(session, "trigger.failed", source, {"message": key, "reason": str(exc)[:300]})

    def _audit(
        self,
        session: Session,
        action: str,
        source: Source,
        details: dict[str, Any],
        *,
        outcome: str = "error",
    ) -> None:
        self.platform.audit.append(
            session,
            AuditRecord(
                action=action,
                resource=f"agent:{source.agent_id}",
                outcome=outcome,
                org_id=source.org_id,
                actor_user_id=source.owner_id,
                actor_agent_id=source.agent_id,
                details={"trigger": source.kind}
                | {k: v for k, v in details.items() if v is not None},
            ),
        )
