"""Each org's own policies: stored, versioned, validated on save, applied to that org only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from meshclaw.accounts.service import Caller
from meshclaw.api.app import create_app
from meshclaw.config import Settings
from meshclaw.errors import ConflictError, PermissionDenied, PolicyError
from meshclaw.platform import Platform
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.policy.authorizer import AuthzRequest, Principal
from meshclaw.policy.cedar import CedarAuthorizer
from meshclaw.policy.store import MemoryOrgPolicies, PolicyStore
from meshclaw.spec.loader import parse_spec
from meshclaw.store.models import AuditEvent
from tests.conftest import World, agent_yaml

NO_NOTES = (
    '@id("org.no-notes")\n'
    'forbid (principal, action == Action::"tool.write", resource == Tool::"notes.write");\n'
)
NO_RUNS = '@id("org.no-runs")\nforbid (principal, action == Action::"run.start", resource);\n'
BAD = (
    '@id("org.fine")\n'
    'forbid (principal, action == Action::"run.start", resource);\n'
    "\n"
    '@id("org.typo")\n'
    'forbid (principal, action == Action::"tool.write", resource)\n'
    "when { context.untrusted };\n"
)
SPEC = parse_spec(agent_yaml())


def _write(org_id: str, agent_id: str) -> AuthzRequest:
    return AuthzRequest(
        principal=Principal(org_id=org_id, user_id=f"usr_{org_id}", agent_id=agent_id),
        action="tool.write",
        resource="tool:notes.write",
        spec=SPEC,
        context={"run_id": "run_1", "trigger": "manual", "arguments": {"title": "t"}},
    )


def _person(org_id: str) -> Caller:
    return Caller(user_id=f"usr_{org_id}", org_id=org_id, team_id=None, handle="p", role="employee")


# -- the decision path, in memory ----------------------------------------------------------


def test_org_a_forbid_does_not_touch_org_b_agents_or_people() -> None:
    orgs = MemoryOrgPolicies()
    store = PolicyStore(orgs=orgs, recheck_seconds=0)
    cedar, access = CedarAuthorizer(store), ApiAuthorizer(store)
    assert cedar.authorize(_write("org_a", "agt_a")).allowed
    assert cedar.authorize(_write("org_b", "agt_b")).allowed

    orgs.put("org_a", NO_NOTES + NO_RUNS)

    denied = cedar.authorize(_write("org_a", "agt_a"))
    assert not denied.allowed and denied.policies == ("org.no-notes",)
    assert cedar.authorize(_write("org_b", "agt_b")).allowed
    run_a = ApiResource.agent(id="agt_a", org_id="org_a", owner_id="usr_org_a")
    run_b = ApiResource.agent(id="agt_b", org_id="org_b", owner_id="usr_org_b")
    refused = access.authorize_api(_person("org_a"), "run.start", run_a)
    assert not refused.allowed and "org.no-runs" in refused.reason
    assert access.authorize_api(_person("org_b"), "run.start", run_b).allowed
    # Org B's explanation does not even contain org A's text.
    texts = cedar.explain(_write("org_b", "agt_b")).policy_texts
    assert not any("org.no-notes" in t for t in texts.values())
    assert "org.no-notes" not in store.for_org("org_b").text


def test_the_generation_is_asked_at_most_every_recheck_interval() -> None:
    now = [0.0]
    orgs = MemoryOrgPolicies()
    store = PolicyStore(orgs=orgs, recheck_seconds=1.0, clock=lambda: now[0])
    cedar = CedarAuthorizer(store)
    assert cedar.authorize(_write("org_a", "agt_a")).allowed
    orgs.put("org_a", NO_NOTES)  # as another process would
    now[0] = 0.5
    assert cedar.authorize(_write("org_a", "agt_a")).allowed  # not asked yet: cached
    now[0] = 1.0
    assert not cedar.authorize(_write("org_a", "agt_a")).allowed


def test_an_install_wide_operator_policy_applies_to_every_org() -> None:
    orgs = MemoryOrgPolicies()
    store = PolicyStore(NO_NOTES, orgs=orgs, recheck_seconds=0)
    orgs.put("org_b", NO_RUNS)
    cedar = CedarAuthorizer(store)
    assert not cedar.authorize(_write("org_a", "agt_a")).allowed
    assert not cedar.authorize(_write("org_b", "agt_b")).allowed
    # An org may not reuse an operator policy's id.
    issues = store.validate(NO_NOTES)
    assert [i.policy for i in issues] == ["org.no-notes"] and "reserved" in issues[0].message


def test_a_stored_text_that_no_longer_validates_fails_closed() -> None:
    orgs = MemoryOrgPolicies()
    store = PolicyStore(orgs=orgs, recheck_seconds=0)
    orgs.put("org_a", BAD)  # e.g. written before a schema change
    decision = CedarAuthorizer(store).authorize(_write("org_a", "agt_a"))
    assert not decision.allowed and "policy engine error" in decision.reason
    assert "line 4" in decision.reason
    assert CedarAuthorizer(store).authorize(_write("org_b", "agt_b")).allowed


# -- stored in the database, through the service ------------------------------------------


@dataclass
class TwoOrgs:
    world: World
    eve: Caller
    """Org B's platform admin."""
    eves_agent: str
    auditor: Caller


@pytest.fixture
def two_orgs(make_world: Callable[..., World]) -> TwoOrgs:
    world = make_world()
    world.save_agent(agent_yaml())
    accounts = world.platform.accounts
    globex = accounts.create_org("globex")
    eve = accounts.caller_for(accounts.create_user(globex.id, "eve", role="platform_admin"))
    eves_agent = world.save_agent(agent_yaml().replace("owner: alice", "owner: eve"), eve)
    auditor = accounts.caller_for(accounts.create_user(world.alice.org_id, "aud", role="auditor"))
    return TwoOrgs(world=world, eve=eve, eves_agent=eves_agent, auditor=auditor)


def test_saved_org_policy_applies_to_that_org_only(two_orgs: TwoOrgs) -> None:
    world, platform = two_orgs.world, two_orgs.world.platform
    info, changed = platform.org_policies.save(world.admin, NO_RUNS, note="freeze")
    assert changed and info.version == 1 and info.created_by == "root"
    with pytest.raises(PermissionDenied, match=r"org\.no-runs"):
        platform.runs.create(world.alice, "helper")
    # Org B is untouched: eve still starts her runs.
    assert platform.runs.create(two_orgs.eve, two_orgs.eves_agent).id
    with pytest.raises(PermissionDenied):  # an employee does not manage policies
        platform.org_policies.save(world.alice, "")
    # Org B's admin saves org B's policies, never org A's.
    platform.org_policies.save(two_orgs.eve, NO_NOTES)
    assert platform.org_policies.current(world.admin).text == NO_RUNS
    assert platform.org_policies.current(two_orgs.eve).text == NO_NOTES


def test_an_invalid_policy_is_rejected_with_its_line_and_the_previous_stays(
    two_orgs: TwoOrgs,
) -> None:
    world, platform = two_orgs.world, two_orgs.world.platform
    platform.org_policies.save(world.admin, NO_RUNS)
    with pytest.raises(PolicyError) as caught:
        platform.org_policies.save(world.admin, BAD)
    [issue] = caught.value.issues
    assert issue.line == 4 and issue.policy == "org.typo"
    assert "untrusted" in issue.message  # Cedar's own message
    assert "line 4: org.typo" in str(caught.value)
    current = platform.org_policies.current(world.admin)
    assert current.version == 1 and current.text == NO_RUNS
    with pytest.raises(PermissionDenied, match=r"org\.no-runs"):
        platform.runs.create(world.alice, "helper")
    with pytest.raises(PolicyError, match="parse error"):
        platform.org_policies.save(world.admin, "forbid (principal, action, resource")


def test_versions_are_recorded_diffed_and_audited(two_orgs: TwoOrgs) -> None:
    world, platform = two_orgs.world, two_orgs.world.platform
    service = platform.org_policies
    assert service.current(world.admin).version == 0
    service.save(world.admin, NO_RUNS, note="freeze runs")
    service.save(world.admin, NO_RUNS + NO_NOTES)
    again, changed = service.save(world.admin, NO_RUNS + NO_NOTES)
    assert not changed and again.version == 2  # the same text is no new version
    with pytest.raises(ConflictError, match="version 2, not 1"):
        service.save(world.admin, "", expected_version=1)
    with pytest.raises(PolicyError):
        service.save(world.admin, BAD)
    versions = service.versions(two_orgs.auditor)
    assert [(v.version, v.note, v.created_by) for v in versions] == [
        (2, "", "root"),
        (1, "freeze runs", "root"),
    ]
    diff = service.diff(world.admin, 1, 2)
    assert diff.startswith("--- v1\n+++ v2\n") and '+@id("org.no-notes")' in diff
    assert service.version(world.admin, 0).text == ""
    assert service.versions(two_orgs.eve) == []  # org B sees only its own
    assert len(service.versions(world.alice)) == 2  # everyone reads the rules they are under
    with platform.db.session() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "policy.update").order_by(AuditEvent.seq)
        ).all()
        assert [(e.outcome, e.actor_user_id, e.details.get("version")) for e in events] == [
            ("ok", world.admin.user_id, 1),
            ("ok", world.admin.user_id, 2),
            ("invalid", world.admin.user_id, None),
        ]
        assert events[1].details["lines_added"] == 2 and events[0].org_id == world.admin.org_id


@pytest.fixture
def two_processes(tmp_path: Path) -> Iterator[tuple[Platform, Platform]]:
    settings = Settings(home=tmp_path / "var", embedded_model_server=False)
    first = Platform(settings)
    second = Platform(settings, apply_migrations=False)  # another process's view
    yield first, second
    first.close()
    second.close()


def test_another_process_sees_the_change(two_processes: tuple[Platform, Platform]) -> None:
    first, second = two_processes
    accounts = first.accounts
    org = accounts.create_org("acme")
    admin = accounts.caller_for(accounts.create_user(org.id, "root", role="platform_admin"))
    alice = accounts.caller_for(accounts.create_user(org.id, "alice"))
    first.agents.save(alice, SPEC)
    now = [0.0]
    second.policies.clock = lambda: now[0]
    assert second.runs.create(alice, "helper").id  # caches org A's (empty) set

    first.org_policies.save(admin, NO_RUNS)

    with pytest.raises(PermissionDenied):  # the saving process applies it at once
        first.runs.create(alice, "helper")
    now[0] += second.policies.recheck_seconds  # the other, on its next check
    with pytest.raises(PermissionDenied, match=r"org\.no-runs"):
        second.runs.create(alice, "helper")
    assert second.org_policies.current(admin).version == 1


# -- over HTTP -----------------------------------------------------------------------------


def test_the_policy_api(two_orgs: TwoOrgs) -> None:
    world, platform = two_orgs.world, two_orgs.world.platform
    accounts = platform.accounts

    def auth(caller: Caller) -> dict[str, str]:
        return {"Authorization": f"Bearer {accounts.issue_token(caller.user_id, 't')}"}

    root, alice, eve = auth(world.admin), auth(world.alice), auth(two_orgs.eve)
    with TestClient(create_app(platform)) as client:
        empty = client.get("/v1/policy", headers=root).json()
        assert empty["version"] == 0 and empty["policies"] == ""
        assert (
            client.put("/v1/policy", json={"policies": NO_NOTES}, headers=alice).status_code == 403
        )
        saved = client.put("/v1/policy", json={"policies": NO_NOTES, "note": "n"}, headers=root)
        assert saved.status_code == 200, saved.text
        assert saved.json()["version"] == 1 and saved.json()["changed"]
        bad = client.put("/v1/policy", json={"policies": BAD, "expected_version": 1}, headers=root)
        assert bad.status_code == 422
        problem = bad.json()
        assert problem["errors"] == [
            {"policy": "org.typo", "line": 4, "message": problem["errors"][0]["message"]}
        ]
        assert "untrusted" in problem["errors"][0]["message"] and "line 4" in problem["detail"]
        stale = client.put("/v1/policy", json={"policies": "", "expected_version": 0}, headers=root)
        assert stale.status_code == 409
        assert client.get("/v1/policy", headers=root).json()["version"] == 1
        listed = client.get("/v1/policy/versions", headers=root).json()
        assert [v["version"] for v in listed] == [1] and listed[0]["created_by"] == "root"
        diff = client.get("/v1/policy/diff", params={"old": 0, "new": 1}, headers=root).json()
        assert '+@id("org.no-notes")' in diff["diff"]
        assert (
            client.get("/v1/policy/diff", params={"old": 0, "new": 7}, headers=root).status_code
            == 404
        )
        # Explain uses the caller's org's policies: alice's agent is refused in org A ...
        body = {"agent": "helper", "tool": "notes.write", "arguments": {"title": "t"}}
        explained = client.post("/v1/policy/explain", json=body, headers=alice).json()
        assert not explained["allowed"] and explained["policies"] == ["org.no-notes"]
        # ... eve's, in org B, is not; and org B sees none of org A's policies.
        body["agent"] = two_orgs.eves_agent
        assert client.post("/v1/policy/explain", json=body, headers=eve).json()["allowed"]
        assert client.get("/v1/policy", headers=eve).json()["version"] == 0
        assert client.get("/v1/policy/versions", headers=eve).json() == []
        # The install's policy file is the operator's: no org admin reloads it.
        assert client.post("/v1/policy/reload", headers=root).status_code in (404, 405)


def test_a_model_decision_is_reused_within_a_run_until_a_policy_changes() -> None:
    orgs = MemoryOrgPolicies()
    cedar = CedarAuthorizer(PolicyStore(orgs=orgs, recheck_seconds=0))
    model = AuthzRequest(
        principal=Principal(org_id="org_a", user_id="usr_a", agent_id="agt_a"),
        action="model.invoke",
        resource="model:scripted/test-model",
        spec=SPEC,
        context={"run_id": "run_1", "trigger": "manual"},
    )
    first = cedar.explain(model)
    assert first.decision.allowed
    assert cedar.explain(model) is first  # the same question, the same answer object
    # Another context is another question.
    tainted = cedar.explain(
        AuthzRequest(
            **{**vars(model), "context": {**model.context, "untrusted_content_seen": True}}
        )
    )
    assert tainted is not first and tainted.decision.allowed
    # A policy changed mid-run applies to the very next call.
    orgs.put(
        "org_a",
        '@id("org.no-models")\nforbid (principal, action == Action::"model.invoke", resource);\n',
    )
    denied = cedar.explain(model).decision
    assert not denied.allowed and denied.policies == ("org.no-models",)
