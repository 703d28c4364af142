"""Local stand-ins for the workplace apps the demo org's agents work in.

``meshclaw serve --demo`` starts them on loopback, points the demo org's connectors (the
built-in MCP servers) at them (``meshclaw.demo.wire_demo_connectors``) and stops them
when it stops. Each keeps its state under ``<home>/demo-apps``, so tickets closed,
messages posted and events booked are still there after a restart.

=========  ================================================  ==========================
connector  stand-in                                          runs
=========  ================================================  ==========================
tickets    ``connectors.fakes.github`` (GitHub REST shape)   in this process
chat       ``connectors.fakes.slack`` (Slack Web API)        in this process
calendar   Radicale (CalDAV)                                 child process
docs       WsgiDAV on cheroot (WebDAV)                       child process
deploy     a bare git repository + a pipeline service        in this process
mail       dovecot (IMAP) + aiosmtpd (SMTP)                  child process + thread
=========  ================================================  ==========================

A stand-in that cannot start (dovecot not installed, a development package missing) is
left out with the reason, and the rest of the demo runs: ``DemoApps.skipped``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Self

from meshclaw._loopback import StartsAndStops
from meshclaw.demo_apps._base import App, PortBook, Secrets, StandIn, StandInError
from meshclaw.demo_apps._dav import CalendarApp, DocsApp
from meshclaw.demo_apps._deploy import DeployApp
from meshclaw.demo_apps._fakes import ChatApp, TicketsApp
from meshclaw.demo_apps._mail import MailApp

__all__ = ["APPS", "DemoApps", "StandIn"]

APPS: dict[str, Callable[[Path, PortBook, Secrets], App]] = {
    "tickets": TicketsApp,
    "chat": ChatApp,
    "calendar": CalendarApp,
    "docs": DocsApp,
    "deploy": DeployApp,
    "mail": MailApp,
}
"""Every stand-in by connector name, in the order they start."""


class DemoApps(StartsAndStops):
    """Starts the stand-ins under ``folder`` (``<home>/demo-apps``) and stops them again."""

    def __init__(self, folder: Path, *, only: Iterable[str] | None = None) -> None:
        self.folder = folder
        names = list(APPS) if only is None else [n for n in APPS if n in set(only)]
        folder.mkdir(parents=True, exist_ok=True)
        ports = PortBook(folder / "ports.json")
        secrets = Secrets(folder / "secrets.json")
        self._apps: list[App] = [APPS[name](folder, ports, secrets) for name in names]
        self._started: list[App] = []
        self.running: list[StandIn] = []
        """What runs, in start order."""
        self.skipped: dict[str, str] = {}
        """Connector name -> why its stand-in is not running."""

    def app(self, name: str) -> App:
        """A started stand-in by connector name (tests read its state)."""
        return next(a for a in self._started if a.name == name)

    def start(self) -> Self:
        """Start every stand-in that can; one that cannot is recorded in ``skipped``."""
        try:
            for app in self._apps:
                try:
                    stand_in = app.start()
                except StandInError as exc:
                    self.skipped[app.name] = str(exc)
                    continue
                self._started.append(app)
                self.running.append(stand_in)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop them all (each saves its state), newest first."""
        while self._started:
            self._started.pop().stop()
        self.running = []

    def summary(self) -> list[str]:
        """What runs where, and what does not and why: lines for the startup output."""
        width = max((len(name) for name in APPS), default=0)
        lines = [
            f"{s.connector:<{width}}  {s.title} at {s.address}"
            + (f" ({s.detail})" if s.detail else "")
            for s in self.running
        ]
        lines += [f"{name:<{width}}  not started: {why}" for name, why in self.skipped.items()]
        return lines
