"""How a new run reaches a worker: the broker when one is configured, else in-process.

``POST /v1/runs``, webhooks, cron and ``meshclaw run --detach`` hand the queued run to a
``RunDispatcher``. With ``broker_url`` set it is a ``CeleryDispatcher`` (scale-out
workers); otherwise the embedded ``InProcessWorker`` is woken to claim it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from meshclaw.platform import Platform
    from meshclaw.workers.celery_app import CeleryDispatcher


class RunDispatcher(Protocol):
    def dispatch(self, run_id: str) -> None:
        """Make sure a worker will pick up the queued run ``run_id``."""
        ...


def broker_dispatcher(platform: Platform) -> CeleryDispatcher | None:
    """A dispatcher to the configured broker, or None in the embedded mode."""
    if not platform.settings.broker_url:
        return None
    from meshclaw.workers.celery_app import CeleryDispatcher
    from meshclaw.workers.leases import Leases

    settings = platform.settings
    leases = Leases(
        platform.db, ttl_seconds=settings.lease_seconds, max_attempts=settings.max_run_attempts
    )
    return CeleryDispatcher(settings, leases)
