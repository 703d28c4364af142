"""The audit log's and the metrics' roles as Cedar policies (``policy/roles.py``).

Records (everyone's personal data) are for auditors; checking the tree, for auditors and
platform admins; retention, for platform admins; each only in their own org.
"""

from __future__ import annotations

import pytest

from meshclaw.accounts.service import Caller
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.policy.cedar import PolicyStore


def _caller(role: str, org: str = "org_a") -> Caller:
    return Caller(user_id=f"usr_{role}_{org}", org_id=org, team_id=None, handle=role, role=role)


ORG_A = ApiResource.org("org_a")
ALLOWED = {
    "audit.read": {"auditor"},
    "audit.verify": {"auditor", "platform_admin"},
    "audit.redact": {"platform_admin"},
    "metrics.read": {"auditor", "platform_admin"},
}
ROLES = ("employee", "team_admin", "platform_admin", "auditor")


@pytest.fixture(scope="module")
def access() -> ApiAuthorizer:
    return ApiAuthorizer(PolicyStore())


@pytest.mark.parametrize("action", sorted(ALLOWED))
@pytest.mark.parametrize("role", ROLES)
def test_each_role_in_its_own_org(access: ApiAuthorizer, action: str, role: str) -> None:
    decision = access.authorize_api(_caller(role), action, ORG_A)
    assert decision.allowed is (role in ALLOWED[action]), decision.reason


@pytest.mark.parametrize("action", sorted(ALLOWED))
@pytest.mark.parametrize("role", ROLES)
def test_never_in_another_org(access: ApiAuthorizer, action: str, role: str) -> None:
    decision = access.authorize_api(_caller(role, org="org_b"), action, ORG_A)
    assert not decision.allowed
    if role in ALLOWED[action]:
        assert decision.policies == ("tenant.isolation.org",)


def test_an_org_policy_can_take_retention_away(access: ApiAuthorizer) -> None:
    frozen = ApiAuthorizer(PolicyStore(
        '@id("org.legal-hold")\nforbid (principal, action == Action::"audit.redact", resource);\n'
    ))  # fmt: skip
    admin = _caller("platform_admin")
    assert access.authorize_api(admin, "audit.redact", ORG_A).allowed
    held = frozen.authorize_api(admin, "audit.redact", ORG_A)
    assert not held.allowed and held.policies == ("org.legal-hold",)
