"""In-platform analytics: team boards with k-anonymity, opt-in individual boards, audited
drill-downs, cost per outcome by tier, and the HTTP routes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner, Result

from meshclaw.accounts.service import Caller
from meshclaw.api.app import create_app
from meshclaw.cli.main import app
from meshclaw.errors import ConflictError, PermissionDenied
from meshclaw.ids import new_id
from meshclaw.outcomes.models import Outcome
from meshclaw.store.models import AuditEvent, Org
from tests.conftest import World, agent_yaml, store_url_of


@dataclass
class Org5:
    world: World
    eng: list[Caller]
    """alice and four more engineers: a team of five."""
    lead: Caller
    """Team admin of eng (the sixth member)."""
    run_id: str
    agent_id: str


@pytest.fixture
def org5(make_world: Callable[..., World]) -> Org5:
    world = make_world()
    accounts = world.platform.accounts
    team = world.alice.team_id
    extra = [
        accounts.caller_for(accounts.create_user(world.alice.org_id, f"eng{i}", team_id=team))
        for i in range(4)
    ]
    lead = accounts.caller_for(
        accounts.create_user(world.alice.org_id, "lead", team_id=team, role="team_admin")
    )
    agent_id = world.save_agent(agent_yaml())
    run_id = world.start_run("helper")
    return Org5(world=world, eng=[world.alice, *extra], lead=lead, run_id=run_id, agent_id=agent_id)


def outcome(o: Org5, owner: Caller, beneficiary: Caller, *, accept: bool = True) -> str:
    """A verified outcome of ``owner`` for ``beneficiary``, accepted by them."""
    oid = new_id("out")
    with o.world.platform.db.session() as session:
        session.add(
            Outcome(
                id=oid, org_id=owner.org_id, team_id=owner.team_id, user_id=owner.user_id,
                agent_id=o.agent_id, run_id=o.run_id, tool="mail.send", type="mail_sent",
                ref=f"<{oid}@x>", beneficiaries=[beneficiary.user_id], verified=True,
                verification={}, evidence={}, value=1.0, state="unaccepted",
            )
        )  # fmt: skip
    if accept:
        o.world.platform.outcomes.feedback(beneficiary, oid, "accepted")
    return oid


def set_org(o: Org5, **analytics: object) -> None:
    with o.world.platform.db.session() as session:
        org = session.get(Org, o.world.alice.org_id)
        assert org is not None
        org.settings = {**(org.settings or {}), "analytics": analytics}


def test_team_board_hides_teams_smaller_than_k(org5: Org5) -> None:
    w = org5.world
    outcome(org5, w.alice, org5.eng[1])
    outcome(org5, w.bob, w.alice)  # ops has one person: never shown
    board = w.platform.analytics.team_board(w.bob)
    assert [(e.id, e.score) for e in board.entries] == [(w.alice.team_id, 0.5)]  # mail weight
    set_org(org5, k=7)
    assert w.platform.analytics.team_board(w.bob).entries == []


def test_individual_boards_are_opt_in(org5: Org5) -> None:
    w = org5.world
    outcome(org5, w.alice, org5.eng[1])
    outcome(org5, org5.eng[1], w.alice)
    analytics = w.platform.analytics
    with pytest.raises(PermissionDenied, match="individual leaderboards are off"):
        analytics.people_board(w.alice)
    set_org(org5, individual_boards=True)
    assert analytics.people_board(w.alice).entries == []
    analytics.opt_in(org5.eng[1], True)
    assert [e.id for e in analytics.people_board(w.alice).entries] == [org5.eng[1].user_id]


def test_drill_down_needs_a_reason_and_permission_and_is_visible_to_the_person(
    org5: Org5,
) -> None:
    w = org5.world
    outcome(org5, w.alice, org5.eng[1])
    analytics = w.platform.analytics
    mine = analytics.person(w.alice, w.alice.user_id)
    assert mine["score"] == 0.5 and mine["outcomes"] == {"credited": 1}
    with pytest.raises(PermissionDenied):
        analytics.person(w.bob, w.alice.user_id, reason="curious")
    with pytest.raises(ConflictError, match="reason"):
        analytics.person(org5.lead, w.alice.user_id)
    assert analytics.views_of(w.alice) == []
    seen = analytics.person(org5.lead, w.alice.user_id, reason="quarterly review")
    assert seen["score"] == 0.5
    (view,) = analytics.views_of(w.alice)
    assert (view.viewer_id, view.reason) == (org5.lead.user_id, "quarterly review")
    with w.platform.db.session() as session:
        audited = session.scalars(
            select(AuditEvent.resource).where(AuditEvent.action == "analytics.view_person")
        ).all()
    assert audited == [f"user:{w.alice.user_id}"]


def test_team_summary_is_for_team_admins_and_k_anonymous(org5: Org5) -> None:
    w = org5.world
    outcome(org5, w.alice, org5.eng[1])
    outcome(org5, org5.eng[2], org5.eng[3], accept=False)
    analytics = w.platform.analytics
    summary = analytics.team_summary(org5.lead, w.alice.team_id or "")
    assert summary["team"]["people"] == 6
    assert summary["totals"]["credited"] == 1 and summary["totals"]["acceptance_rate"] == 0.5
    with pytest.raises(PermissionDenied):
        analytics.team_summary(w.alice, w.alice.team_id or "")
    with pytest.raises(PermissionDenied, match="smaller than 5"):
        analytics.team_summary(w.admin, w.bob.team_id or "")


def test_cost_per_outcome_follows_the_tiers(org5: Org5) -> None:
    w = org5.world
    outcome(org5, w.alice, org5.eng[1])
    analytics = w.platform.analytics
    assert [r.key for r in analytics.cost_per_outcome(w.alice, by="user")] == [w.alice.user_id]
    with pytest.raises(PermissionDenied):
        analytics.cost_per_outcome(org5.lead, by="user")
    (team,) = analytics.cost_per_outcome(w.admin, by="team")
    assert team.key == w.alice.team_id and team.credited == 1


@pytest.fixture
def client(org5: Org5) -> Iterator[TestClient]:
    with TestClient(create_app(org5.world.platform)) as client:
        yield client


def bearer(o: Org5, caller: Caller) -> dict[str, str]:
    token = o.world.platform.accounts.issue_token(caller.user_id, "t")
    return {"Authorization": f"Bearer {token}"}


def test_http_routes(org5: Org5, client: TestClient) -> None:
    w = org5.world
    oid = outcome(org5, w.alice, org5.eng[1], accept=False)
    for path in ("/v1/outcomes", "/v1/analytics/leaderboard", "/v1/outcome-types"):
        assert client.get(path).status_code == 401, path
    alice, eng1 = bearer(org5, w.alice), bearer(org5, org5.eng[1])
    assert [o["id"] for o in client.get("/v1/outcomes", headers=alice).json()] == [oid]
    review = client.get("/v1/outcomes", params={"to_review": True}, headers=eng1).json()
    assert [o["id"] for o in review] == [oid]
    # The owner cannot get a link meant for someone else (she could click it herself).
    refused = client.post(
        f"/v1/outcomes/{oid}/link", json={"reviewer": org5.eng[1].user_id}, headers=alice
    )
    assert refused.status_code == 403
    link = client.post(f"/v1/outcomes/{oid}/link", json={}, headers=eng1).json()
    page = client.get(link["path"])
    assert page.status_code == 200 and "Was this useful?" in page.text
    assert w.platform.outcomes.get(w.alice, oid).state == "unaccepted"  # a GET records nothing
    done = client.post(link["path"], params={"verdict": "accepted"})
    assert done.status_code == 200 and "Recorded: accepted" in done.text
    assert w.platform.outcomes.get(w.alice, oid).state == "credited"
    assert client.post(link["path"] + "x", params={"verdict": "accepted"}).status_code == 401
    board = client.get("/v1/analytics/leaderboard", headers=alice).json()
    assert board == {
        "entries": [{"rank": 1, "team": w.alice.team_id, "score": 0.5, "pending_review": 0.0}]
    }
    rejected = client.post(
        f"/v1/outcomes/{oid}/feedback", json={"verdict": "rejected"}, headers=eng1
    )
    assert rejected.json()["state"] == "undone"
    weights = client.put(
        "/v1/outcome-types/mail_sent", json={"weight": 2}, headers=bearer(org5, w.admin)
    )
    assert weights.json()["mail_sent"] == 2.0
    assert (
        client.put("/v1/outcome-types/mail_sent", json={"weight": 2}, headers=alice).status_code
        == 403
    )
    assert client.put("/v1/analytics/opt-in", json={"opt_in": True}, headers=alice).json() == {
        "opt_in": True
    }
    me = client.get(f"/v1/analytics/people/{w.alice.user_id}", headers=alice).json()
    assert me["user"] == w.alice.user_id
    views = client.get("/v1/analytics/views", headers=alice).json()
    assert views == []


def test_cli_commands(org5: Org5, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = org5.world
    oid = outcome(org5, w.alice, org5.eng[1], accept=False)
    monkeypatch.chdir(tmp_path)
    env = {
        "MESHCLAW_HOME": str(tmp_path / "var"),
        "MESHCLAW_EMBEDDED_MODEL_SERVER": "false",
        "MESHCLAW_DATABASE_URL": store_url_of(tmp_path),
        "MESHCLAW_CONFIG": None,
    }

    def run(caller: Caller, *args: str) -> Result:
        token = w.platform.accounts.issue_token(caller.user_id, "cli")
        result = CliRunner().invoke(app, [*args, "--token", token], env=env)
        return result

    listed = run(w.alice, "outcomes", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert [o["id"] for o in json.loads(listed.stdout)] == [oid]
    accepted = run(org5.eng[1], "outcomes", "accept", oid, "--note", "great", "--json")
    assert json.loads(accepted.stdout)["state"] == "credited"
    shown = run(w.alice, "outcomes", "show", oid)
    assert shown.exit_code == 0 and "great" in shown.stdout
    denied = run(w.alice, "outcomes", "weights", "--set", "deploy=9")
    assert denied.exit_code == 2 and "platform admins" in denied.stderr
    weights = run(w.admin, "outcomes", "weights", "--set", "deploy=9", "--json")
    assert json.loads(weights.stdout)["deploy"] == 9.0
    board = run(w.alice, "analytics", "board", "--json")
    assert json.loads(board.stdout)["entries"][0]["team"] == w.alice.team_id
    cost = run(w.alice, "outcomes", "cost", "--by", "user", "--json")
    assert json.loads(cost.stdout)[0]["credited"] == 1
    look = run(org5.lead, "analytics", "person", w.alice.user_id, "--reason", "1:1 prep")
    assert look.exit_code == 0, look.output
    views = run(w.alice, "analytics", "views", "--json")
    assert [v["reason"] for v in json.loads(views.stdout)] == ["1:1 prep"]
    assert run(w.alice, "analytics", "opt-in").stdout.strip() == "opted in"
    assert run(w.alice, "outcomes", "link", oid, "--json").exit_code == 2  # not hers to judge
    link = run(org5.eng[1], "outcomes", "link", oid, "--json")
    assert json.loads(link.stdout)["path"].startswith("/v1/feedback/")
    recheck = run(w.admin, "outcomes", "recheck", "--json")
    assert json.loads(recheck.stdout) == {"checked": 0, "undone": 0, "silently_accepted": 0}


def test_org_analytics_settings(org5: Org5) -> None:
    w = org5.world
    analytics = w.platform.analytics
    assert analytics.settings(w.alice) == {
        "k": 5, "individual_boards": False, "cutoff_weekday": 4, "cutoff_hour": 17,
    }  # fmt: skip
    with pytest.raises(PermissionDenied):
        analytics.update_settings(w.alice, k=2)
    with pytest.raises(ConflictError):
        analytics.update_settings(w.admin, k=1)
    with pytest.raises(ConflictError, match="hour"):
        analytics.update_settings(w.admin, cutoff_hour=30)
    now = analytics.update_settings(w.admin, k=7, individual_boards=True)
    assert now["k"] == 7 and now["individual_boards"] is True
    outcome(org5, w.alice, org5.eng[1])
    assert analytics.team_board(w.alice).entries == []  # eng has 6 < 7 people
    assert analytics.people_board(w.alice).entries == []  # nobody opted in


def test_http_team_and_settings_routes(org5: Org5, client: TestClient) -> None:
    w = org5.world
    outcome(org5, w.alice, org5.eng[1])
    lead, admin = bearer(org5, org5.lead), bearer(org5, w.admin)
    team = client.get(f"/v1/analytics/teams/{w.alice.team_id}", headers=lead)
    assert team.status_code == 200 and team.json()["totals"]["credited"] == 1
    small = client.get(f"/v1/analytics/teams/{w.bob.team_id}", headers=admin)
    assert small.status_code == 403
    nosy = client.get(f"/v1/analytics/people/{w.alice.user_id}", headers=lead)
    assert nosy.status_code == 409  # a reason is required
    ok = client.get(
        f"/v1/analytics/people/{w.alice.user_id}", params={"reason": "review"}, headers=lead
    )
    assert ok.status_code == 200 and ok.json()["score"] == 0.5
    assert client.put("/v1/analytics/settings", json={"k": 3}, headers=lead).status_code == 403
    changed = client.put("/v1/analytics/settings", json={"k": 3}, headers=admin).json()
    assert changed["k"] == 3
    assert client.get("/v1/analytics/settings", headers=lead).json()["k"] == 3
    cost = client.get("/v1/outcomes-cost", params={"by": "team"}, headers=admin).json()
    assert [r["credited"] for r in cost] == [1]


def test_open_integrity_findings_withhold_credit_until_dismissed(org5: Org5) -> None:
    from meshclaw.integrity.models import IntegrityFinding

    w = org5.world
    outcome(org5, w.alice, org5.eng[1])
    outcome(org5, org5.eng[1], w.alice)
    fid = new_id("fnd")
    with w.platform.db.session() as session:
        session.add(
            IntegrityFinding(
                id=fid, org_id=w.alice.org_id, subject=w.alice.user_id, detector="self_addressed",
                status="open", strength=0.9, score=0.9, evidence={}, source="test",
            )
        )  # fmt: skip
    analytics = w.platform.analytics
    mine = analytics.person(w.alice, w.alice.user_id)
    assert (mine["score"], mine["pending_review"]) == (0.0, 0.5)
    (team,) = analytics.team_board(w.alice).entries
    assert (team.score, team.pending) == (0.5, 0.5)
    with w.platform.db.session() as session:
        row = session.get(IntegrityFinding, fid)
        assert row is not None
        row.status = "dismissed"
    assert analytics.person(w.alice, w.alice.user_id)["score"] == 0.5
