"""A worker or scheduler process for the crash tests: ``python -m tests.workers._proc ROLE``.

Settings come from the environment like ``meshclaw worker``; the platform also has the
``sidefx`` connector (``MESHCLAW_TEST_SIDEFX_URL``) and the queue is the test's own
(``MESHCLAW_TEST_QUEUE``), so parallel test runs do not share one.
"""

from __future__ import annotations

import os
import sys

from meshclaw.config import Settings
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.platform import Platform
from meshclaw.workers.celery_app import create_celery
from meshclaw.workers.scheduler import run_scheduler
from tests.workers.sidefx import SideEffectConnector


class SideEffectPlatform(Platform):
    def connectors(self) -> ConnectorRegistry:
        registry = super().connectors()
        registry.add(SideEffectConnector(os.environ["MESHCLAW_TEST_SIDEFX_URL"]))
        return registry


def main() -> None:
    role = sys.argv[1]
    settings = Settings()
    queue = os.environ["MESHCLAW_TEST_QUEUE"]
    app, runtime = create_celery(
        settings,
        platform_factory=lambda s: SideEffectPlatform(s, apply_migrations=False),
        queue=queue,
        shutdown_grace_seconds=float(os.environ.get("MESHCLAW_TEST_GRACE", "5")),
    )
    runtime.platform  # noqa: B018
    if role == "scheduler":
        run_scheduler(app, runtime)
        return
    app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={settings.workers}",
            "--loglevel=INFO",
            f"--queues={queue}",
            f"--hostname=crash-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )


if __name__ == "__main__":
    main()
