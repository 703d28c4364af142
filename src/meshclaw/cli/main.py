"""``meshclaw``: the command line. Exit codes: 0 ok, 1 run/runtime failure, 2 bad input."""

from __future__ import annotations

from meshclaw.cli import (
    admin,
    agents,
    approvals,
    audit,
    budgets,
    connectors,
    ingest,
    integrity,
    leaderboard,
    notifications,
    outcomes,
    policy,
    runs,
    serve,
    usage,
    vault,
    worker,
)
from meshclaw.cli._app import app

__all__ = [
    "admin",
    "agents",
    "app",
    "approvals",
    "audit",
    "budgets",
    "connectors",
    "ingest",
    "integrity",
    "leaderboard",
    "main",
    "notifications",
    "outcomes",
    "policy",
    "runs",
    "serve",
    "usage",
    "vault",
    "worker",
]


def main() -> None:
    app()
