"""The demo org that ``make run`` seeds into an empty store, and its wired-up connectors.

``seed_demo`` creates the org, its people and agents once. ``wire_demo_connectors`` runs
at every ``meshclaw serve --demo`` start, after ``meshclaw.demo_apps`` started the local
stand-ins: it points the demo org's connectors (the built-in MCP servers) at them, puts
their credentials in the org's vault and approves their tools as the demo's platform
admin (carol) would. Both are idempotent.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from meshclaw.accounts.service import Caller
from meshclaw.connectors.config import ConnectorConfig
from meshclaw.errors import MeshClawError
from meshclaw.platform import Platform
from meshclaw.spec.loader import parse_spec
from meshclaw.store.models import Org

if TYPE_CHECKING:
    from meshclaw.demo_apps import StandIn

DEMO_ORG = "acme"
DEMO_PASSWORD = "meshclaw-demo"
"""Every demo user's dashboard password (the demo is for a laptop, not for production)."""
DEMO_ADMIN = "carol"
"""The demo's platform admin: adds the demo org's connectors and approves their tools."""
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


@dataclass(frozen=True, kw_only=True)
class DemoTry:
    """An agent from ``examples/`` that the demo model's script answers (demo-script.yaml)."""

    agent: str
    connector: str
    """The stand-in it works in: without it running, the example cannot do its work."""
    input: str
    """The fixed input the script answers."""
    outcome: str
    """The outcome type its run records, verified from the connector's answers."""


DEMO_TRIES = (
    DemoTry(
        agent="ticket-updater",
        connector="tickets",
        input="OPS ticket 1 changed",
        outcome="ticket_resolved",
    ),
    DemoTry(
        agent="doc-publisher",
        connector="docs",
        input="Change note: build runners clean up old artifacts nightly",
        outcome="doc_published",
    ),
    DemoTry(
        agent="deploy-helper",
        connector="deploy",
        input="Deploy main to staging",
        outcome="deploy",
    ),
    DemoTry(
        agent="mail-triage",
        connector="mail",
        input="Triage the shared inbox",
        outcome="mail_sent",
    ),
)
"""What ``meshclaw serve --demo`` suggests trying, in that order."""


def try_commands(running: Iterable[str]) -> list[tuple[str, str]]:
    """(create, run) commands for each example whose stand-in is ``running``."""
    up = set(running)
    return [
        (
            f".venv/bin/meshclaw agent create examples/{e.agent}.yaml",
            f".venv/bin/meshclaw run {e.agent} --input {shlex.quote(e.input)} -f",
        )
        for e in DEMO_TRIES
        if e.connector in up
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


def wire_demo_connectors(platform: Platform, stand_ins: Sequence[StandIn]) -> list[str]:
    """Point the demo org's connectors at the running stand-ins (idempotent).

    For each stand-in: its credential goes into the demo org's vault under the
    connector's name; the connector is added (or, when the stand-in's settings changed,
    for instance a port, replaced) as a built-in server run over stdio; tools never
    approved are listed and approved as ``carol``. A tool whose definition *changed*
    since it was approved is left blocked for a person to review (the rug-pull
    defence), and said so. A connector of the same name declared in settings is left
    alone. Returns one line per thing a person should know.
    """
    org = platform.accounts.org_by_name(DEMO_ORG)
    if org is None:
        return [f"no org {DEMO_ORG!r} in this store: the demo's connectors were not added"]
    try:
        admin = platform.accounts.caller_for(platform.accounts.user_by_handle(org.id, DEMO_ADMIN))
    except MeshClawError as exc:
        return [f"the demo's connectors were not added: {exc}"]
    notes = []
    for stand_in in stand_ins:
        try:
            note = _wire(platform, admin, stand_in)
        except MeshClawError as exc:
            note = f"{stand_in.connector}: connector not ready: {exc}"
        if note:
            notes.append(note)
    return notes


def _wire(platform: Platform, admin: Caller, stand_in: StandIn) -> str | None:
    service, name, org_id = platform.connector_admin, stand_in.connector, admin.org_id
    if platform.vault.get(name, org_id=org_id) != stand_in.credential:
        platform.vault.put(name, stand_in.credential, org_id=org_id)
    wanted = ConnectorConfig.model_validate(stand_in.connector_config(sys.executable))
    found = service.configs(org_id).get(name)
    if found is not None and found[1] == "settings":
        return f"{name}: declared in settings, left as it is (not pointed at the stand-in)"
    if found is None or found[0] != wanted:
        if found is not None:
            service.remove(admin, name)
        service.add(admin, name, wanted.model_dump(mode="json", exclude={"org"}))
    states = service.approvals(org_id).states(name)
    if not states or any(s.status == "pending" for s in states):
        states = asyncio.run(service.tools(admin, name))
        pending = [s.tool for s in states if s.status == "pending"]
        if pending:
            service.approve(admin, name, pending)
            states = service.approvals(org_id).states(name)
    changed = sorted(s.tool for s in states if s.status == "changed")
    if changed:
        return (
            f"{name}: {', '.join(changed)} changed since approved and stay blocked; review "
            f"with `meshclaw connector tools {name}` and approve with `meshclaw connector approve`"
        )
    return None
