"""``meshclaw``: the command line. Exit codes: 0 ok, 1 run/runtime failure, 2 bad input."""

from __future__ import annotations

from meshclaw.cli import admin, agents, runs, serve, usage
from meshclaw.cli._app import app

__all__ = ["admin", "agents", "app", "main", "runs", "serve", "usage"]


def main() -> None:
    app()
