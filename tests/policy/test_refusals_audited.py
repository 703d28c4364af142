"""Refusals and token use are in the audit log (issue 5, item 1; issue 6, item 1).

A refused API action (a Cedar ``require``) appends ``api.denied`` with who, what and
why; a policy engine error fails closed and appends ``policy.error``; an API token's use
appends ``token.use`` on first use and then at most once per interval, and a revoked
token's use ``token.refused``. Questions services ask to find what someone may see
(``authorize_api``) are not refusals and leave no record."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from meshclaw.api.app import create_app
from meshclaw.errors import AuthError, PermissionDenied
from meshclaw.metering.usage import visibility
from meshclaw.policy.api import ApiResource
from meshclaw.store.models import AuditEvent
from tests.conftest import World


def _records(world: World, action: str) -> list[dict[str, Any]]:
    with world.platform.db.session() as session:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
        ).all()
        return [
            {"actor": r.actor_user_id, "resource": r.resource, "outcome": r.outcome, **r.details}
            for r in rows
        ]


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    return make_world()


def test_a_refused_connector_add_is_recorded_with_the_reason(world: World) -> None:
    token = world.platform.accounts.issue_token(world.alice.user_id, "t")
    with TestClient(create_app(world.platform)) as client:
        refused = client.post(
            "/v1/connectors",
            json={"name": "fx", "config": {"transport": "stdio", "command": "true"}},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert refused.status_code == 403, refused.text
    assert refused.json()["title"] == "Forbidden"
    [record] = _records(world, "api.denied")
    assert record["actor"] == world.alice.user_id and record["outcome"] == "denied"
    assert record["action"].startswith("connector.") and "deny by default" in record["reason"]


def test_questions_are_not_refusals(world: World) -> None:
    # Finding what alice may see asks for the org and her team first, both denied.
    assert visibility(world.platform.access, world.alice).kind == "self"
    assert _records(world, "api.denied") == []


def test_a_policy_engine_error_fails_closed_and_is_recorded(world: World) -> None:
    access = world.platform.access
    # Two descriptions of one team with different orgs: corrupt data the engine refuses.
    bad = ApiResource.agent(
        id="agt_x", org_id="org_other", owner_id=world.alice.user_id, team_id=world.alice.team_id
    )
    decision = access.authorize_api(world.alice, "agent.read", bad)
    assert not decision.allowed and "policy engine error" in decision.reason
    with pytest.raises(PermissionDenied, match="policy engine error"):
        access.require(world.alice, "agent.read", bad)
    errors = _records(world, "policy.error")
    assert len(errors) == 2 and errors[0]["action"] == "agent.read"
    assert errors[0]["resource"] == "Agent:agt_x"
    assert len(_records(world, "api.denied")) == 1  # the require's refusal


def test_token_use_is_recorded_once_per_interval_and_revoked_use_every_time(
    world: World,
) -> None:
    accounts = world.platform.accounts
    secret = accounts.issue_token(world.alice.user_id, "laptop")
    for _ in range(3):
        assert accounts.authenticate(secret).user_id == world.alice.user_id
    [used] = _records(world, "token.use")
    assert used["actor"] == world.alice.user_id and used["name"] == "laptop"
    assert used["resource"].startswith("token:")
    assert secret not in repr(_records(world, "token.use"))

    accounts._token_use_interval = timedelta(0)  # every request, as the setting 0 says
    accounts.authenticate(secret)
    assert len(_records(world, "token.use")) == 2

    [info] = accounts.tokens(world.alice)
    accounts.revoke_token(world.alice, info.id)
    for _ in range(2):
        with pytest.raises(AuthError, match="revoked"):
            accounts.authenticate(secret)
    refused = _records(world, "token.refused")
    assert [r["outcome"] for r in refused] == ["denied", "denied"]
    with pytest.raises(AuthError):
        accounts.authenticate("not-a-token")  # unknown: nothing to attribute it to
    assert len(_records(world, "token.refused")) == 2


def test_reading_and_probing_connectors_are_cedar_actions(world: World) -> None:
    """An org policy can take connector probes away (they connect with one's own
    credential) while the list stays readable; the refusal is recorded."""
    platform = world.platform
    assert [c.name for c in platform.connector_admin.list_connectors(world.alice)] == []
    no_probes = (
        '@id("org.no-probes")\nforbid (principal, action == Action::"connector.test", resource);\n'
    )
    platform.org_policies.save(world.admin, no_probes, note="probes are the admins' job")
    token = platform.accounts.issue_token(world.alice.user_id, "t")
    with TestClient(create_app(platform)) as client:
        auth = {"Authorization": f"Bearer {token}"}
        assert client.get("/v1/connectors", headers=auth).status_code == 200
        probe = client.post("/v1/connectors/notes/test", headers=auth)
        assert probe.status_code == 403 and "org.no-probes" in probe.json()["detail"]
    [record] = _records(world, "api.denied")
    assert record["action"] == "connector.test" and "org.no-probes" in record["reason"]
