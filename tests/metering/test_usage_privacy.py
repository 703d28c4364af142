"""Usage shown to people follows the privacy tiers (issue 8, item 7; issue 6, item 1):
everyone sees their own; someone else's usage is a drill-down with a reason, recorded
where they can see it and in the audit log; per-person rows of a team or the org are
refused; teams smaller than k are left out."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from meshclaw.accounts.service import Caller
from meshclaw.analytics.usage_views import usage_view
from meshclaw.api.app import create_app
from meshclaw.cli.main import app
from meshclaw.errors import ConflictError, PermissionDenied
from meshclaw.store.models import AuditEvent
from tests.conftest import World


def _view(world: World, caller: Caller, **kw: Any) -> Any:
    platform = world.platform
    return usage_view(platform.db, platform.access, platform.audit, caller, **kw)


@pytest.fixture
def team_admin(ran_world: World) -> Caller:
    """tess, team admin of alice's team (eng), which now has two people; k is 2."""
    accounts = ran_world.platform.accounts
    eng = ran_world.alice.team_id
    tess = accounts.create_user(ran_world.alice.org_id, "tess", team_id=eng, role="team_admin")
    ran_world.platform.analytics.update_settings(ran_world.admin, k=2)
    return accounts.caller_for(tess)


def _views_of(world: World, caller: Caller) -> list[tuple[str, str]]:
    return [(v.viewer_id, v.reason) for v in world.platform.analytics.views_of(caller)]


def _audited_looks(world: World) -> list[dict[str, Any]]:
    with world.platform.db.session() as session:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "analytics.view_person")
        ).all()
        return [{"actor": r.actor_user_id, "resource": r.resource, **r.details} for r in rows]


def test_everyone_sees_their_own_usage_without_a_record(ran_world: World) -> None:
    alice = ran_world.alice
    own = _view(ran_world, alice)
    assert own.group_by == "user" and [r.key for r in own.rows] == ["alice"]
    assert _view(ran_world, alice, user="alice").rows == own.rows
    assert _views_of(ran_world, alice) == [] and _audited_looks(ran_world) == []


def test_a_team_admin_sees_the_team_but_one_person_only_with_a_reason(
    ran_world: World, team_admin: Caller
) -> None:
    alice = ran_world.alice
    # The team as a whole (two people, k = 2): shown, by team by default.
    team = _view(ran_world, team_admin)
    assert team.group_by == "team" and [r.key for r in team.rows] == ["eng"]
    # Everyone's row at once would be a drill-down into each: refused with a hint.
    with pytest.raises(PermissionDenied, match="group by team, agent or model"):
        _view(ran_world, team_admin, group_by="user")
    # One person: a reason is needed, and the look is recorded where alice sees it.
    with pytest.raises(ConflictError, match="stated reason"):
        _view(ran_world, team_admin, user="alice")
    assert _views_of(ran_world, alice) == []
    looked = _view(ran_world, team_admin, user="alice", reason="budget review")
    assert [r.key for r in looked.rows] == ["alice"] and looked.rows[0].model_calls == 2
    assert _views_of(ran_world, alice) == [(team_admin.user_id, "budget review")]
    assert _audited_looks(ran_world) == [
        {"actor": team_admin.user_id, "resource": f"user:{alice.user_id}",
         "reason": "budget review", "what": "usage"}
    ]  # fmt: skip
    # Outside their team (bob, ops): not theirs to look at, reason or not.
    with pytest.raises(PermissionDenied):
        _view(ran_world, team_admin, user="bob", reason="curious")
    assert len(_audited_looks(ran_world)) == 1


def test_teams_smaller_than_k_are_left_out(ran_world: World, team_admin: Caller) -> None:
    admin = ran_world.admin
    assert [r.key for r in _view(ran_world, admin).rows] == ["eng"]  # eng: 2 people
    ran_world.platform.analytics.update_settings(admin, k=3)
    assert _view(ran_world, admin).rows == []
    with pytest.raises(PermissionDenied, match="fewer than 3 people"):
        _view(ran_world, team_admin, group_by="agent")  # the team is all tess sees
    assert _view(ran_world, team_admin, user="tess").rows == []  # her own is fine


def test_the_api_and_cli_apply_the_same_rules(ran_world: World, team_admin: Caller) -> None:
    platform = ran_world.platform
    token = platform.accounts.issue_token(team_admin.user_id, "t")
    with TestClient(create_app(platform)) as client:
        auth = {"Authorization": f"Bearer {token}"}
        everyone = client.get("/v1/usage", params={"group_by": "user"}, headers=auth)
        assert everyone.status_code == 403 and "drill-down" in everyone.json()["detail"]
        no_reason = client.get("/v1/usage", params={"user": "alice"}, headers=auth)
        assert no_reason.status_code == 409 and "reason" in no_reason.json()["detail"]
        looked = client.get(
            "/v1/usage", params={"user": "alice", "reason": "budget review"}, headers=auth
        )
        assert looked.status_code == 200, looked.text
        assert looked.json()["group_by"] == "user" and looked.json()["rows"][0]["key"] == "alice"
        nobody = client.get("/v1/usage", params={"user": "zed", "reason": "x"}, headers=auth)
        assert nobody.status_code == 404

    env = {
        "MESHCLAW_HOME": str(platform.settings.home),
        "MESHCLAW_EMBEDDED_MODEL_SERVER": "false",
        "MESHCLAW_DATABASE_URL": platform.settings.resolved_database_url(),
        "MESHCLAW_CONFIG": None,
        "MESHCLAW_TOKEN": token,
    }
    runner = CliRunner()
    refused = runner.invoke(app, ["usage", "--by", "user"], env=env)
    assert refused.exit_code == 2 and "drill-down" in " ".join(refused.stderr.split())
    shown = runner.invoke(
        app, ["usage", "--user", "alice", "--reason", "cost check", "--json"], env=env
    )
    assert shown.exit_code == 0, shown.output
    assert [v[1] for v in _views_of(ran_world, ran_world.alice)] == ["cost check", "budget review"]
