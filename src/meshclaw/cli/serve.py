"""``meshclaw serve``: API, worker and (for the demo) the scripted model in one process."""

from __future__ import annotations

import gc
import os
import socket
import sys
import threading
import webbrowser
from typing import TYPE_CHECKING

import typer

from meshclaw.cli._app import app, handle_errors
from meshclaw.cli._output import console

if TYPE_CHECKING:
    from meshclaw.demo_apps import DemoApps
    from meshclaw.platform import Platform


def open_dashboard_later(url: str) -> None:
    """Open the dashboard in the user's browser once the server is up, if there is a screen.

    Without a display ``webbrowser`` may pick a text browser that takes over the terminal,
    so a headless machine gets only the printed address.
    """
    if sys.platform != "darwin" and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform == "win32"
    ):
        return
    threading.Timer(1.0, webbrowser.open, args=(url,)).start()


@app.command("serve")
@handle_errors
def serve(
    host: str | None = typer.Option(None, help="Bind address (default from settings)."),
    port: int | None = typer.Option(None, help="Port; 0 picks a free one."),
    demo: bool = typer.Option(
        False, "--demo", help="Seed the demo org if the store is empty; start its apps."
    ),
    demo_apps: bool = typer.Option(
        True,
        "--demo-apps/--no-demo-apps",
        help="With --demo: start local stand-ins for the demo org's apps and wire its "
        "connectors to them.",
    ),
) -> None:
    """Start the platform: migrations, API, run worker, embedded model server."""
    import uvicorn

    from meshclaw.api.app import create_app
    from meshclaw.config import Settings
    from meshclaw.demo import DEMO_PASSWORD, seed_demo
    from meshclaw.outcomes.links import EVERY_INTERFACE
    from meshclaw.platform import Platform
    from meshclaw.workers.dispatch import broker_dispatcher
    from meshclaw.workers.inprocess import InProcessWorker

    settings = Settings()
    bind_host = host or settings.host
    bind_port = settings.port if port is None else port
    platform = Platform(settings)
    if demo and seed_demo(platform):
        console.print(
            "seeded the demo org 'acme' (users alice, bob, carol, dave, erin; "
            f"dashboard password {DEMO_PASSWORD!r})"
        )
    apps = start_demo_apps(platform) if demo and demo_apps else None
    worker = broker = sock = None
    try:
        model_url = platform.start_embedded_model_server()
        # With a broker, runs go to `meshclaw worker` processes; else this process runs them.
        broker = broker_dispatcher(platform)
        if broker is None:
            worker = InProcessWorker(platform, concurrency=settings.workers, cron=True)
            worker.start()
        # Bind first so port 0 works and the real address can be printed before serving.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind_host, bind_port))
        sock.listen(2048)  # connections queue from now on, even before uvicorn takes it
        address = f"http://{bind_host}:{sock.getsockname()[1]}"
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(platform, broker or worker), log_level="warning", access_log=False
            )
        )
        # What start-up built (modules, the platform, templates) lives as long as the
        # process: move it out of the collector's reach, so a full collection during a
        # request walks only what requests made since (it cost a page ~0.2 s at p99).
        gc.collect()
        gc.freeze()
        print(f"MeshClaw listening on {address}")
        if settings.web.public_url is None:
            if bind_host in EVERY_INTERFACE:
                print(
                    "  warning: set web.public_url (MESHCLAW_WEB__PUBLIC_URL): listening on "
                    "every interface, feedback links mailed to people carry only their path"
                )
            else:  # links mailed to people (feedback requests) name the address bound
                platform.outcomes.public_url = address
        for name, org in platform.connector_admin.unplaced().items():
            print(f"  warning: settings connector {name!r} names org {org!r}, which does not exist")
        print(f"  dashboard:    {address}/ui/")
        print(f"  API docs:     {address}/docs")
        if model_url:
            print(f"  model server: {model_url} (scripted demo model)")
        print("  try:          .venv/bin/meshclaw run daily-notes --input 'note the time' --follow")
        if apps is not None:
            from meshclaw.demo import try_commands  # kept beside the script's inputs

            for i, (create, run) in enumerate(try_commands(s.connector for s in apps.running)):
                print(f"  {'then:' if i == 0 else 'and:':<14}{create}")
                print(f"  {'':<14}{run}")
        sys.stdout.flush()
        if demo and settings.web.open_browser:
            open_dashboard_later(f"{address}/ui/")
        server.run(sockets=[sock])
    finally:
        if worker is not None:
            worker.stop()
        if broker is not None:
            broker.close()
        if apps is not None:
            apps.stop()
        platform.close()
        if sock is not None:
            sock.close()


def start_demo_apps(platform: Platform) -> DemoApps:
    """Start the demo org's app stand-ins, wire its connectors, say what runs where."""
    from meshclaw.demo import wire_demo_connectors
    from meshclaw.demo_apps import DemoApps

    folder = platform.settings.home / "demo-apps"
    apps = DemoApps(folder).start()
    try:
        notes = wire_demo_connectors(platform, apps.running)
    except BaseException:
        apps.stop()
        raise
    print(f"demo apps (state under {folder}; connectors of the demo org 'acme'):")
    for line in [*apps.summary(), *notes]:
        print(f"  {line}")
    sys.stdout.flush()
    return apps
