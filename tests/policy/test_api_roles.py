"""Roles as Cedar policies: who may do what through the API, and never across orgs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from meshclaw.accounts.service import Caller
from meshclaw.errors import NotFoundError, PermissionDenied
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.policy.cedar import PolicyStore
from tests.conftest import World, agent_yaml


def caller(handle: str, role: str, org: str = "org_a", team: str | None = "team_1") -> Caller:
    return Caller(user_id=f"usr_{handle}", org_id=org, team_id=team, handle=handle, role=role)


ALICE = caller("alice", "employee")
BOB = caller("bob", "employee", team="team_2")
LEAD = caller("lead", "team_admin")
ROOT = caller("root", "platform_admin", team=None)
AUDITOR = caller("audrey", "auditor", team=None)
EVE = caller("eve", "platform_admin", org="org_b", team=None)

ALICES_AGENT = ApiResource.agent(id="agt_1", org_id="org_a", owner_id="usr_alice", team_id="team_1")
ALICES_RUN = ApiResource.run(
    id="run_1", org_id="org_a", owner_id="usr_alice", agent_id="agt_1", team_id="team_1"
)
TEAM_1 = ApiResource.team(id="team_1", org_id="org_a")
ALICE_PERSON = ApiResource.person(id="usr_alice", org_id="org_a", team_id="team_1")
ORG_A = ApiResource.org("org_a")


@pytest.fixture(scope="module")
def access() -> ApiAuthorizer:
    return ApiAuthorizer(PolicyStore())


@pytest.mark.parametrize(
    ("who", "action", "resource", "allowed"),
    [
        (ALICE, "agent.create", ALICES_AGENT, True),
        (ALICE, "run.start", ALICES_AGENT, True),
        (ALICE, "run.read", ALICES_RUN, True),
        (ALICE, "approval.grant", ALICES_RUN, True),
        (ALICE, "analytics.view_person", ALICE_PERSON, True),
        (ALICE, "analytics.view_team", TEAM_1, False),
        (ALICE, "audit.read", ORG_A, False),
        (BOB, "agent.update", ALICES_AGENT, False),
        (BOB, "run.start", ALICES_AGENT, False),
        (BOB, "run.read", ALICES_RUN, False),
        (BOB, "approval.grant", ALICES_RUN, False),
        (BOB, "analytics.view_person", ALICE_PERSON, False),
        (BOB, "agent.read", ALICES_AGENT, True),
        (LEAD, "analytics.view_team", TEAM_1, True),
        (LEAD, "analytics.view_team", ApiResource.team(id="team_2", org_id="org_a"), False),
        (LEAD, "analytics.view_person", ALICE_PERSON, False),
        (LEAD, "run.start", ALICES_AGENT, False),
        (ROOT, "agent.update", ALICES_AGENT, True),
        (ROOT, "run.start", ALICES_AGENT, True),
        (ROOT, "approval.grant", ALICES_RUN, True),
        (ROOT, "policy.manage", ORG_A, True),
        (ROOT, "analytics.view_person", ALICE_PERSON, False),
        (AUDITOR, "audit.read", ORG_A, True),
        (AUDITOR, "run.read", ALICES_RUN, False),
        (AUDITOR, "policy.manage", ORG_A, False),
        (EVE, "agent.read", ALICES_AGENT, False),
        (EVE, "run.start", ALICES_AGENT, False),
        (EVE, "audit.read", ORG_A, False),
        (EVE, "analytics.view_team", TEAM_1, False),
        (ALICE, "integrity.read", ALICE_PERSON, True),
        (ALICE, "integrity.read", ORG_A, False),
        (ALICE, "integrity.review", ALICE_PERSON, False),
        (BOB, "integrity.read", ALICE_PERSON, False),
        (LEAD, "integrity.read", ALICE_PERSON, False),
        (AUDITOR, "integrity.read", ORG_A, True),
        (AUDITOR, "integrity.review", ALICE_PERSON, True),
        (ROOT, "integrity.review", ALICE_PERSON, True),
        (AUDITOR, "integrity.review", ApiResource.person(id="usr_audrey", org_id="org_a"), False),
        (EVE, "integrity.read", ALICE_PERSON, False),
        (ALICE, "directory.read", ORG_A, False),
        (LEAD, "directory.read", ORG_A, False),
        (LEAD, "directory.read", TEAM_1, True),
        (LEAD, "directory.read", ApiResource.team(id="team_2", org_id="org_a"), False),
        (AUDITOR, "directory.read", ORG_A, True),
        (AUDITOR, "directory.manage", ORG_A, False),
        (ROOT, "directory.manage", ORG_A, True),
        (ROOT, "directory.manage", ALICE_PERSON, True),
        (ROOT, "directory.manage", ApiResource.person(id="usr_root", org_id="org_a"), False),
        (EVE, "directory.manage", ALICE_PERSON, False),
        (ALICE, "price.read", ORG_A, True),
        (EVE, "price.read", ORG_A, False),
        (ROOT, "connector.manage", ORG_A, True),
        (LEAD, "connector.manage", ORG_A, False),
    ],
)
def test_role_matrix(
    access: ApiAuthorizer, who: Caller, action: str, resource: ApiResource, allowed: bool
) -> None:
    decision = access.authorize_api(who, action, resource)
    assert decision.allowed is allowed, decision.reason


def test_a_person_is_seen_only_through_an_audited_drill_down(access: ApiAuthorizer) -> None:
    assert access.authorize_api(
        LEAD, "analytics.view_person", ALICE_PERSON, drill_down=True
    ).allowed
    bobs = ApiResource.person(id="usr_bob", org_id="org_a", team_id="team_2")
    assert not access.authorize_api(LEAD, "analytics.view_person", bobs, drill_down=True).allowed
    assert access.authorize_api(ROOT, "analytics.view_person", bobs, drill_down=True).allowed


def test_cross_org_is_forbidden_even_for_a_platform_admin(access: ApiAuthorizer) -> None:
    decision = access.authorize_api(EVE, "run.start", ALICES_AGENT)
    assert decision.policies == ("tenant.isolation",)
    assert decision.reason == "forbidden by tenant.isolation"
    org = access.authorize_api(EVE, "policy.manage", ORG_A)
    assert org.policies == ("tenant.isolation.org",)


def test_org_policies_can_take_rights_away(access: ApiAuthorizer) -> None:
    store = PolicyStore(
        '@id("org.frozen")\nforbid (principal, action == Action::"agent.create", resource);\n'
    )
    frozen = ApiAuthorizer(store)
    assert access.authorize_api(ROOT, "agent.create", ALICES_AGENT).allowed
    decision = frozen.authorize_api(ROOT, "agent.create", ALICES_AGENT)
    assert not decision.allowed and decision.policies == ("org.frozen",)


def test_unknown_action_and_require(access: ApiAuthorizer) -> None:
    assert not access.authorize_api(ROOT, "everything.do", ORG_A).allowed
    with pytest.raises(PermissionDenied, match=r"nope \(run.start denied: no policy permits"):
        access.require(BOB, "run.start", ALICES_AGENT, message="nope")


def test_explain_carries_the_policy_text(access: ApiAuthorizer) -> None:
    explanation = access.explain(ALICE, "run.start", ALICES_AGENT)
    assert explanation.decision.policies == ("role.employee.run.start",)
    assert "resource.owner == principal" in explanation.policy_texts["role.employee.run.start"]


# -- the services ask Cedar ---------------------------------------------------------------


def test_registry_and_runs_use_the_policy(make_world: Callable[..., World]) -> None:
    world = make_world()
    world.save_agent(agent_yaml())
    bobs = agent_yaml(name="bobs").replace("owner: alice", "owner: bob")
    with pytest.raises(PermissionDenied, match="only create agents that you own"):
        world.save_agent(bobs)
    world.save_agent(bobs, caller=world.admin)  # a platform admin may
    with pytest.raises(PermissionDenied, match="belongs to someone else"):
        world.platform.runs.create(world.bob, "helper")
    run = world.platform.runs.create(world.alice, "helper")
    with pytest.raises(NotFoundError):
        world.platform.runs.get(world.bob, run.id)
    assert world.platform.runs.get(world.admin, run.id).id == run.id
    assert [r.id for r in world.platform.runs.find(world.admin)] == [run.id]
    assert world.platform.runs.find(world.bob) == []


def test_org_policy_loaded_on_the_platform_applies_to_services(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    world.save_agent(agent_yaml())
    world.platform.policies.load(
        '@id("org.no-manual-runs")\nforbid (principal, action == Action::"run.start", resource);\n'
    )
    with pytest.raises(PermissionDenied, match=r"org\.no-manual-runs"):
        world.platform.runs.create(world.alice, "helper")


def test_nobody_sees_another_orgs_runs(make_world: Callable[..., World]) -> None:
    world = make_world()
    world.save_agent(agent_yaml())
    run = world.platform.runs.create(world.alice, "helper")
    accounts = world.platform.accounts
    other = accounts.create_org("globex")
    eve = accounts.caller_for(accounts.create_user(other.id, "eve", role="platform_admin"))
    with pytest.raises(NotFoundError):
        world.platform.runs.get(eve, run.id)
    assert world.platform.runs.find(eve) == []


def test_org_policy_can_hide_agents_from_people(make_world: Callable[..., World]) -> None:
    world = make_world()
    world.save_agent(agent_yaml())
    assert [a.name for a in world.platform.agents.list_agents(world.bob)] == ["helper"]
    world.platform.policies.load(
        '@id("org.agents-private")\n'
        'forbid (principal, action == Action::"agent.read", resource)\n'
        'unless { resource.owner == principal || principal in Role::"platform_admin" };\n'
    )
    assert world.platform.agents.list_agents(world.bob) == []
    with pytest.raises(NotFoundError):
        world.platform.agents.get(world.bob, "helper")
    assert world.platform.agents.get(world.alice, "helper").name == "helper"
    assert [a.name for a in world.platform.agents.list_agents(world.admin)] == ["helper"]


def test_the_documented_team_admin_approver_policy() -> None:
    store = PolicyStore(
        '@id("org.team-admins-approve")\n'
        'permit (principal in Role::"team_admin", action == Action::"approval.grant", resource)\n'
        "when { principal has team && resource has team && principal.team == resource.team };\n"
    )
    access = ApiAuthorizer(store)
    assert access.authorize_api(LEAD, "approval.grant", ALICES_RUN).allowed
    other_team = caller("lead2", "team_admin", team="team_2")
    assert not access.authorize_api(other_team, "approval.grant", ALICES_RUN).allowed
