"""Listing outcomes on both engines: the filter, the order and the limit are applied in SQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from meshclaw.accounts.service import Caller
from meshclaw.ids import new_id
from meshclaw.outcomes.models import Outcome
from tests.conftest import World, agent_yaml


def _outcomes(world: World) -> dict[str, list[str]]:
    """Outcomes of alice and bob with various beneficiaries; ids by case, newest first."""
    agent_id = world.save_agent(agent_yaml())
    run_id = world.start_run("helper")
    carol = world.platform.accounts.create_user(world.alice.org_id, "carol")
    base = datetime(2026, 3, 1, tzinfo=UTC)
    cases: dict[str, list[str]] = {}
    rows = []

    def add(case: str, owner: Caller, beneficiaries: list[str], state: str, i: int) -> None:
        oid = new_id("out")
        cases.setdefault(case, []).insert(0, oid)
        rows.append(
            Outcome(
                id=oid, org_id=owner.org_id, team_id=owner.team_id, user_id=owner.user_id,
                agent_id=agent_id, run_id=run_id, tool="mail.send", type="mail_sent",
                ref=f"<{oid}@x>", beneficiaries=beneficiaries, verified=True, verification={},
                evidence={}, value=1.0, state=state, created_at=base + timedelta(hours=i),
            )
        )  # fmt: skip

    bob, alice = world.bob.user_id, world.alice.user_id
    for i in range(12):
        add("alice_for_bob", world.alice, [bob], "credited" if i % 2 else "unaccepted", 2 * i)
        add("alice_for_others", world.alice, ["external", carol.id], "unaccepted", 2 * i + 1)
    add("bob_for_bob_and_alice", world.bob, [bob, alice], "unaccepted", 30)
    add("alice_for_alice", world.alice, [alice], "self", 31)
    with world.platform.db.session() as session:
        session.add_all(rows)
    return cases


def test_to_review_is_what_others_addressed_to_me_newest_first_limited(
    database_url: str, make_world: Callable[..., World]
) -> None:
    world = make_world(database_url=database_url)
    cases = _outcomes(world)
    outcomes = world.platform.outcomes

    got = [o.id for o in outcomes.list_outcomes(world.bob, to_review=True, limit=100)]
    assert got == cases["alice_for_bob"]  # not his own, though he is a beneficiary of it
    assert [o.id for o in outcomes.list_outcomes(world.bob, to_review=True, limit=5)] == got[:5]
    assert [o.id for o in outcomes.list_outcomes(world.alice, to_review=True)] == (
        cases["bob_for_bob_and_alice"]
    )
    credited = outcomes.list_outcomes(world.bob, to_review=True, state="credited")
    assert [o.id for o in credited] == [o for o in got if o in cases["alice_for_bob"][::2]]
    assert all(o.state == "credited" for o in credited) and len(credited) == 6


def test_my_outcomes_newest_first_limited_and_by_state(
    database_url: str, make_world: Callable[..., World]
) -> None:
    world = make_world(database_url=database_url)
    cases = _outcomes(world)
    outcomes = world.platform.outcomes
    mine = [o.id for o in outcomes.list_outcomes(world.alice, limit=100)]
    assert len(mine) == 25 and mine[0] == cases["alice_for_alice"][0]
    assert [o.id for o in outcomes.list_outcomes(world.alice, limit=3)] == mine[:3]
    assert [o.id for o in outcomes.list_outcomes(world.alice, state="self")] == (
        cases["alice_for_alice"]
    )
    assert [o.id for o in outcomes.list_outcomes(world.bob)] == cases["bob_for_bob_and_alice"]
