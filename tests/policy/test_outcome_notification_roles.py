"""Who reads one outcome, who judges it, and who reads notifications: Cedar policies on
``Outcome`` and on the ``User`` / ``Org`` (``outcome.read``, ``outcome.feedback``,
``notification.read``), not role comparisons in the services."""

from __future__ import annotations

import pytest

from meshclaw.accounts.service import Caller
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.policy.cedar import PolicyStore
from tests.policy.test_api_roles import ALICE, AUDITOR, BOB, EVE, LEAD, ORG_A, ROOT, caller

CAROL = caller("carol", "employee", team="team_1")
ALICES_OUTCOME = ApiResource.outcome(
    id="out_1", org_id="org_a", owner_id="usr_alice", agent_id="agt_1", type_name="mail_sent",
    beneficiaries=("usr_bob", "external"), team_id="team_1",
)  # fmt: skip
ALICE_PERSON = ApiResource.person(id="usr_alice", org_id="org_a", team_id="team_1")
ORG_B = ApiResource.org("org_b")


@pytest.fixture(scope="module")
def access() -> ApiAuthorizer:
    return ApiAuthorizer(PolicyStore())


@pytest.mark.parametrize(
    ("who", "read", "judge"),
    [
        (ALICE, True, True),  # the owner (her own verdict is kept, never counts)
        (BOB, True, True),  # received it
        (CAROL, False, False),  # same team, did not receive it
        (LEAD, False, False),  # team admin: team aggregates, never one person's outcome
        (ROOT, True, False),  # org roles read, never judge what they did not receive
        (AUDITOR, True, False),
        (EVE, False, False),  # another org's platform admin
    ],
    ids=["owner", "beneficiary", "teammate", "team_admin", "platform_admin", "auditor", "other"],
)
def test_who_reads_and_who_judges_an_outcome(
    access: ApiAuthorizer, who: Caller, read: bool, judge: bool
) -> None:
    assert access.authorize_api(who, "outcome.read", ALICES_OUTCOME).allowed is read
    assert access.authorize_api(who, "outcome.feedback", ALICES_OUTCOME).allowed is judge


def test_the_decisions_name_their_policies(access: ApiAuthorizer) -> None:
    assert access.authorize_api(BOB, "outcome.read", ALICES_OUTCOME).policies == (
        "role.employee.outcome.own",
    )
    assert access.authorize_api(AUDITOR, "outcome.read", ALICES_OUTCOME).policies == (
        "role.auditor.outcome.read",
    )
    cross = access.authorize_api(EVE, "outcome.read", ALICES_OUTCOME)
    assert cross.policies == ("tenant.isolation",)
    # "external" is not a person of the org: it never matches a principal.
    assert ALICES_OUTCOME.beneficiaries == ("usr_bob",)


def test_an_org_policy_changes_who_reads_outcomes(access: ApiAuthorizer) -> None:
    """A team admin reading their team's outcomes is an org's choice, one policy away; so
    is keeping auditors out."""
    store = PolicyStore(
        '@id("org.leads-read-team-outcomes")\n'
        'permit (principal in Role::"team_admin", action == Action::"outcome.read", resource)\n'
        "when { resource has team && principal in resource.team };\n"
        '@id("org.auditors-not-outcomes")\n'
        'forbid (principal in Role::"auditor", action == Action::"outcome.read", resource);\n'
    )
    custom = ApiAuthorizer(store)
    assert custom.authorize_api(LEAD, "outcome.read", ALICES_OUTCOME).allowed
    assert not custom.authorize_api(LEAD, "outcome.feedback", ALICES_OUTCOME).allowed
    denied = custom.authorize_api(AUDITOR, "outcome.read", ALICES_OUTCOME)
    assert denied.policies == ("org.auditors-not-outcomes",)


@pytest.mark.parametrize(
    ("who", "resource", "allowed"),
    [
        (ALICE, ALICE_PERSON, True),
        (BOB, ALICE_PERSON, False),
        (LEAD, ALICE_PERSON, False),
        (ALICE, ORG_A, False),
        (LEAD, ORG_A, False),
        (ROOT, ALICE_PERSON, True),
        (ROOT, ORG_A, True),
        (AUDITOR, ORG_A, True),
        (AUDITOR, ALICE_PERSON, True),
        (EVE, ORG_A, False),
        (EVE, ALICE_PERSON, False),
        (EVE, ORG_B, True),
    ],
)
def test_who_reads_notifications(
    access: ApiAuthorizer, who: Caller, resource: ApiResource, allowed: bool
) -> None:
    decision = access.authorize_api(who, "notification.read", resource)
    assert decision.allowed is allowed, decision.reason
