"""The embedded worker: one background thread with an event loop that runs queued runs.

Runs are claimed atomically in the store, so this worker can share a database with the
CLI (which executes its own runs) or with other processes without running anything twice.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from meshclaw.metering.rollup import UsageRollup
from meshclaw.platform import Platform

log = logging.getLogger(__name__)


class InProcessWorker:
    def __init__(
        self,
        platform: Platform,
        *,
        concurrency: int = 4,
        poll_seconds: float = 0.5,
        cron: bool = False,
        cron_seconds: float = 15.0,
        recheck_seconds: float | None = None,
    ):
        self._platform = platform
        self._concurrency = concurrency
        self._poll = poll_seconds
        self._cron = cron
        """Also fire the agents' cron triggers (the embedded mode's scheduler)."""
        self._cron_seconds = cron_seconds
        self._recheck_seconds = (
            recheck_seconds
            if recheck_seconds is not None
            else (platform.settings.outcomes_recheck_seconds if cron else 0.0)
        )
        """Run every org's due outcome re-checks this often (0: never); by default the
        setting's interval when this worker is the embedded scheduler (``cron``)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="meshclaw-worker", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10)

    def wake(self) -> None:
        """Look for queued runs now instead of at the next poll."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def dispatch(self, run_id: str) -> None:
        """A run was queued: claim it now (``workers.dispatch.RunDispatcher``)."""
        self.wake()

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _fire_cron(self) -> None:
        from meshclaw.triggers.cron import CronFirer
        from meshclaw.workers.leases import worker_name

        firer = CronFirer(self._platform, dispatch=None, owner=worker_name())
        while True:
            try:
                if await asyncio.to_thread(firer.tick):
                    self.wake()
            except Exception:
                log.exception("cron tick failed")
            await asyncio.sleep(self._cron_seconds)

    async def _every(self, seconds: float, name: str, job: Callable[[], object]) -> None:
        """Run ``job`` in its own thread every ``seconds``: its store calls (and its own
        event loop, for async jobs) must not stall the runs on this loop."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await asyncio.to_thread(job)
            except Exception:
                log.exception("%s failed", name)

    def _housekeeping(self) -> list[tuple[float, str, Callable[[], object]]]:
        """The embedded scheduler's periodic jobs (``workers.celery_app`` has the same)."""
        if not self._cron:
            return [(self._recheck_seconds, "outcome re-checks", self._recheck)]
        settings = self._platform.settings
        return [
            (self._recheck_seconds, "outcome re-checks", self._recheck),
            (settings.notify_seconds, "notification delivery", self._deliver),
            (settings.usage_rollup_seconds, "usage roll-up", self._roll_up),
            (settings.audit.schedule_seconds(), "audit checkpoint", self._audit_checkpoint),
            (settings.integrity_scan_hours * 3600, "integrity scan", self._scan_integrity),
            (self._cron_seconds, "chat and mail triggers", self._poll_inbound),
        ]

    def _poll_inbound(self) -> object:
        from meshclaw.triggers.inbound import InboundPoller
        from meshclaw.workers.leases import worker_name

        started = InboundPoller(self._platform, dispatch=None, owner=worker_name()).tick()
        if started:
            self.wake()
        return started

    def _recheck(self) -> object:
        return asyncio.run(self._platform.recheck_outcomes())  # reads through a gateway

    def _deliver(self) -> object:
        return asyncio.run(self._platform.deliver_notifications())

    def _roll_up(self) -> object:
        return UsageRollup(self._platform.db).roll_closed_days()

    def _audit_checkpoint(self) -> object:
        return self._platform.audit_log.scheduled()

    def _scan_integrity(self) -> object:
        return self._platform.scan_integrity()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake, self._stop = asyncio.Event(), asyncio.Event()
        gateway = self._platform.build_gateway()
        executor = self._platform.executor(gateway)
        slots = asyncio.Semaphore(self._concurrency)
        running: set[asyncio.Task[None]] = set()
        cron = asyncio.create_task(self._fire_cron()) if self._cron else None
        periodic = [
            asyncio.create_task(self._every(seconds, name, job))
            for seconds, name, job in self._housekeeping()
            if seconds > 0
        ]
        self._ready.set()

        async def execute(run_id: str) -> None:
            try:
                await executor.execute(run_id)
            except Exception:
                log.exception("run %s crashed the executor", run_id)
            finally:
                slots.release()

        while not self._stop.is_set():
            for run_id in self._platform.runs.queued(limit=self._concurrency):
                if slots.locked():
                    break
                if self._platform.runs.claim(run_id):
                    await slots.acquire()
                    task = asyncio.create_task(execute(run_id))
                    running.add(task)
                    task.add_done_callback(running.discard)
            self._wake.clear()
            waiters = [asyncio.create_task(e.wait()) for e in (self._wake, self._stop)]
            await asyncio.wait(waiters, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        for loop_task in (cron, *periodic):
            if loop_task is not None:
                loop_task.cancel()
        for task in list(running):
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await gateway.aclose()
