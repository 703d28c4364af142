"""Usage, analytics settings, re-pricing and budgets as Cedar policies (``policy/roles.py``).

Each role's permissions hold in its own org and never in another; an org's own ``forbid``
beats the built-in ``permit``; and the services (``BudgetService``, ``usage_report``,
``UsageSeries``, ``AnalyticsService.update_settings``, ``reprice``) ask Cedar, so an org
policy changes what they allow.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from meshclaw.accounts.service import Caller
from meshclaw.analytics.series import UsageSeries
from meshclaw.errors import PermissionDenied
from meshclaw.metering.reprice import reprice
from meshclaw.metering.usage import Visibility, usage_report, visibility
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.policy.store import MemoryOrgPolicies, PolicyStore
from tests.conftest import World

ROLES = ("employee", "team_admin", "platform_admin", "auditor")
EVERYONE = set(ROLES)


def _caller(role: str, org: str = "org_a", team: str | None = "team_a") -> Caller:
    return Caller(user_id=f"usr_{role}_{org}", org_id=org, team_id=team, handle=role, role=role)


def _person(user: str, team: str | None) -> ApiResource:
    return ApiResource.person(id=user, org_id="org_a", team_id=team)


def _agent(owner: str, team: str | None) -> ApiResource:
    return ApiResource.agent(id=f"agt_{owner}", org_id="org_a", owner_id=owner, team_id=team)


ORG_A = ApiResource.org("org_a")
OWN_TEAM = ApiResource.team(id="team_a", org_id="org_a", name="a")
OTHER_TEAM = ApiResource.team(id="team_z", org_id="org_a", name="z")
TEAMMATE = _person("usr_mate", "team_a")
STRANGER = _person("usr_stranger", "team_z")
TEAMMATES_AGENT = _agent("usr_mate", "team_a")
STRANGERS_AGENT = _agent("usr_stranger", "team_z")

# (action, resource name, resource) -> the roles allowed in their own org; ``self`` and
# ``own agent`` are built per caller below.
CASES: dict[tuple[str, str], tuple[ApiResource | None, set[str]]] = {
    ("analytics.view_org", "org"): (ORG_A, {"platform_admin", "auditor"}),
    ("analytics.manage", "org"): (ORG_A, {"platform_admin"}),
    ("usage.reprice", "org"): (ORG_A, {"platform_admin"}),
    ("budget.manage", "org"): (ORG_A, {"platform_admin"}),
    ("budget.manage", "own team"): (OWN_TEAM, {"team_admin", "platform_admin"}),
    ("budget.manage", "other team"): (OTHER_TEAM, {"platform_admin"}),
    ("budget.manage", "teammate"): (TEAMMATE, {"team_admin", "platform_admin"}),
    ("budget.manage", "stranger"): (STRANGER, {"platform_admin"}),
    ("budget.manage", "teammate's agent"): (TEAMMATES_AGENT, {"team_admin", "platform_admin"}),
    ("budget.manage", "stranger's agent"): (STRANGERS_AGENT, {"platform_admin"}),
    ("budget.manage", "self"): (None, {"team_admin", "platform_admin"}),
    ("budget.manage", "own agent"): (None, {"team_admin", "platform_admin"}),
    ("budget.read", "org"): (ORG_A, EVERYONE),
    ("budget.read", "own team"): (OWN_TEAM, EVERYONE),
    ("budget.read", "other team"): (OTHER_TEAM, {"platform_admin", "auditor"}),
    ("budget.read", "teammate"): (TEAMMATE, {"team_admin", "platform_admin", "auditor"}),
    ("budget.read", "stranger"): (STRANGER, {"platform_admin", "auditor"}),
    ("budget.read", "teammate's agent"): (
        TEAMMATES_AGENT,
        {"team_admin", "platform_admin", "auditor"},
    ),
    ("budget.read", "stranger's agent"): (STRANGERS_AGENT, {"platform_admin", "auditor"}),
    ("budget.read", "self"): (None, EVERYONE),
    ("budget.read", "own agent"): (None, EVERYONE),
}


def _resource(case: tuple[str, str], caller: Caller) -> ApiResource:
    fixed, _ = CASES[case]
    if fixed is not None:
        return fixed
    own = caller.user_id.replace(caller.org_id, "org_a")  # the org_a person of that role
    if case[1] == "self":
        return _person(own, "team_a")
    return _agent(own, "team_a")


@pytest.fixture(scope="module")
def access() -> ApiAuthorizer:
    return ApiAuthorizer(PolicyStore())


@pytest.mark.parametrize("case", sorted(CASES), ids=lambda c: f"{c[0]}-{c[1]}")
@pytest.mark.parametrize("role", ROLES)
def test_each_role_in_its_own_org(access: ApiAuthorizer, case: tuple[str, str], role: str) -> None:
    caller = _caller(role)
    decision = access.authorize_api(caller, case[0], _resource(case, caller))
    assert decision.allowed is (role in CASES[case][1]), decision.reason


@pytest.mark.parametrize("case", sorted(CASES), ids=lambda c: f"{c[0]}-{c[1]}")
@pytest.mark.parametrize("role", ROLES)
def test_never_in_another_org(access: ApiAuthorizer, case: tuple[str, str], role: str) -> None:
    caller = _caller(role, org="org_b", team="team_b")
    resource = _resource(case, _caller(role))  # what that role may reach in its own org
    decision = access.authorize_api(caller, case[0], resource)
    assert not decision.allowed
    if role in CASES[case][1]:
        assert decision.policies[0].startswith("tenant.isolation"), decision.reason


def test_a_team_admin_without_a_team_manages_no_budgets(access: ApiAuthorizer) -> None:
    teamless = _caller("team_admin", team=None)
    for resource in (_person("usr_x", None), _agent("usr_x", None), OWN_TEAM):
        assert not access.authorize_api(teamless, "budget.manage", resource).allowed


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("employee", Visibility(kind="self")),
        ("team_admin", Visibility(kind="team", team_id="team_a")),
        ("platform_admin", Visibility(kind="org")),
        ("auditor", Visibility(kind="org")),
    ],
)
def test_usage_visibility_per_role(access: ApiAuthorizer, role: str, expected: Visibility) -> None:
    assert visibility(access, _caller(role)) == expected


# -- org policies: forbid beats permit, in that org only --------------------------------

NO_TEAM_BUDGETS = """
@id("org.budgets-are-central")
forbid (principal in Role::"team_admin", action == Action::"budget.manage", resource);
"""
NO_ORG_NUMBERS = """
@id("org.no-org-numbers-for-auditors")
forbid (principal in Role::"auditor", action == Action::"analytics.view_org", resource);
"""
FROZEN = """
@id("org.frozen")
forbid (
  principal,
  action in [Action::"analytics.manage", Action::"usage.reprice"],
  resource
);
"""


def test_an_org_forbid_beats_the_builtin_permit_in_that_org_only() -> None:
    orgs = MemoryOrgPolicies()
    access = ApiAuthorizer(PolicyStore(orgs=orgs, recheck_seconds=0))
    lead_a, lead_b = _caller("team_admin"), _caller("team_admin", org="org_b")
    team_b = ApiResource.team(id="team_a", org_id="org_b")
    assert access.authorize_api(lead_a, "budget.manage", OWN_TEAM).allowed
    orgs.put("org_a", NO_TEAM_BUDGETS + NO_ORG_NUMBERS + FROZEN)

    refused = access.authorize_api(lead_a, "budget.manage", OWN_TEAM)
    assert not refused.allowed and refused.policies == ("org.budgets-are-central",)
    assert access.authorize_api(lead_a, "budget.read", OWN_TEAM).allowed  # reading stays
    assert access.authorize_api(lead_b, "budget.manage", team_b).allowed  # org B untouched
    admin = _caller("platform_admin")
    assert access.authorize_api(admin, "budget.manage", OWN_TEAM).allowed
    for action in ("analytics.manage", "usage.reprice"):
        frozen = access.authorize_api(admin, action, ORG_A)
        assert not frozen.allowed and frozen.policies == ("org.frozen",)
    # An auditor without the org tier falls back to their own numbers, not to an error.
    assert visibility(access, _caller("auditor")) == Visibility(kind="self")
    assert visibility(access, _caller("auditor", org="org_b")) == Visibility(kind="org")


# -- the services ask Cedar -------------------------------------------------------------


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    return make_world()


def _with_org_policy(world: World, text: str) -> None:
    saved, _ = world.platform.org_policies.save(world.admin, text, note="test")
    assert saved.version >= 1


def test_services_follow_the_org_policy(world: World) -> None:
    platform = world.platform
    lead = platform.accounts.caller_for(
        platform.accounts.create_user(
            world.alice.org_id, "lead", role="team_admin", team_id=world.alice.team_id
        )
    )
    budgets = platform.budgets
    budgets.set(lead, scope="user", name="alice", metric="cost", period="day",
                hard_cap="5", soft_cap=None)  # fmt: skip
    with pytest.raises(PermissionDenied, match=r"budget\.manage denied"):
        budgets.set(lead, scope="user", name="bob", metric="cost", period="day",
                    hard_cap="5", soft_cap=None)  # fmt: skip
    with pytest.raises(PermissionDenied, match=r"budget\.manage denied"):
        budgets.set(lead, scope="org", name="", metric="cost", period="day",
                    hard_cap="5", soft_cap=None)  # fmt: skip
    assert [b.name for b in budgets.visible(world.alice)] == ["alice"]
    assert budgets.visible(world.bob) == []

    _with_org_policy(world, NO_TEAM_BUDGETS + NO_ORG_NUMBERS + FROZEN)
    with pytest.raises(PermissionDenied, match=r"org\.budgets-are-central"):
        budgets.set(lead, scope="user", name="alice", metric="cost", period="day",
                    hard_cap="6", soft_cap=None)  # fmt: skip
    assert [b.name for b in budgets.visible(lead)] == ["alice"]  # still reads them
    with pytest.raises(PermissionDenied, match=r"org\.frozen"):
        platform.analytics.update_settings(world.admin, k=3)
    with pytest.raises(PermissionDenied, match=r"org\.frozen"):
        reprice(platform.db, platform.audit, platform.prices, world.admin,
                access=platform.access)  # fmt: skip
    # The built-ins alone (no authoriser passed) would still let the admin re-price.
    reprice(platform.db, platform.audit, platform.prices, world.admin, dry_run=True)

    auditor = platform.accounts.caller_for(
        platform.accounts.create_user(world.alice.org_id, "audrey", role="auditor")
    )
    assert usage_report(platform.db, auditor, access=platform.access) == []
    series = UsageSeries(platform.db, platform.access)
    assert "org" not in [s.key for s in series.scopes(auditor)]
    with pytest.raises(PermissionDenied, match=r"org-numbers-for-auditors"):
        series.scope(auditor, "org")


def test_an_id_described_in_two_orgs_is_denied_not_guessed(access: ApiAuthorizer) -> None:
    # Ids are unique across the install; were a team id ever described in two orgs (the
    # caller's team in org B, the resource in org A), neither description may decide.
    caller = _caller("team_admin", org="org_b", team="team_a")
    decision = access.authorize_api(caller, "budget.read", OWN_TEAM)
    assert not decision.allowed
    assert "two different orgs" in decision.reason
