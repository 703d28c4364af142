"""Calendar and docs for the demo: real Radicale (CalDAV) and WsgiDAV (WebDAV) servers.

Both are Python packages MeshClaw's tests use (the ``dev`` extra, which
``requirements.lock`` installs), run as child processes on loopback with their data
under the demo home. They are imported by the child, never here, so a missing package is
a clear "not started" line instead of an import error.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import httpx

from meshclaw.demo_apps._base import ChildProcess, PortBook, Secrets, StandIn, StandInError

CALENDAR_USER = "platform@acme.example"
CALENDAR_NAME = "Platform team"
DOCS_USER = "handbook"
HANDBOOK = {
    "handbook/README.md": "# Engineering handbook\n\nHow the platform team works.\n",
    "handbook/how-to/deploy.md": (
        "# Deploying\n\n1. Open a change.\n2. Run the pipeline.\n3. Watch staging.\n"
    ),
    "handbook/how-to/on-call.md": "# On call\n\nPage the platform team in #platform.\n",
}


def require(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise StandInError(
            f"{what} needs the Python package {module!r}, a development dependency: "
            "install it with `.venv/bin/pip install -r requirements.lock` (what `make run` does)"
        )


def _answers(method: str, url: str) -> bool:
    try:
        httpx.request(method, url, timeout=1.0)
    except httpx.TransportError:
        return False
    return True


class CalendarApp:
    """The calendar stand-in: Radicale with one user; the team calendar is made on first use."""

    name = "calendar"

    def __init__(self, folder: Path, ports: PortBook, secrets: Secrets) -> None:
        self._folder = folder / "calendar"
        self._ports = ports
        self._password = secrets.get("calendar-password")
        self._child: ChildProcess | None = None

    def start(self) -> StandIn:
        require("radicale", "the CalDAV stand-in")
        self._folder.mkdir(parents=True, exist_ok=True)
        users = self._folder / "users"
        users.touch(mode=0o600)
        users.write_text(f"{CALENDAR_USER}:{self._password}\n")
        port = self._ports.port(self.name)
        url = f"http://127.0.0.1:{port}/"
        child = ChildProcess(
            "radicale",
            [
                sys.executable, "-m", "radicale",
                "--server-hosts", f"127.0.0.1:{port}",
                "--storage-filesystem-folder", str(self._folder / "collections"),
                "--auth-type", "htpasswd",
                "--auth-htpasswd-filename", str(users),
                "--auth-htpasswd-encryption", "plain",
                "--logging-level", "warning",
            ],
            self._folder.parent / "logs" / "radicale.log",
        )  # fmt: skip
        child.wait_until(lambda: _answers("GET", url))
        self._child = child
        return StandIn(
            connector=self.name,
            title="Radicale CalDAV",
            address=url,
            detail=f"calendar {CALENDAR_NAME!r} of {CALENDAR_USER}",
            env={
                "MESHCLAW_CALENDAR_URL": url,
                "MESHCLAW_CALENDAR_CALENDAR": CALENDAR_NAME,
                "MESHCLAW_CALENDAR_CREATE_CALENDAR": "true",
            },
            credential={"username": CALENDAR_USER, "password": self._password},
            credential_env={
                "MESHCLAW_CALENDAR_USERNAME": "username",
                "MESHCLAW_CALENDAR_PASSWORD": "password",
            },
        )

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()
            self._child = None


class DocsApp:
    """The docs stand-in: WsgiDAV (on cheroot) sharing a folder with the handbook in it."""

    name = "docs"

    def __init__(self, folder: Path, ports: PortBook, secrets: Secrets) -> None:
        self._folder = folder / "docs"
        self._ports = ports
        self._password = secrets.get("docs-password")
        self._child: ChildProcess | None = None

    def start(self) -> StandIn:
        require("wsgidav", "the WebDAV stand-in")
        require("cheroot", "the WebDAV stand-in")
        share = self._folder / "share"
        if not share.exists():
            for path, text in HANDBOOK.items():
                (share / path).parent.mkdir(parents=True, exist_ok=True)
                (share / path).write_text(text, "utf-8")
        port = self._ports.port(self.name)
        config = self._folder / "wsgidav.json"
        config.touch(mode=0o600)
        config.write_text(
            json.dumps(
                {
                    "host": "127.0.0.1",
                    "port": port,
                    "provider_mapping": {"/": str(share.resolve())},
                    "http_authenticator": {
                        "accept_basic": True,
                        "accept_digest": False,
                        "default_to_digest": False,
                    },
                    "simple_dc": {"user_mapping": {"*": {DOCS_USER: {"password": self._password}}}},
                    "verbose": 1,
                    "logging": {"enable_loggers": []},
                }
            )
        )
        url = f"http://127.0.0.1:{port}/"
        child = ChildProcess(
            "wsgidav",
            [sys.executable, "-m", "wsgidav.server.server_cli", "--config", str(config)],
            self._folder.parent / "logs" / "wsgidav.log",
        )
        child.wait_until(lambda: _answers("OPTIONS", url))
        self._child = child
        return StandIn(
            connector=self.name,
            title="WsgiDAV WebDAV",
            address=url,
            detail=f"the handbook, files in {share}",
            env={"MESHCLAW_DOCS_URL": url},
            credential={"username": DOCS_USER, "password": self._password},
            credential_env={
                "MESHCLAW_DOCS_USERNAME": "username",
                "MESHCLAW_DOCS_PASSWORD": "password",
            },
            targets={tool: {"path": "doc"} for tool in ("write_document", "create_folder")},
        )

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()
            self._child = None
