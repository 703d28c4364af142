"""Connectors resolve credentials in their own org, against real MCP servers on loopback:
another org's connector naming a reference gets no credential (its server never sees
the secret), and a vault row moved to another org in SQL fails to open, clearly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from meshclaw.accounts.service import Caller
from meshclaw.api.app import create_app
from meshclaw.connectors.base import ToolContext
from meshclaw.errors import ConfigError
from meshclaw.platform import Platform
from meshclaw.policy.vault import VaultCredentialStore
from tests.conftest import World
from tests.policy.two_orgs import TwoOrgs, two_orgs

ACME_SECRET = "acme-mail-secret-1"
GLOBEX_SECRET = "globex-mail-secret-2"
BEARER = {"Authorization": "Bearer {token}"}


@pytest.fixture
def orgs(make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch) -> TwoOrgs:
    return two_orgs(make_world, monkeypatch)


def http_connector(url: str) -> dict[str, Any]:
    return {"transport": "http", "url": url, "credentials": "mail", "credential_headers": BEARER}


def context(caller: Caller) -> ToolContext:
    return ToolContext(
        org_id=caller.org_id,
        user_id=caller.user_id,
        agent_id="agt_x",
        run_id="run_x",
        step_id="stp_x",
        idempotency_key="idem_x",
    )


def test_another_orgs_connector_naming_a_reference_gets_no_credential(
    orgs: TwoOrgs, http_fixture_server: Callable[..., str]
) -> None:
    """Globex's admin points a connector at their own server and names acme's ``mail``:
    the server never gets acme's secret (it would accept only that), the call fails with
    a clear error; once globex puts its own ``mail``, its own secret is used."""
    world, platform, admin = orgs.world, orgs.world.platform, orgs.world.platform.connector_admin
    acme_url = http_fixture_server({"FIXTURE_TOKEN": ACME_SECRET})
    snooping_url = http_fixture_server({"FIXTURE_TOKEN": ACME_SECRET})
    platform.vault.put("mail", {"token": ACME_SECRET}, org_id=orgs.acme)
    admin.add(world.admin, "fx", http_connector(acme_url))
    admin.add(orgs.mallory, "fx", http_connector(snooping_url))

    with TestClient(create_app(platform)) as client:
        token = platform.accounts.issue_token(orgs.mallory.user_id, "test")
        probe = client.post("/v1/connectors/fx/test", headers={"Authorization": f"Bearer {token}"})
    assert probe.status_code == 200, probe.text
    assert probe.json()["ok"] is False
    assert "no credential 'mail' in this org" in probe.json()["error"]
    assert ACME_SECRET not in probe.text

    async def call(caller: Caller) -> str:
        connector = admin.build(caller.org_id, "fx")
        try:
            await connector.refresh(caller.user_id)
            admin.approve(world.admin if caller.org_id == orgs.acme else orgs.mallory, "fx")
            result = await connector.call_tool("echo", {"message": "hi"}, context(caller))
        finally:
            await connector.aclose()
        return result.content

    with pytest.raises(ConfigError, match="no credential 'mail' in this org"):
        asyncio.run(call(orgs.mallory))
    assert asyncio.run(call(world.alice)) == "echo: hi"  # acme's own connector still works

    # Globex's own mail, on a server that wants globex's secret: used, acme's untouched.
    globex_url = http_fixture_server({"FIXTURE_TOKEN": GLOBEX_SECRET})
    admin.remove(orgs.mallory, "fx")
    admin.add(orgs.mallory, "fx", http_connector(globex_url))
    platform.vault.put("mail", {"token": GLOBEX_SECRET}, org_id=orgs.globex)
    assert asyncio.run(call(orgs.mallory)) == "echo: hi"
    assert asyncio.run(call(world.alice)) == "echo: hi"


def _move(platform: Platform, org_id: str, **extra: Any) -> None:
    """What a DBA could do: move every row to ``org_id`` (and change other columns)."""
    assignments = ", ".join(["org_id = :org", *(f"{k} = :{k}" for k in extra)])
    with platform.db.session() as session:
        session.execute(text(f"UPDATE vault_entries SET {assignments}"), {"org": org_id} | extra)


def test_a_row_moved_to_another_org_in_sql_does_not_open(
    orgs: TwoOrgs, http_fixture_server: Callable[..., str]
) -> None:
    world, platform, admin = orgs.world, orgs.world.platform, orgs.world.platform.connector_admin
    platform.vault.put("mail", {"token": ACME_SECRET}, org_id=orgs.acme)
    (info,) = platform.vault.entries(org_id=orgs.acme)
    assert info.org_bound
    _move(platform, orgs.globex)
    store = VaultCredentialStore(platform.vault)
    with pytest.raises(ConfigError, match="does not open in this org") as caught:
        store.resolve("mail", org_id=orgs.globex)
    assert ACME_SECRET not in str(caught.value)
    # Claiming the row predates orgs (the old associated data) does not help either.
    _move(platform, orgs.globex, aad_version=1)
    with pytest.raises(ConfigError, match="does not open in this org"):
        store.resolve("mail", org_id=orgs.globex)

    # Through a connector: a clear probe error, not a traceback, and no secret sent.
    url = http_fixture_server({"FIXTURE_TOKEN": ACME_SECRET})
    admin.add(orgs.mallory, "fx", http_connector(url))
    report = asyncio.run(admin.test(orgs.mallory, "fx"))
    assert not report.ok and report.error is not None
    assert "vault entry 'mail' (default) does not open in this org" in report.error
    # Moved back, as it was: it opens again.
    _move(platform, orgs.acme, aad_version=2)
    assert store.resolve("mail", org_id=orgs.acme).field("token") == ACME_SECRET
    assert world.alice.org_id == orgs.acme
