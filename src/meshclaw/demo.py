"""The demo org that ``make run`` seeds into an empty store."""

from __future__ import annotations

import os
from importlib import resources

from sqlalchemy import func, select

from meshclaw.platform import Platform
from meshclaw.spec.loader import parse_spec
from meshclaw.store.models import Org

DEMO_ORG = "acme"
DEMO_PASSWORD = "meshclaw-demo"
"""Every demo user's dashboard password (the demo is for a laptop, not for production)."""
DEMO_MAIL_DOMAIN = "acme.example"
"""Demo people's mail addresses are ``<handle>@acme.example`` (a reserved domain)."""
# (handle, team, role, job function)
DEMO_PEOPLE = [
    ("alice", "platform", "employee", "Site reliability engineer"),
    ("bob", "support", "team_admin", "Support lead"),
    ("carol", "platform", "platform_admin", "IT administrator"),
    ("dave", None, "auditor", "Internal auditor"),
    ("erin", "sales", "employee", "Account executive"),
]


def seed_demo(platform: Platform) -> bool:
    """Create org, teams, users and agents unless any org exists. Returns whether it did."""
    with platform.db.session() as session:
        if session.scalar(select(func.count(Org.id))):
            return False
    org = platform.accounts.create_org(DEMO_ORG)
    teams = {
        name: platform.accounts.create_team(org.id, name).id
        for name in ("platform", "support", "sales")
    }
    users = {}
    for handle, team, role, job in DEMO_PEOPLE:
        users[handle] = platform.accounts.create_user(
            org.id,
            handle,
            team_id=teams[team] if team else None,
            display_name=handle.capitalize(),
            role=role,
            job_function=job,
            email=f"{handle}@{DEMO_MAIL_DOMAIN}",
        )
    for user in users.values():
        platform.signin.set_password(user.id, DEMO_PASSWORD)
    alice = platform.accounts.caller_for(users["alice"])
    for entry in sorted(
        resources.files("meshclaw.data").joinpath("demo-agents").iterdir(), key=str
    ):
        spec = parse_spec(entry.read_text("utf-8"), entry.name)
        platform.agents.save(alice, spec)
    _write_cli_token(platform, platform.accounts.issue_token(users["alice"].id, "demo cli"))
    return True


def _write_cli_token(platform: Platform, secret: str) -> None:
    """The demo CLI acts as alice; the file is readable by its owner only."""
    path = platform.settings.home / "cli-token"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
