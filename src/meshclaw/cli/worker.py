"""``meshclaw worker`` and ``meshclaw scheduler``: the scale-out processes (docs/deploy.md)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import typer

from meshclaw.cli._app import EXIT_FAILED, JsonOption, app, handle_errors
from meshclaw.cli._output import console, print_json

if TYPE_CHECKING:
    from meshclaw.config import Settings


def _ping(settings: Settings, json_output: bool) -> None:
    """A health check for workers: how many answer a broadcast ping within 2 s."""
    from meshclaw.platform import Platform
    from meshclaw.workers.dispatch import broker_dispatcher

    platform = Platform(settings, apply_migrations=False)
    try:
        dispatcher = broker_dispatcher(platform)
        if dispatcher is None:
            from meshclaw.errors import ConfigError

            raise ConfigError("no broker: set MESHCLAW_BROKER_URL (redis://… or amqp://…)")
        try:
            answered = dispatcher.workers_ready(timeout=2.0)
        finally:
            dispatcher.close()
    finally:
        platform.close()
    if json_output:
        print_json({"workers": answered})
    else:
        console.print(f"{answered} worker(s) answered")
    if not answered:
        raise typer.Exit(EXIT_FAILED)


@app.command("worker")
@handle_errors
def worker(
    concurrency: int | None = typer.Option(
        None, min=1, max=256, help="Runs executed at once (default: the `workers` setting)."
    ),
    shutdown_grace: float = typer.Option(
        30.0,
        min=0,
        help="On SIGTERM, seconds to let runs finish before handing the rest to other workers.",
    ),
    loglevel: str = typer.Option("INFO", help="Celery log level."),
    ping: bool = typer.Option(
        False, "--ping", help="Do not start: count the workers that answer (exit 1 if none)."
    ),
    json_output: bool = JsonOption,
) -> None:
    """Execute runs from the broker (MESHCLAW_BROKER_URL) until stopped."""
    from meshclaw.config import Settings
    from meshclaw.workers.celery_app import RUN_QUEUE, create_celery

    settings = Settings()
    if ping:
        _ping(settings, json_output)
        return
    celery, runtime = create_celery(settings, shutdown_grace_seconds=shutdown_grace)
    runtime.platform.db  # noqa: B018  (migrate and connect now: fail fast, not on the first run)
    workers = concurrency or settings.workers
    console.print(f"MeshClaw worker {runtime.name}: {workers} runs at once from {RUN_QUEUE}")
    try:
        celery.worker_main(
            [
                "worker",
                "--pool=threads",
                f"--concurrency={workers}",
                f"--loglevel={loglevel}",
                f"--queues={RUN_QUEUE}",
                f"--hostname=meshclaw-{os.getpid()}@%h",
                "--without-gossip",
                "--without-mingle",
            ]
        )
    finally:
        runtime.close()


@app.command("scheduler")
@handle_errors
def scheduler() -> None:
    """Run Celery beat: the lease sweeper and the agents' cron triggers (one leader)."""
    from meshclaw.config import Settings
    from meshclaw.platform import Platform
    from meshclaw.workers.celery_app import create_celery
    from meshclaw.workers.scheduler import run_scheduler

    settings = Settings()
    celery, runtime = create_celery(settings, platform_factory=Platform)
    runtime.platform.db  # noqa: B018
    console.print(f"MeshClaw scheduler {runtime.name}")
    try:
        run_scheduler(celery, runtime)
    finally:
        runtime.close()
