"""Connectors belong to an org: another org neither sees, probes, approves, removes nor
runs them, and two orgs may each have a connector of the same name."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from meshclaw.accounts.service import Caller
from meshclaw.api.app import create_app
from meshclaw.config import Settings
from meshclaw.connectors.base import Connector
from meshclaw.connectors.config import ConnectorConfig
from meshclaw.connectors.credentials import FileCredentialStore
from meshclaw.connectors.models import ConnectorRecord, ConnectorTool
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.connectors.service import ConnectorService
from meshclaw.errors import ConfigError, NotFoundError
from meshclaw.platform import Platform
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.spec.loader import parse_spec
from meshclaw.store.db import alembic_config, make_engine, migrate
from tests.conftest import FAST_RETRY, World, agent_yaml
from tests.connectors.conftest import FIXTURE_SERVER

Start = Callable[[dict[str, Any]], ScriptedServer]


@dataclass
class TwoOrgs:
    world: World
    """Org ``acme`` (A): alice, bob, root (its platform admin)."""
    mallory: Caller
    """Org ``globex`` (B)'s platform admin."""
    client: TestClient

    def bearer(self, caller: Caller) -> dict[str, str]:
        token = self.world.platform.accounts.issue_token(caller.user_id, "test")
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def orgs(make_world: Callable[..., World]) -> Iterator[TwoOrgs]:
    world = make_world()
    mallory = globex_admin(world)
    with TestClient(create_app(world.platform)) as client:
        yield TwoOrgs(world=world, mallory=mallory, client=client)


def globex_admin(world: World) -> Caller:
    """A second org, ``globex``, and its platform admin mallory."""
    accounts = world.platform.accounts
    globex = accounts.create_org("globex")
    return accounts.caller_for(accounts.create_user(globex.id, "mallory", role="platform_admin"))


def fixture(description: Path | None = None) -> dict[str, Any]:
    env = {"FIXTURE_DESCRIPTION_FILE": str(description)} if description else {}
    return {"command": sys.executable, "args": [str(FIXTURE_SERVER)], "env": env}


def test_another_orgs_admin_gets_404_for_every_connector_operation(orgs: TwoOrgs) -> None:
    world, client = orgs.world, orgs.client
    world.platform.connector_admin.add(world.admin, "fx", fixture())
    asyncio.run(world.platform.connector_admin.tools(world.admin, "fx"))
    mallory = orgs.bearer(orgs.mallory)

    assert client.get("/v1/connectors", headers=mallory).json() == []
    for method, path, body in [
        ("GET", "/v1/connectors/fx/tools", None),
        ("GET", "/v1/connectors/fx/tools?refresh=false", None),
        ("POST", "/v1/connectors/fx/test", None),
        ("POST", "/v1/connectors/fx/approve", {}),
        ("POST", "/v1/connectors/fx/approve", {"tools": ["echo"]}),
        ("DELETE", "/v1/connectors/fx", None),
    ]:
        answer = client.request(method, path, json=body, headers=mallory)
        # Not 403: a 403 would tell org B that org A has a connector called fx.
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["detail"] == "no connector 'fx' (see `meshclaw connector list`)" or (
            method == "DELETE" and "no stored connector 'fx'" in answer.json()["detail"]
        )
    # Nothing of org A's changed: still there, nothing approved.
    (info,) = world.platform.connector_admin.list_connectors(world.alice)
    assert info.name == "fx" and "approved" not in info.tools
    # Org A's own people still answer by role: bob sees it, but may not manage it.
    bob = orgs.bearer(world.bob)
    assert [c["name"] for c in client.get("/v1/connectors", headers=bob).json()] == ["fx"]
    assert client.delete("/v1/connectors/fx", headers=bob).status_code == 403


def test_two_orgs_each_have_their_own_connector_of_the_same_name(
    orgs: TwoOrgs, tmp_path: Path
) -> None:
    world, client, admin = orgs.world, orgs.client, orgs.world.platform.connector_admin
    mine, theirs = tmp_path / "a.txt", tmp_path / "b.txt"
    mine.write_text("Echo, for acme.")
    theirs.write_text("Echo, for globex.")
    root, mallory = orgs.bearer(world.admin), orgs.bearer(orgs.mallory)
    for headers, description in ((root, mine), (mallory, theirs)):
        created = client.post(
            "/v1/connectors", json={"name": "fx", "config": fixture(description)}, headers=headers
        )
        assert created.status_code == 201, created.text
    duplicate = {"name": "fx", "config": fixture()}
    assert client.post("/v1/connectors", json=duplicate, headers=mallory).status_code == 409

    def echo(headers: dict[str, str]) -> dict[str, Any]:
        tools = client.get("/v1/connectors/fx/tools", headers=headers).json()
        found: dict[str, Any] = next(t for t in tools if t["tool"] == "echo")
        return found

    assert echo(root)["definition"]["description"] == "Echo, for acme."
    assert echo(mallory)["definition"]["description"] == "Echo, for globex."
    # Approving in globex approves globex's definition only.
    body = {"tools": ["echo"], "expected_hash": echo(mallory)["definition_hash"]}
    assert client.post("/v1/connectors/fx/approve", json=body, headers=mallory).status_code == 200
    assert echo(mallory)["status"] == "approved" and echo(root)["status"] == "pending"
    # The same hash is refused in acme: acme's server describes echo differently.
    assert client.post("/v1/connectors/fx/approve", json=body, headers=root).status_code == 409

    # Removing globex's fx leaves acme's, and forgets globex's approvals.
    assert client.delete("/v1/connectors/fx", headers=mallory).status_code == 204
    assert client.get("/v1/connectors", headers=mallory).json() == []
    assert [i.name for i in admin.list_connectors(world.alice)] == ["fx"]
    assert admin.approvals(orgs.mallory.org_id).states("fx") == []
    assert len(admin.approvals(world.alice.org_id).states("fx")) >= 6


def test_a_run_in_another_org_cannot_use_the_connector(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted(
        {
            "mode": "match",
            "turns": [
                {
                    "match": {"last_user": "acme"},
                    "reply": {"tool_calls": [{"name": "fx.echo", "arguments": {"message": "x"}}]},
                },
                {"match": {"last_tool": "echo: x"}, "reply": {"content": "echoed"}},
                {"match": {"last_user": "globex"}, "reply": {"content": "no fx here"}},
            ],
        }
    )
    world = make_world(server.base_url)
    mallory = globex_admin(world)
    platform = world.platform
    platform.connector_admin.add(world.admin, "fx", fixture())
    asyncio.run(platform.connector_admin.tools(world.admin, "fx"))
    platform.connector_admin.approve(world.admin, "fx")
    spec = agent_yaml(tools=(("fx.*", "read"), ("clock.now", "read")))
    world.save_agent(spec)
    platform.agents.save(mallory, parse_spec(spec.replace("owner: alice", "owner: mallory")))
    acme_run = world.start_run("helper", "acme")
    globex_run = platform.runs.create(mallory, "helper", "globex")
    assert platform.runs.claim(globex_run.id)

    async def scenario() -> tuple[Connector | None, dict[str, Any]]:
        # One registry for both runs, as the in-process worker keeps one gateway.
        registry = platform.connectors()
        gateway = platform.build_gateway(retry=FAST_RETRY, connectors=registry)
        try:
            await platform.executor(gateway).execute(acme_run)  # fx is held for acme now
            await platform.executor(gateway).execute(globex_run.id)
            found = registry.get("fx", org_id=mallory.org_id)
            listed = await registry.tools("fx", org_id=mallory.org_id, user_id=mallory.user_id)
            return found, listed
        finally:
            await gateway.aclose()

    found, listed = asyncio.run(scenario())
    assert found is None and listed == {}
    assert world.platform.runs.get(world.alice, acme_run).output == "echoed"
    info = platform.runs.get(mallory, globex_run.id)
    assert info.status == "succeeded", info.error
    assert info.output == "no fx here"
    offered = {t["function"]["name"] for t in server.requests[-1]["tools"]}
    assert offered == {"clock__now"}  # granted fx.*, but globex has no fx


def test_settings_connectors_belong_to_their_named_org_or_the_oldest(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    mallory = globex_admin(world)
    platform = world.platform
    service = ConnectorService(
        db=platform.db,
        audit=platform.audit,
        access=platform.access,
        settings_connectors={
            "plain": ConnectorConfig(command="x"),
            "theirs": ConnectorConfig(command="y", org="globex"),
            "nobodys": ConnectorConfig(command="z", org="no-such-org"),
        },
        credentials=FileCredentialStore(Path("/nonexistent/credentials.json")),
    )
    assert [i.name for i in service.list_connectors(world.alice)] == ["plain"]  # acme is oldest
    assert [i.name for i in service.list_connectors(mallory)] == ["theirs"]
    with pytest.raises(NotFoundError):
        service.config(mallory, "plain")
    assert service.resolve(world.alice.org_id, "theirs") is None
    # A connector naming no org is used by nobody, and said so (not dropped silently).
    assert service.unplaced() == {"nobodys": "no-such-org"}
    # globex may add its own "plain"; acme may not (it has one in settings).
    service.add(mallory, "plain", {"command": "w"})
    with pytest.raises(ConfigError, match="only for connectors declared in settings"):
        service.add(mallory, "other", {"command": "w", "org": "acme"})


def test_listing_tools_uses_the_run_owners_delegated_credential(
    scripted: Start, make_world: Callable[..., World], http_fixture_server: Callable[..., str]
) -> None:
    """A server reached only with per-user credentials (no default) lists its tools."""
    url = http_fixture_server({"FIXTURE_TOKEN": "alice-only-7"})
    server = scripted(
        {
            "turns": [
                {"reply": {"tool_calls": [{"name": "fx.echo", "arguments": {"message": "hi"}}]}},
                {"reply": {"content": "echoed"}},
            ]
        }
    )
    world = make_world(server.base_url)
    platform = world.platform
    platform.vault.put(
        "fx-token",
        {"token": "alice-only-7"},
        org_id=world.alice.org_id,
        user_id=world.alice.user_id,
    )
    platform.connector_admin.add(
        world.admin,
        "fx",
        {
            "transport": "http",
            "url": url,
            "credentials": "fx-token",
            "credential_headers": {"Authorization": "Bearer {token}"},
        },
    )

    async def listed(user_id: str | None) -> set[str]:
        registry = platform.connectors()
        try:
            tools = await registry.tools("fx", org_id=world.alice.org_id, user_id=user_id)
        finally:
            await registry.aclose()
        return set(tools)

    # On no one's behalf there is no credential to list with (what list_tools() did).
    with pytest.raises(ConfigError, match="no credential 'fx-token'"):
        asyncio.run(listed(None))
    # Alice may list (as herself) so an admin can review; the admin approves what she saw.
    states = asyncio.run(platform.connector_admin.tools(world.alice, "fx"))
    assert {"echo", "save"} <= {s.tool for s in states}
    platform.connector_admin.approve(world.admin, "fx")
    assert {"echo", "save"} <= asyncio.run(listed(world.alice.user_id))

    world.save_agent(agent_yaml(tools=(("fx.echo", "read"),)))
    info = world.run("helper")
    assert info.status == "succeeded", info.error
    assert info.output == "echoed"
    assert "fx__echo" in {t["function"]["name"] for t in server.requests[0]["tools"]}


def test_migration_gives_existing_connectors_and_tools_an_org(
    database_url: str, tmp_path: Path
) -> None:
    """Rows from before: a connector gets its creator's org; a settings connector's tools
    go to the oldest org; what cannot be placed is dropped."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(database_url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "connectors_0001")
            for org, created in (("org_old", now), ("org_new", now.replace(month=2))):
                conn.execute(
                    text(
                        "INSERT INTO orgs (id, name, settings, created_at) "
                        "VALUES (:id, :id, '{}', :at)"
                    ),
                    {"id": org, "at": created},
                )
            conn.execute(
                text(
                    "INSERT INTO users (id, org_id, handle, display_name, role, created_at) "
                    "VALUES ('usr_n', 'org_new', 'nina', '', 'platform_admin', :at)"
                ),
                {"at": now},
            )
            for name, creator in (("mail", "usr_n"), ("gone", "usr_unknown")):
                conn.execute(
                    text(
                        "INSERT INTO connectors (id, name, config, created_by, created_at) "
                        "VALUES (:id, :name, '{}', :by, :at)"
                    ),
                    {"id": f"con_{name}", "name": name, "by": creator, "at": now},
                )
            for connector in ("mail", "declared"):
                conn.execute(
                    text(
                        "INSERT INTO connector_tools (id, connector, tool, definition, "
                        "definition_hash, first_seen_at, last_seen_at) VALUES "
                        "(:id, :c, 'send', '{}', 'h', :at, :at)"
                    ),
                    {"id": f"ctl_{connector}", "c": connector, "at": now},
                )
    finally:
        engine.dispose()
    migrate(database_url)
    platform = Platform(
        Settings(home=tmp_path / "var", database_url=database_url, embedded_model_server=False)
    )
    try:
        with platform.db.session() as session:
            stored = session.execute(select(ConnectorRecord.name, ConnectorRecord.org_id))
            connectors = {name: org for name, org in stored}
            recorded = session.execute(select(ConnectorTool.connector, ConnectorTool.org_id))
            tools = {name: org for name, org in recorded}
    finally:
        platform.close()
    assert connectors == {"mail": "org_new", "gone": "org_old"}
    assert tools == {"mail": "org_new", "declared": "org_old"}


def test_a_long_lived_registry_follows_removal_and_changes_per_org(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = make_world()
    mallory = globex_admin(world)
    admin = world.platform.connector_admin
    acme = world.alice.org_id
    admin.add(world.admin, "fx", fixture())
    asyncio.run(admin.tools(world.admin, "fx"))
    admin.approve(world.admin, "fx")
    description = tmp_path / "globex.txt"
    description.write_text("Echo, for globex.")

    async def scenario() -> list[set[str]]:
        registry = ConnectorRegistry(resolve=admin.resolve, ttl_seconds=0)
        seen = []
        try:
            seen.append(set(await registry.tools("fx", org_id=acme)))
            seen.append(set(await registry.tools("fx", org_id=mallory.org_id)))
            # globex adds its own fx (first use trusted): acme's stays as it was.
            admin.add(mallory, "fx", fixture(description) | {"approval": "first_use"})
            globex = await registry.tools("fx", org_id=mallory.org_id)
            assert globex["echo"].description == "Echo, for globex."
            assert (await registry.tools("fx", org_id=acme))["echo"].description != (
                "Echo, for globex."
            )
            admin.remove(world.admin, "fx")
            seen.append(set(await registry.tools("fx", org_id=acme)))
            assert registry.get("fx", org_id=acme) is None
            seen.append(set(await registry.tools("fx", org_id=mallory.org_id)))
        finally:
            await registry.aclose()
        return seen

    before, other_org, after_removal, globex_after = asyncio.run(scenario())
    assert {"echo", "save"} <= before and other_org == set()
    assert after_removal == set() and "echo" in globex_after
