"""Agents are archived, not deleted: an archived agent starts no runs (by hand, API or
trigger), is not listed unless asked, cannot be changed until restored; its versions,
runs and audit records stay. Only its owner or a platform admin archives it."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from meshclaw.api.app import create_app
from meshclaw.cli.main import app as cli_app
from meshclaw.errors import ConflictError, PermissionDenied
from meshclaw.spec.loader import parse_spec
from meshclaw.store.models import AuditEvent
from meshclaw.triggers.webhook import sign
from tests.conftest import World, agent_yaml
from tests.web.test_agents_runs_approvals import Site, SiteFor, csrf_of, site_for

__all__ = ["site_for"]  # a fixture used below

HOOKED = agent_yaml().replace(
    "budget:", "triggers:\n  - {type: webhook, secret_ref: hook}\nbudget:"
)


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    world = make_world()
    secrets = world.platform.settings.home / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    (secrets / "hook").write_bytes(b"hook-secret\n")
    world.save_agent(HOOKED)
    return world


def _actions(world: World) -> list[str]:
    with world.platform.db.session() as session:
        return list(
            session.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.action.in_(("agent.archive", "agent.restore")))
                .order_by(AuditEvent.seq)
            )
        )


def test_archive_stops_runs_and_changes_and_restore_undoes_it(world: World) -> None:
    agents, runs = world.platform.agents, world.platform.runs
    first = runs.create(world.alice, "helper", "before")
    with pytest.raises(PermissionDenied):
        agents.archive(world.bob, "helper")  # not his
    archived = agents.archive(world.alice, "helper")
    assert archived.archived_at is not None
    assert [a.name for a in agents.list_agents(world.alice)] == []
    assert [a.name for a in agents.list_agents(world.alice, include_archived=True)] == ["helper"]
    with pytest.raises(ConflictError, match="archived"):
        runs.create(world.alice, "helper", "after")
    with pytest.raises(ConflictError, match="restore it first"):
        agents.save(world.alice, parse_spec(HOOKED.replace("You help.", "You help more.")))
    with pytest.raises(ConflictError, match="already archived"):
        agents.archive(world.admin, "helper")
    # History stays readable.
    assert runs.get(world.alice, first.id).agent_name == "helper"
    assert [v.version for v in agents.versions(world.alice, "helper")] == [1]

    restored = agents.restore(world.admin, "helper")  # a platform admin may too
    assert restored.archived_at is None
    assert runs.create(world.alice, "helper", "again").status == "queued"
    assert _actions(world) == ["agent.archive", "agent.restore"]


def test_an_archived_agents_webhook_starts_nothing(world: World) -> None:
    agent_id = world.platform.agents.get(world.alice, "helper").id
    world.platform.agents.archive(world.alice, "helper")
    body = b'{"ref": "x"}'
    stamp, nonce = str(int(time.time())), uuid.uuid4().hex
    headers = {
        "X-MeshClaw-Timestamp": stamp,
        "X-MeshClaw-Nonce": nonce,
        "X-MeshClaw-Signature": sign(b"hook-secret", stamp, nonce, body),
    }
    with TestClient(create_app(world.platform)) as client:
        refused = client.post(f"/v1/hooks/{agent_id}", content=body, headers=headers)
    assert refused.status_code == 401
    assert world.platform.runs.find(world.alice) == []


def test_api_and_cli_archive_restore_and_page_versions(world: World) -> None:
    agents = world.platform.agents
    for n in (2, 3):
        agents.save(world.alice, parse_spec(HOOKED.replace("You help.", f"You help {n}.")))
    token = world.platform.accounts.issue_token(world.alice.user_id, "t")
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(world.platform)) as client:
        page = client.get(
            "/v1/agents/helper/versions", params={"offset": 1, "limit": 1}, headers=auth
        )
        assert [v["version"] for v in page.json()] == [2]
        done = client.post("/v1/agents/helper/archive", headers=auth)
        assert done.status_code == 200 and done.json()["archived_at"]
        assert client.post("/v1/agents/helper/archive", headers=auth).status_code == 409
        assert client.get("/v1/agents", headers=auth).json() == []
        listed = client.get("/v1/agents", params={"include_archived": "true"}, headers=auth)
        assert [a["name"] for a in listed.json()] == ["helper"]
        run = client.post("/v1/runs", json={"agent": "helper"}, headers=auth)
        assert run.status_code == 409 and "archived" in run.json()["detail"]

    env = {
        "MESHCLAW_HOME": str(world.platform.settings.home),
        "MESHCLAW_EMBEDDED_MODEL_SERVER": "false",
        "MESHCLAW_DATABASE_URL": world.platform.settings.resolved_database_url(),
        "MESHCLAW_CONFIG": None,
        "MESHCLAW_TOKEN": token,
    }
    runner = CliRunner()
    assert "(archived)" in runner.invoke(cli_app, ["agent", "list", "--all"], env=env).stdout
    restored = runner.invoke(cli_app, ["agent", "restore", "helper"], env=env)
    assert restored.exit_code == 0 and "restored helper" in restored.stdout
    again = runner.invoke(cli_app, ["agent", "restore", "helper"], env=env)
    assert again.exit_code == 2 and "already not archived" in " ".join(again.stderr.split())
    versions = runner.invoke(
        cli_app, ["agent", "versions", "helper", "--limit", "2", "--json"], env=env
    )
    assert [v["version"] for v in json.loads(versions.stdout)] == [1, 2]


def test_the_agent_page_archives_and_restores(site_for: SiteFor) -> None:
    site: Site = site_for("http://127.0.0.1:9/v1")
    site.world.save_agent(agent_yaml())
    alice = site.browser("alice")
    csrf = csrf_of(alice, "/ui/agents/helper")
    done = alice.post("/ui/agents/helper/archive", data={"csrf": csrf})
    assert done.status_code == 303 and done.headers["location"].endswith("saved=archived")
    page = alice.get("/ui/agents/helper").text
    assert (
        "it starts no runs and its triggers do not fire" in page
        and "Start test run" not in page
        and "Restore helper" in page
    )
    assert "helper" not in alice.get("/ui/agents").text.split("<tbody>")[-1]
    assert "archived" in alice.get("/ui/agents?archived=1").text
    back = alice.post(
        "/ui/agents/helper/restore", data={"csrf": csrf_of(alice, "/ui/agents/helper")}
    )
    assert back.status_code == 303
    assert "Start test run" in alice.get("/ui/agents/helper").text
