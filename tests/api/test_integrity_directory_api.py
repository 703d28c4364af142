"""``/v1/integrity``, ``/v1/users``, ``/v1/teams`` and ``/v1/prices`` in-process.

A real platform on a temp SQLite store; people from ``make_world`` (alice and bob,
employees; root, platform admin) plus dave (auditor), lead (team admin of alice's team)
and eve (platform admin of another org).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from meshclaw.accounts.directory import Directory
from meshclaw.accounts.service import Caller
from meshclaw.api.app import create_app
from meshclaw.errors import ConflictError
from meshclaw.events import ReadReport
from meshclaw.integrity import Finding, ScanResult, UserResult
from meshclaw.metering.prices import ModelPrice, PriceTable
from meshclaw.policy.api import ApiAuthorizer
from meshclaw.policy.cedar import PolicyStore
from meshclaw.store.models import AuditEvent
from tests.conftest import World

PROBLEM = "application/problem+json"


@dataclass
class Setup:
    world: World
    client: TestClient
    dave: Caller
    lead: Caller
    eve: Caller

    def auth(self, who: str) -> dict[str, str]:
        caller = getattr(self.world, who, None) or getattr(self, who)
        token = self.world.platform.accounts.issue_token(caller.user_id, "test")
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def setup(make_world: Callable[..., World]) -> Iterator[Setup]:
    world = make_world()
    accounts = world.platform.accounts
    org = world.alice.org_id
    dave = accounts.caller_for(accounts.create_user(org, "dave", role="auditor"))
    lead = accounts.caller_for(
        accounts.create_user(org, "lead", role="team_admin", team_id=world.alice.team_id)
    )
    other = accounts.create_org("globex")
    eve = accounts.caller_for(accounts.create_user(other.id, "eve", role="platform_admin"))
    with TestClient(create_app(world.platform)) as client:
        yield Setup(world=world, client=client, dave=dave, lead=lead, eve=eve)


def scan(*people: tuple[Caller, str, float]) -> ScanResult:
    users = [
        UserResult(
            user=who.user_id,
            flagged=True,
            score=score,
            findings=[
                Finding(
                    detector=d,
                    user=who.user_id,
                    strength=0.7,
                    evidence={"example_runs": [f"run_{who.handle}"], "share": 0.75},
                )
            ],
        )
        for who, d, score in people
    ]
    return ScanResult(users=users, report=ReadReport(), threshold=0.5)


def record(s: Setup) -> dict[str, str]:
    """Findings about alice (0.9), bob (0.7) and dave (0.6); returns finding id by handle."""
    result = scan(
        (s.world.alice, "repeated_tasks", 0.9),
        (s.world.bob, "no_outcome_runs", 0.7),
        (s.dave, "read_only_churn", 0.6),
    )
    s.world.platform.findings.record(s.world.admin, result, source="scan:x.jsonl")
    page = s.world.platform.findings.find(s.world.admin)
    names = {s.world.alice.user_id: "alice", s.world.bob.user_id: "bob", s.dave.user_id: "dave"}
    return {names[f.subject]: f.id for f in page.findings}


# -- integrity ---------------------------------------------------------------------------


def test_integrity_routes_need_a_token_and_are_in_openapi(setup: Setup) -> None:
    for method, path in [
        ("GET", "/v1/integrity/findings"),
        ("GET", "/v1/integrity/findings/x"),
        ("POST", "/v1/integrity/findings/x/review"),
        ("GET", "/v1/users"),
        ("POST", "/v1/users"),
        ("PATCH", "/v1/users/x"),
        ("GET", "/v1/teams"),
        ("POST", "/v1/teams"),
        ("GET", "/v1/prices"),
    ]:
        response = setup.client.request(method, path)
        assert response.status_code == 401, path
        assert response.headers["content-type"] == PROBLEM
    paths = setup.client.get("/openapi.json").json()["paths"]
    assert {
        "/v1/integrity/findings",
        "/v1/integrity/findings/{finding_id}",
        "/v1/integrity/findings/{finding_id}/review",
        "/v1/users",
        "/v1/users/{user}",
        "/v1/teams",
        "/v1/prices",
    } <= set(paths)


def test_the_queue_filters_pages_and_shows_evidence(setup: Setup) -> None:
    ids = record(setup)
    h = setup.auth("dave")
    queue = setup.client.get("/v1/integrity/findings", headers=h).json()
    assert queue["total"] == 3 and [f["subject_handle"] for f in queue["findings"]] == [
        "alice",
        "bob",
        "dave",
    ]
    assert queue["detectors"][setup.world.alice.user_id] == ["repeated_tasks"]
    first = setup.client.get("/v1/integrity/findings", params={"limit": 2}, headers=h).json()
    assert len(first["findings"]) == 2 and first["next_offset"] == 2
    rest = setup.client.get(
        "/v1/integrity/findings", params={"limit": 2, "offset": 2}, headers=h
    ).json()
    assert [f["id"] for f in rest["findings"]] == [ids["dave"]] and rest["next_offset"] is None
    by_detector = setup.client.get(
        "/v1/integrity/findings", params={"detector": "no_outcome_runs"}, headers=h
    ).json()
    assert [f["id"] for f in by_detector["findings"]] == [ids["bob"]]
    by_subject = setup.client.get(
        "/v1/integrity/findings", params={"subject": "alice"}, headers=h
    ).json()
    assert [f["id"] for f in by_subject["findings"]] == [ids["alice"]]
    done = setup.client.get(
        "/v1/integrity/findings", params={"status": "dismissed"}, headers=h
    ).json()
    assert done["total"] == 0
    bad = setup.client.get("/v1/integrity/findings", params={"status": "pending"}, headers=h)
    assert bad.status_code == 422 and bad.headers["content-type"] == PROBLEM
    too_many = setup.client.get("/v1/integrity/findings", params={"limit": 5000}, headers=h)
    assert too_many.status_code == 422

    detail = setup.client.get(f"/v1/integrity/findings/{ids['alice']}", headers=h).json()
    assert detail["evidence"] == {"example_runs": ["run_alice"], "share": 0.75}
    assert [r["id"] for r in detail["related"]] == [ids["alice"]]
    assert [e["status"] for e in detail["history"]] == ["open"]
    assert setup.client.get("/v1/integrity/findings/fnd_nope", headers=h).status_code == 404


def test_review_moves_with_reasons_and_refuses_invalid_transitions(setup: Setup) -> None:
    ids = record(setup)
    h = setup.auth("dave")
    url = f"/v1/integrity/findings/{ids['alice']}/review"
    started = setup.client.post(url, json={"status": "under_review"}, headers=h)
    assert started.status_code == 200 and started.json()["status"] == "under_review"
    again = setup.client.post(url, json={"status": "under_review"}, headers=h)
    assert again.status_code == 409 and again.headers["content-type"] == PROBLEM
    assert "is under_review: cannot start" in again.json()["detail"]
    no_reason = setup.client.post(url, json={"status": "confirmed", "reason": " "}, headers=h)
    assert no_reason.status_code == 422
    assert no_reason.json()["errors"][0]["path"] == "body.reason"
    bogus = setup.client.post(url, json={"status": "open"}, headers=h)
    assert bogus.status_code == 422
    dismissed = setup.client.post(
        url, json={"status": "dismissed", "reason": "on-call week"}, headers=h
    )
    assert dismissed.status_code == 200
    body = dismissed.json()
    assert (body["status"], body["reason"], body["reviewed_by"]) == (
        "dismissed",
        "on-call week",
        setup.dave.user_id,
    )
    assert [e["status"] for e in body["history"]] == ["open", "under_review", "dismissed"]
    assert body["history"][-1]["actor_handle"] == "dave"
    late = setup.client.post(url, json={"status": "confirmed", "reason": "late"}, headers=h)
    assert late.status_code == 409 and "is dismissed" in late.json()["detail"]
    # A platform admin reviews too.
    admin = setup.auth("admin")
    bob = f"/v1/integrity/findings/{ids['bob']}/review"
    ok = setup.client.post(bob, json={"status": "confirmed", "reason": "clear"}, headers=admin)
    assert ok.status_code == 200
    with setup.world.platform.db.session() as session:
        actions = session.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.action.like("integrity.finding.%"))
            .order_by(AuditEvent.seq)
        ).all()
    assert actions[-3:] == [
        "integrity.finding.under_review",
        "integrity.finding.dismissed",
        "integrity.finding.confirmed",
    ]


def test_nobody_reviews_a_finding_about_themselves(setup: Setup) -> None:
    ids = record(setup)
    own = setup.client.post(
        f"/v1/integrity/findings/{ids['dave']}/review",
        json={"status": "dismissed", "reason": "that is me, all fine"},
        headers=setup.auth("dave"),
    )
    assert own.status_code == 403
    assert "integrity.no-self-review" in own.json()["detail"]


def test_employees_see_only_their_own_findings(setup: Setup) -> None:
    ids = record(setup)
    h = setup.auth("alice")
    mine = setup.client.get("/v1/integrity/findings", headers=h).json()
    assert [f["id"] for f in mine["findings"]] == [ids["alice"]] and mine["total"] == 1
    assert setup.client.get(f"/v1/integrity/findings/{ids['bob']}", headers=h).status_code == 404
    peer = setup.client.get("/v1/integrity/findings", params={"subject": "bob"}, headers=h)
    assert peer.status_code == 403
    assert setup.client.get(f"/v1/integrity/findings/{ids['alice']}", headers=h).status_code == 200
    review = {"status": "dismissed", "reason": "not me"}
    own = setup.client.post(f"/v1/integrity/findings/{ids['alice']}/review", json=review, headers=h)
    assert own.status_code == 403
    other = setup.client.post(f"/v1/integrity/findings/{ids['bob']}/review", json=review, headers=h)
    assert other.status_code == 404
    lead = setup.auth("lead")
    assert setup.client.get("/v1/integrity/findings", headers=lead).json()["total"] == 0
    assert (
        setup.client.get(f"/v1/integrity/findings/{ids['alice']}", headers=lead).status_code == 404
    )


def test_another_org_sees_and_changes_nothing(setup: Setup) -> None:
    ids = record(setup)
    h = setup.auth("eve")
    assert setup.client.get("/v1/integrity/findings", headers=h).json()["total"] == 0
    assert setup.client.get(f"/v1/integrity/findings/{ids['alice']}", headers=h).status_code == 404
    moved = setup.client.post(
        f"/v1/integrity/findings/{ids['alice']}/review",
        json={"status": "dismissed", "reason": "x"},
        headers=h,
    )
    assert moved.status_code == 404
    people = setup.client.get("/v1/users", headers=h).json()
    assert [p["handle"] for p in people["people"]] == ["eve"]
    alice = setup.world.alice.user_id
    assert setup.client.get(f"/v1/users/{alice}", headers=h).status_code == 404
    patch = setup.client.patch(f"/v1/users/{alice}", json={"role": "auditor"}, headers=h)
    assert patch.status_code == 404
    assert setup.client.get("/v1/teams", headers=h).json() == []
    team = setup.client.post("/v1/users", json={"handle": "x", "team": "eng"}, headers=h)
    assert team.status_code == 422 and team.json()["errors"][0]["path"] == "body.team"


# -- directory ---------------------------------------------------------------------------


def test_admins_create_people_and_teams_and_change_roles(setup: Setup) -> None:
    h = setup.auth("admin")
    team = setup.client.post("/v1/teams", json={"name": "data"}, headers=h)
    assert team.status_code == 201 and team.json()["people"] == 0
    assert setup.client.post("/v1/teams", json={"name": "data"}, headers=h).status_code == 409
    blank = setup.client.post("/v1/teams", json={"name": "  "}, headers=h)
    assert blank.status_code == 422 and blank.json()["errors"][0]["path"] == "body.name"

    created = setup.client.post(
        "/v1/users",
        json={"handle": "frank@acme.test", "role": "employee", "team": "data"},
        headers=h,
    )
    assert created.status_code == 201, created.text
    frank = created.json()
    assert (frank["team"], frank["role"], frank["display_name"]) == (
        "data",
        "employee",
        "frank@acme.test",
    )
    dup = setup.client.post("/v1/users", json={"handle": "frank@acme.test"}, headers=h)
    assert dup.status_code == 409
    invalid = setup.client.post(
        "/v1/users", json={"handle": "no spaces", "role": "boss"}, headers=h
    )
    assert invalid.status_code == 422
    assert {e["path"] for e in invalid.json()["errors"]} == {"body.handle", "body.role"}

    moved = setup.client.patch(
        f"/v1/users/{frank['id']}", json={"role": "team_admin", "team": "eng"}, headers=h
    )
    assert moved.status_code == 200
    assert (moved.json()["role"], moved.json()["team"]) == ("team_admin", "eng")
    untouched = setup.client.patch("/v1/users/frank@acme.test", json={"role": "auditor"}, headers=h)
    assert untouched.json()["team"] == "eng"  # team not sent: kept
    no_team = setup.client.patch("/v1/users/frank@acme.test", json={"team": None}, headers=h)
    assert no_team.json()["team"] is None
    self_change = setup.client.patch("/v1/users/root", json={"role": "employee"}, headers=h)
    assert self_change.status_code == 403
    assert "directory.no-self-change" in self_change.json()["detail"]

    with setup.world.platform.db.session() as session:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.action.like("directory.%")).order_by(AuditEvent.seq)
        ).all()
        trail = [(r.action, r.details.get("role")) for r in rows]
    assert trail == [
        ("directory.team.create", None),
        ("directory.user.create", "employee"),
        ("directory.user.update", ["employee", "team_admin"]),
        ("directory.user.update", ["team_admin", "auditor"]),
        ("directory.user.update", None),
    ]
    for who in ("alice", "lead", "dave"):
        refused = setup.client.post(
            "/v1/users", json={"handle": f"x{who}"}, headers=setup.auth(who)
        )
        assert refused.status_code == 403, who


def test_who_may_list_the_directory(setup: Setup) -> None:
    everyone = setup.client.get("/v1/users", headers=setup.auth("admin")).json()
    assert [p["handle"] for p in everyone["people"]] == ["alice", "bob", "dave", "lead", "root"]
    auditor = setup.client.get("/v1/users", params={"role": "employee"}, headers=setup.auth("dave"))
    assert [p["handle"] for p in auditor.json()["people"]] == ["alice", "bob"]
    paged = setup.client.get(
        "/v1/users", params={"limit": 2, "offset": 2}, headers=setup.auth("dave")
    ).json()
    assert [p["handle"] for p in paged["people"]] == ["dave", "lead"] and paged["next_offset"] == 4
    lead = setup.client.get("/v1/users", headers=setup.auth("lead")).json()
    assert [p["handle"] for p in lead["people"]] == ["alice", "lead"]
    assert lead["team_id"] == setup.world.alice.team_id
    other_team = setup.client.get("/v1/users", params={"team": "ops"}, headers=setup.auth("lead"))
    assert other_team.status_code == 403
    teams = setup.client.get("/v1/teams", headers=setup.auth("lead")).json()
    assert [t["name"] for t in teams] == ["eng"] and teams[0]["people"] == 2
    assert setup.client.get("/v1/users", headers=setup.auth("alice")).status_code == 403
    assert setup.client.get("/v1/teams", headers=setup.auth("alice")).status_code == 403
    search = setup.client.get("/v1/users", params={"q": "AL"}, headers=setup.auth("admin")).json()
    assert [p["handle"] for p in search["people"]] == ["alice"]


def test_an_org_keeps_a_platform_admin(setup: Setup) -> None:
    # Built-in policies already stop an admin changing their own role; an org policy that
    # lets auditors manage the directory must still not leave the org without an admin.
    store = PolicyStore(
        '@id("org.auditors-manage")\n'
        'permit (principal in Role::"auditor", action == Action::"directory.manage", resource);\n'
    )
    platform = setup.world.platform
    directory = Directory(
        platform.db, platform.audit, ApiAuthorizer(store), prices=lambda: platform.prices
    )
    with pytest.raises(ConflictError, match="only platform admin"):
        directory.update_user(setup.dave, "root", role="employee")
    assert directory.update_user(setup.dave, "alice", role="platform_admin").role == (
        "platform_admin"
    )
    assert directory.update_user(setup.dave, "root", role="employee").role == "employee"


# -- prices ------------------------------------------------------------------------------


def test_everyone_reads_the_price_table_in_force(setup: Setup) -> None:
    prices = setup.client.get("/v1/prices", headers=setup.auth("alice"))
    assert prices.status_code == 200
    body = prices.json()
    assert body["version"] == setup.world.platform.prices.version
    mini = next(p for p in body["prices"] if p["model"] == "gpt-4o-mini")
    assert Decimal(mini["input"]) == Decimal("0.15") and mini["status"] == "in force"
    assert setup.client.get("/v1/prices", headers=setup.auth("eve")).status_code == 200


def test_the_price_view_picks_the_entry_in_force_and_lists_scheduled_ones(
    setup: Setup,
) -> None:
    def price(value: str, start: date | None) -> ModelPrice:
        return ModelPrice(
            provider="p", model="m", input=Decimal(value), output=Decimal(value),
            effective_from=start,
        )  # fmt: skip

    table = PriceTable(
        version="t1",
        prices=[price("1", None), price("2", date(2026, 1, 1)), price("3", date(2026, 6, 1))],
    )
    platform = setup.world.platform
    directory = Directory(platform.db, platform.audit, platform.access, prices=lambda: table)
    view = directory.prices(setup.world.alice, day=date(2026, 3, 1))
    rows: list[tuple[Any, ...]] = [(p.input, p.status) for p in view.prices]
    assert rows == [(Decimal("2"), "in force"), (Decimal("3"), "scheduled")]
    early = directory.prices(setup.world.alice, day=date(2025, 3, 1))
    assert [(p.input, p.status) for p in early.prices] == [
        (Decimal("1"), "in force"),
        (Decimal("2"), "scheduled"),
        (Decimal("3"), "scheduled"),
    ]
