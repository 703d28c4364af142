"""Who may read one outcome and judge it is Cedar's decision (``outcome.read``,
``outcome.feedback`` on the ``Outcome``): the org's policies change it, and what a caller
may not read is "not found", exactly like an outcome that does not exist."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from meshclaw.accounts.service import Caller
from meshclaw.errors import NotFoundError, PermissionDenied
from meshclaw.ids import new_id
from meshclaw.outcomes.models import Outcome
from tests.conftest import World, agent_yaml


def alices_outcome_for_bob(world: World) -> str:
    """A verified mail of alice's that bob (and someone outside the org) received."""
    agent_id = world.save_agent(agent_yaml())
    run_id = world.start_run("helper")
    oid = new_id("out")
    with world.platform.db.session() as session:
        session.add(
            Outcome(
                id=oid, org_id=world.alice.org_id, team_id=world.alice.team_id,
                user_id=world.alice.user_id, agent_id=agent_id, run_id=run_id,
                tool="mail.send", type="mail_sent", ref=f"<{oid}@x>",
                beneficiaries=[world.bob.user_id, "external"], verified=True,
                verification={}, evidence={}, value=1.0, state="unaccepted",
                created_at=datetime(2026, 3, 1, tzinfo=UTC),
            )
        )  # fmt: skip
    return oid


def person(world: World, handle: str, role: str = "employee", *, same_team: bool = True) -> Caller:
    accounts = world.platform.accounts
    team = world.alice.team_id if same_team else None
    return accounts.caller_for(
        accounts.create_user(world.alice.org_id, handle, team_id=team, role=role)
    )


def missing(world: World, caller: Caller, outcome_id: str) -> str:
    """The message ``get`` raises; it must be the same as for an id that does not exist."""
    with pytest.raises(NotFoundError) as raised:
        world.platform.outcomes.get(caller, outcome_id)
    return str(raised.value)


def test_owner_beneficiary_and_org_readers_read_nobody_else_even_knows(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    oid = alices_outcome_for_bob(world)
    outcomes = world.platform.outcomes
    auditor = person(world, "audrey", "auditor", same_team=False)
    carol = person(world, "carol")
    lead = person(world, "tara", "team_admin")
    for reader in (world.alice, world.bob, world.admin, auditor):
        assert outcomes.get(reader, oid).id == oid
    nowhere = "out_doesnotexist"
    for outsider in (carol, lead):
        assert missing(world, outsider, oid) == f"no outcome {oid}"
    assert missing(world, carol, nowhere) == f"no outcome {nowhere}"

    accounts = world.platform.accounts
    globex = accounts.create_org("globex")
    mallory = accounts.caller_for(accounts.create_user(globex.id, "mallory", role="platform_admin"))
    assert missing(world, mallory, oid) == f"no outcome {oid}"


def test_feedback_is_for_who_received_it_and_hidden_from_who_cannot_read_it(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    oid = alices_outcome_for_bob(world)
    outcomes = world.platform.outcomes
    with pytest.raises(PermissionDenied, match=r"outcome\.feedback denied"):
        outcomes.feedback(world.admin, oid, "accepted")  # reads it, did not receive it
    with pytest.raises(NotFoundError):
        outcomes.feedback(person(world, "carol"), oid, "accepted")
    assert outcomes.feedback(world.bob, oid, "accepted").state == "credited"


def test_the_orgs_policy_decides_who_reads_an_outcome(make_world: Callable[..., World]) -> None:
    """Org policies, not code: let team admins read their team's outcomes, keep auditors out."""
    world = make_world()
    oid = alices_outcome_for_bob(world)
    outcomes = world.platform.outcomes
    lead = person(world, "tara", "team_admin")
    other_lead = person(world, "otto", "team_admin", same_team=False)
    auditor = person(world, "audrey", "auditor", same_team=False)
    assert missing(world, lead, oid) == f"no outcome {oid}"
    world.platform.policies.load(
        '@id("org.leads-read-team-outcomes")\n'
        'permit (principal in Role::"team_admin", action == Action::"outcome.read", resource)\n'
        "when { resource has team && principal in resource.team };\n"
        '@id("org.auditors-not-outcomes")\n'
        'forbid (principal in Role::"auditor", action == Action::"outcome.read", resource);\n'
    )
    assert outcomes.get(lead, oid).owner == world.alice.user_id
    assert missing(world, other_lead, oid) == f"no outcome {oid}"
    assert missing(world, auditor, oid) == f"no outcome {oid}"
    with pytest.raises(PermissionDenied):  # reading is not judging
        outcomes.feedback(lead, oid, "accepted")
