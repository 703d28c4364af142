"""Scale-out workers on Celery: the broker carries run ids, the store holds the truth.

A run is sent to the broker as ``execute_run(run_id)``. The worker that receives it
claims the run's lease (``workers.leases``) and executes it; a duplicate message, or one
for a run someone else holds, is dropped after one conditional ``UPDATE``. The broker
settings make a killed worker lose nothing:

- ``task_acks_late`` + ``task_reject_on_worker_lost``: the message is acknowledged only
  after the run ended, and given back if the worker process dies;
- ``worker_prefetch_multiplier = 1``: a worker reserves no more runs than it executes;
- Redis ``visibility_timeout`` is twice the lease, so an unacknowledged message comes back
  soon after its worker stopped heartbeating (RabbitMQ gives it back when the connection
  drops);
- and the sweeper (``workers.scheduler``) re-sends runs whose lease expired, whatever
  happened to their message.

Beat also sends ``outcomes_recheck`` every ``outcomes_recheck_seconds``: a worker runs
every org's due outcome durability re-checks and silence acceptances
(``OutcomeService.recheck_due``). It goes to a worker, not the beat process, because a
re-check reads connectors (slow, unlike the sweep); the message expires after one
interval, so a backlog never stacks up copies, and ``recheck_due`` claims each outcome
before judging it, so two copies never judge one outcome twice.

Likewise ``integrity_scan`` every ``integrity_scan_hours``: a worker scans every org's
last weeks (``integrity.live``); a second copy only refreshes the findings it opened.

Tasks run in Celery's ``threads`` pool: each task runs one run in its own event loop, and
``kill -9`` of a worker takes all of its runs with it (no orphaned children).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import threading
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.signals import worker_shutting_down

from meshclaw.config import Settings
from meshclaw.metering.rollup import UsageRollup
from meshclaw.platform import Platform
from meshclaw.runtime.executor import RunEnd
from meshclaw.workers.leases import Lease, Leases, worker_name

log = logging.getLogger(__name__)

RUN_QUEUE = "meshclaw.runs"
EXECUTE_RUN = "meshclaw.execute_run"
SWEEP = "meshclaw.sweep"
CRON_TICK = "meshclaw.cron_tick"
CRON_TICK_SECONDS = 15.0
OUTCOMES_RECHECK = "meshclaw.outcomes_recheck"
DELIVER_NOTIFICATIONS = "meshclaw.deliver_notifications"
ROLL_UP_USAGE = "meshclaw.roll_up_usage"
AUDIT_CHECKPOINT = "meshclaw.audit_checkpoint"
INTEGRITY_SCAN = "meshclaw.integrity_scan"

PlatformFactory = Callable[[Settings], Platform]


def default_platform(settings: Settings) -> Platform:
    platform = Platform(settings)
    platform.start_embedded_model_server()
    return platform


def celery_config(settings: Settings, queue: str = RUN_QUEUE) -> dict[str, Any]:
    """Celery settings for MeshClaw's runs (see the module docstring for why)."""
    lease = settings.lease_seconds
    config: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": queue,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A run that raised was recorded as failed in the store: do not redeliver it.
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_hijack_root_logger": False,
        "enable_utc": True,
        "timezone": "UTC",
        "beat_schedule": {
            "meshclaw-sweep": {"task": SWEEP, "schedule": max(lease / 3, 0.5)},
            "meshclaw-cron": {"task": CRON_TICK, "schedule": CRON_TICK_SECONDS},
        },
    }
    periodic = (
        ("meshclaw-outcomes-recheck", OUTCOMES_RECHECK, settings.outcomes_recheck_seconds),
        ("meshclaw-notifications", DELIVER_NOTIFICATIONS, settings.notify_seconds),
        ("meshclaw-usage-rollup", ROLL_UP_USAGE, settings.usage_rollup_seconds),
        ("meshclaw-audit-checkpoint", AUDIT_CHECKPOINT, settings.audit.schedule_seconds()),
        ("meshclaw-integrity-scan", INTEGRITY_SCAN, settings.integrity_scan_hours * 3600),
    )
    for entry, task_name, every in periodic:
        if every > 0:  # to a worker (they read connectors or sum days); stale copies expire
            config["beat_schedule"][entry] = {
                "task": task_name,
                "schedule": every,
                "options": {"queue": queue, "expires": every},
            }
    if (settings.broker_url or "").startswith(("redis://", "rediss://")):
        config["broker_transport_options"] = {"visibility_timeout": max(2, math.ceil(2 * lease))}
    return config


class WorkerRuntime:
    """What one worker process shares between its task threads: platform, leases, name."""

    def __init__(self, settings: Settings, platform_factory: PlatformFactory) -> None:
        self.settings = settings
        self.name = worker_name()
        self._factory = platform_factory
        self._platform: Platform | None = None
        self._lock = threading.Lock()
        self._running: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Task[RunEnd]]] = {}
        self.dispatch: Callable[[str], None] = lambda run_id: None
        """Sends a run to the broker (set by ``create_celery``)."""
        self._heartbeat: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def platform(self) -> Platform:
        with self._lock:
            if self._platform is None:
                self._platform = self._factory(self.settings)
            return self._platform

    @property
    def leases(self) -> Leases:
        return Leases(
            self.platform.db,
            ttl_seconds=self.settings.lease_seconds,
            max_attempts=self.settings.max_run_attempts,
        )

    def _start_heartbeat(self) -> None:
        # One thread renews every lease of this process, so a run whose event loop is
        # busy (or waiting on a lock) does not lose its lease; each run's own
        # ``Lease.keep`` still notices at once if another worker took it over.
        with self._lock:
            if self._heartbeat is not None:
                return
            self._heartbeat = threading.Thread(
                target=self._beat, name="meshclaw-lease-heartbeat", daemon=True
            )
            self._heartbeat.start()

    def _beat(self) -> None:
        interval = self.settings.lease_seconds / 3
        while not self._stopping.wait(interval):
            try:
                self.leases.renew_all(self.name)
            except Exception:
                log.warning("lease heartbeat failed", exc_info=True)

    def execute(self, run_id: str) -> str:
        """Claim and execute one run; ``skipped`` if another worker holds it or it ended."""
        self._start_heartbeat()
        lease = self.leases.claim(run_id, self.name)
        if lease is None:
            return "skipped"
        try:
            end = asyncio.run(self._execute(run_id, lease))
        except asyncio.CancelledError:
            # Handed back at shutdown (the executor released the lease): send it on.
            self.dispatch(run_id)
            return "handed back"
        return end.status

    async def _execute(self, run_id: str, lease: Lease) -> RunEnd:
        gateway = self.platform.build_gateway()
        task = asyncio.create_task(self.platform.executor(gateway).execute(run_id, lease=lease))
        with self._lock:
            self._running[run_id] = (asyncio.get_running_loop(), task)
        try:
            return await task
        finally:
            with self._lock:
                self._running.pop(run_id, None)
            await gateway.aclose()

    def hand_back_all(self) -> int:
        """Stop every run in flight here; each is released for another worker."""
        with self._lock:
            running = list(self._running.values())
        for loop, task in running:
            loop.call_soon_threadsafe(task.cancel)
        return len(running)

    def recheck_outcomes(self) -> dict[str, int]:
        """Every org's due durability re-checks and silence acceptances (beat's entry)."""
        summary = asyncio.run(self.platform.recheck_outcomes())  # reads through a gateway
        log.info("outcome re-checks: %s", summary)
        return {
            "checked": summary.checked,
            "undone": summary.undone,
            "silently_accepted": summary.silently_accepted,
        }

    def deliver_notifications(self) -> dict[str, int]:
        """Send the notification outbox (beat's entry)."""
        summary = asyncio.run(self.platform.deliver_notifications())
        return dataclasses.asdict(summary)

    def roll_up_usage(self) -> int:
        """Roll every org's closed, missing or stale usage days up (beat's entry)."""
        return UsageRollup(self.platform.db).roll_closed_days()

    def audit_checkpoint(self) -> dict[str, Any]:
        """A timed audit checkpoint if records are uncovered; witness sends due (beat's entry)."""
        return dataclasses.asdict(self.platform.audit_log.scheduled())

    def scan_integrity(self) -> dict[str, int]:
        """Every org's live integrity scan, findings recorded for review (beat's entry)."""
        scans = self.platform.scan_integrity()
        opened = sum(s.recorded.opened for s in scans)
        log.info("integrity scans: %d orgs, %d findings opened", len(scans), opened)
        return {"orgs": len(scans), "flagged": sum(len(s.flagged) for s in scans), "opened": opened}

    def sweep(self) -> list[str]:
        result = self.leases.sweep()
        for run_id in result.redeliver:
            self.dispatch(run_id)
        return result.redeliver

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            if self._platform is not None:
                self._platform.close()
                self._platform = None


def create_celery(
    settings: Settings,
    *,
    platform_factory: PlatformFactory = default_platform,
    shutdown_grace_seconds: float | None = None,
    queue: str = RUN_QUEUE,
) -> tuple[Celery, WorkerRuntime]:
    """The Celery app with MeshClaw's tasks, and the runtime its workers execute them with.

    ``shutdown_grace_seconds``: on a warm shutdown, runs still in flight after this long
    are handed back to other workers instead of being waited for (None: wait).
    """
    from meshclaw.errors import ConfigError

    if not settings.broker_url:
        raise ConfigError("no broker: set MESHCLAW_BROKER_URL (redis://… or amqp://…)")
    app = Celery("meshclaw", set_as_current=False)
    app.conf.update(celery_config(settings, queue))
    runtime = WorkerRuntime(settings, platform_factory)

    def dispatch(run_id: str) -> None:
        app.send_task(EXECUTE_RUN, args=[run_id], queue=queue)
        runtime.leases.mark_sent([run_id])

    runtime.dispatch = dispatch

    def execute_run(run_id: str) -> str:
        return runtime.execute(run_id)

    def sweep() -> int:
        return len(runtime.sweep())

    def cron_tick() -> int:
        from meshclaw.triggers.cron import CronFirer
        from meshclaw.triggers.inbound import InboundPoller

        firer = CronFirer(runtime.platform, dispatch=dispatch, owner=runtime.name)
        inbound = InboundPoller(runtime.platform, dispatch=dispatch, owner=runtime.name)
        return len(firer.tick()) + len(inbound.tick())  # chat and mail triggers poll here too

    def outcomes_recheck() -> dict[str, int]:
        return runtime.recheck_outcomes()

    def deliver_notifications() -> dict[str, int]:
        return runtime.deliver_notifications()

    def roll_up_usage() -> int:
        return runtime.roll_up_usage()

    def audit_checkpoint() -> dict[str, Any]:
        return runtime.audit_checkpoint()

    def integrity_scan() -> dict[str, int]:
        return runtime.scan_integrity()

    # ``shared=False``: the tasks belong to this app only, so a second app in the same
    # process (tests, or a dispatcher beside a worker) does not inherit the first one's.
    task = app.task
    task(name=EXECUTE_RUN, acks_late=True, reject_on_worker_lost=True, shared=False)(execute_run)
    task(name=SWEEP, acks_late=False, shared=False)(sweep)
    task(name=CRON_TICK, acks_late=False, shared=False)(cron_tick)
    task(name=OUTCOMES_RECHECK, acks_late=False, shared=False)(outcomes_recheck)
    task(name=DELIVER_NOTIFICATIONS, acks_late=False, shared=False)(deliver_notifications)
    task(name=ROLL_UP_USAGE, acks_late=False, shared=False)(roll_up_usage)
    task(name=AUDIT_CHECKPOINT, acks_late=False, shared=False)(audit_checkpoint)
    task(name=INTEGRITY_SCAN, acks_late=False, shared=False)(integrity_scan)

    if shutdown_grace_seconds is not None:
        grace = shutdown_grace_seconds

        def on_shutdown(**_: Any) -> None:
            timer = threading.Timer(grace, runtime.hand_back_all)
            timer.daemon = True
            timer.start()

        worker_shutting_down.connect(on_shutdown, weak=False)
    return app, runtime


class CeleryDispatcher:
    """Sends runs to the broker (the API and ``meshclaw run --detach`` with a broker)."""

    def __init__(self, settings: Settings, leases: Leases, *, queue: str = RUN_QUEUE) -> None:
        from meshclaw.errors import ConfigError

        if not settings.broker_url:
            raise ConfigError("no broker: set MESHCLAW_BROKER_URL")
        self._app = Celery("meshclaw", set_as_current=False)
        self._app.conf.update(celery_config(settings, queue))
        self._leases = leases
        self._queue = queue

    def dispatch(self, run_id: str) -> None:
        self._app.send_task(EXECUTE_RUN, args=[run_id], queue=self._queue)
        self._leases.mark_sent([run_id])

    def workers_ready(self, timeout: float = 1.0) -> int:
        """How many workers answer a broadcast ping now (for readiness checks)."""
        replies = self._app.control.ping(timeout=timeout) or []
        return len(replies)

    def close(self) -> None:
        self._app.close()
