"""Run leases: how scale-out workers share runs without running one twice or losing one.

A worker that claims a run holds a *lease* on it: its name (``lease_owner``) and an
expiry (``lease_expires_at``), renewed by a heartbeat while the run executes. If the
worker dies (``kill -9``, a lost machine), the lease runs out and the run can be claimed
again, by a redelivered broker message or by the sweeper, and the next worker continues
it from its persisted steps (``runtime.resume``): finished steps are not repeated, and a
tool step cut off mid-call is re-run with the same idempotency key.

Every change is one conditional ``UPDATE``, so exactly one worker wins a claim on any
engine. A worker whose lease was taken over learns it at its next heartbeat and stops;
until then every write it tries for the run is fenced out (``runtime.steps.Fence``: the
lease's owner and claim number, checked under the run row's lock in each transaction), so
a call it finishes late is neither stored, metered nor audited. The in-process worker and
the CLI keep using ``RunService.claim`` (no lease: their runs end with their process).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update

from meshclaw.clock import utcnow
from meshclaw.store.db import Database
from meshclaw.store.models import Run

log = logging.getLogger(__name__)


def worker_name() -> str:
    """Unique per process: host, pid and a random suffix (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, kw_only=True)
class SweepResult:
    requeued: list[str]
    """Runs whose worker's lease expired: queued again, to be continued elsewhere."""
    redeliver: list[str]
    """Runs to send to the broker (again): requeued ones and queued ones not picked up."""
    abandoned: list[str]
    """Runs that lost their worker ``max_attempts`` times: failed, not retried forever."""


class Leases:
    """Claims, heartbeats and the sweep, over the ``runs`` table."""

    def __init__(
        self,
        db: Database,
        *,
        ttl_seconds: float = 30.0,
        max_attempts: int = 5,
        redeliver_after_seconds: float | None = None,
    ) -> None:
        self._db = db
        self.ttl = timedelta(seconds=ttl_seconds)
        self.max_attempts = max_attempts
        self.redeliver_after = timedelta(seconds=redeliver_after_seconds or 4 * ttl_seconds)
        """A queued run not claimed this long after it was sent is sent again."""

    def claim(self, run_id: str, owner: str) -> Lease | None:
        """Take a queued run, or a running one whose lease expired; None if another has it."""
        now = utcnow()
        with self._db.session() as session:
            result = session.execute(
                update(Run)
                .where(
                    Run.id == run_id,
                    Run.attempts < self.max_attempts,
                    or_(
                        Run.status == "queued",
                        and_(
                            Run.status == "running",
                            Run.lease_owner.is_not(None),
                            Run.lease_expires_at < now,
                        ),
                    ),
                )
                .values(
                    status="running",
                    started_at=func.coalesce(Run.started_at, now),
                    lease_owner=owner,
                    lease_expires_at=now + self.ttl,
                    attempts=Run.attempts + 1,
                )
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return None
            attempt = session.scalar(select(Run.attempts).where(Run.id == run_id))
        return Lease(self, run_id, owner, attempt=int(attempt or 0))

    def renew(self, run_id: str, owner: str) -> bool:
        """Extend the lease; False if it is no longer ours (taken over, or the run ended)."""
        with self._db.session() as session:
            result = session.execute(
                update(Run)
                .where(Run.id == run_id, Run.lease_owner == owner, Run.status == "running")
                .values(lease_expires_at=utcnow() + self.ttl)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def renew_all(self, owner: str) -> int:
        """Extend every lease ``owner`` holds (a worker process's heartbeat); how many."""
        with self._db.session() as session:
            result = session.execute(
                update(Run)
                .where(Run.lease_owner == owner, Run.status == "running")
                .values(lease_expires_at=utcnow() + self.ttl)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def release(self, run_id: str, owner: str) -> bool:
        """Hand a run back unfinished (graceful shutdown): it may be claimed at once."""
        with self._db.session() as session:
            result = session.execute(
                update(Run)
                .where(Run.id == run_id, Run.lease_owner == owner, Run.status == "running")
                .values(status="queued", lease_owner=None, lease_expires_at=utcnow())
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def mark_sent(self, run_ids: list[str]) -> None:
        """Record that queued runs were sent to the broker: redeliver if still unclaimed."""
        if not run_ids:
            return
        with self._db.session() as session:
            session.execute(
                update(Run)
                .where(Run.id.in_(run_ids), Run.status == "queued")
                .values(lease_expires_at=utcnow() + self.redeliver_after)
            )

    def sweep(self, limit: int = 500) -> SweepResult:
        """Requeue runs whose lease expired and say which queued runs to send again."""
        now = utcnow()
        requeued: list[str] = []
        abandoned: list[str] = []
        with self._db.session() as session:
            expired = session.execute(
                select(Run.id, Run.attempts, Run.lease_owner)
                .where(
                    Run.status == "running",
                    Run.lease_owner.is_not(None),
                    Run.lease_expires_at < now,
                )
                .order_by(Run.lease_expires_at)
                .limit(limit)
            ).all()
            for run_id, attempts, owner in expired:
                gone = attempts >= self.max_attempts
                values: dict[str, object] = (
                    {
                        "status": "failed",
                        "ended_at": now,
                        "error": f"abandoned: its worker was lost {attempts} times",
                    }
                    if gone
                    else {"status": "queued", "lease_owner": None, "lease_expires_at": now}
                )
                result = session.execute(
                    update(Run)
                    .where(
                        Run.id == run_id,
                        Run.status == "running",
                        Run.lease_owner == owner,
                        Run.lease_expires_at < now,
                    )
                    .values(**values)
                )
                if result.rowcount:  # type: ignore[attr-defined]
                    (abandoned if gone else requeued).append(run_id)
            stale = session.scalars(
                select(Run.id)
                .where(
                    Run.status == "queued",
                    or_(
                        Run.lease_expires_at < now,
                        and_(
                            Run.lease_expires_at.is_(None),
                            Run.created_at < now - self.redeliver_after,
                        ),
                    ),
                )
                .order_by(Run.created_at)
                .limit(limit)
            ).all()
        redeliver = list(dict.fromkeys([*requeued, *stale]))
        self.mark_sent(redeliver)
        for run_id in requeued:
            log.warning("run %s lost its worker; queued again to continue", run_id)
        for run_id in abandoned:
            log.error("run %s abandoned after %d lost workers", run_id, self.max_attempts)
        return SweepResult(requeued=requeued, redeliver=redeliver, abandoned=abandoned)

    def expires_at(self, run_id: str) -> datetime | None:
        with self._db.session() as session:
            return session.scalar(select(Run.lease_expires_at).where(Run.id == run_id))


class Lease:
    """A held lease; ``keep()`` heartbeats until cancelled and returns if it is lost.

    Satisfies ``runtime.executor.RunLease``.
    """

    def __init__(self, leases: Leases, run_id: str, owner: str, *, attempt: int) -> None:
        self._leases = leases
        self.run_id = run_id
        self.owner = owner
        self.attempt = attempt
        """Which claim of the run this is: writes are fenced on it and ``owner``."""

    async def keep(self) -> None:
        interval = self._leases.ttl.total_seconds() / 3
        deadline = utcnow() + self._leases.ttl
        while True:
            await asyncio.sleep(interval)
            try:
                held = await asyncio.to_thread(self._leases.renew, self.run_id, self.owner)
            except Exception:  # the store blinked: keep trying until the lease would lapse
                log.warning("could not renew the lease on %s", self.run_id, exc_info=True)
                if utcnow() >= deadline:
                    return
                continue
            if not held:
                log.warning("lost the lease on run %s; stopping it here", self.run_id)
                return
            deadline = utcnow() + self._leases.ttl

    def release(self) -> bool:
        return self._leases.release(self.run_id, self.owner)
