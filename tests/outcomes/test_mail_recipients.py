"""Mail recipients map to people by their directory address: a colleague's reply or
acceptance is attributable, and mail to the owner's own address is recognised as hers."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from meshclaw.outcomes.models import Outcome
from meshclaw.outcomes.service import OutcomeInfo
from meshclaw.store.models import RunStep
from tests.conftest import World
from tests.outcomes.test_outcomes import CONNECTORS, Start, call, run_with


def sent(scripted: Start, make_world: Callable[..., World]) -> tuple[World, dict[str, OutcomeInfo]]:
    world = run_with(
        scripted, make_world,
        call("mail.send", to="Bob Builder <BOB@Acme.test>"),
        call("mail.send", to="alice@ACME.test"),
        call("mail.send", to="customer@example.com"),
    )  # fmt: skip
    accounts, org = world.platform.accounts, world.alice.org_id
    accounts.set_email(org, "alice", "alice@acme.test")
    accounts.set_email(org, "bob", "bob@acme.test")
    world.run("helper", connectors=CONNECTORS)
    infos = {o.id: o for o in world.platform.outcomes.list_outcomes(world.alice)}
    with world.platform.db.session() as session:
        rows = session.execute(
            select(Outcome.id, RunStep.request).join(RunStep, RunStep.id == Outcome.step_id)
        ).all()
    return world, {request["arguments"]["to"]: infos[oid] for oid, request in rows}


def test_a_colleagues_address_is_that_colleague_and_ones_own_is_oneself(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world, by_to = sent(scripted, make_world)
    to_bob = by_to["Bob Builder <BOB@Acme.test>"]
    assert (to_bob.beneficiaries, to_bob.state) == ([world.bob.user_id], "unaccepted")
    outcomes = world.platform.outcomes
    assert [o.id for o in outcomes.list_outcomes(world.bob, to_review=True)] == [to_bob.id]
    assert outcomes.feedback(world.bob, to_bob.id, "accepted").state == "credited"

    to_self = by_to["alice@ACME.test"]
    assert (to_self.beneficiaries, to_self.state) == ([world.alice.user_id], "self")
    assert by_to["customer@example.com"].beneficiaries == ["external"]


def test_a_link_sent_to_the_owners_own_address_answers_for_her(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world, by_to = sent(scripted, make_world)
    outcomes = world.platform.outcomes
    to_self = by_to["alice@ACME.test"]
    # Before addresses were known this link counted as an outsider's acceptance.
    token = outcomes.link_for(to_self.id, "external:Alice@acme.test")
    judged = outcomes.feedback_by_link(token, "accepted")
    assert judged.state == "self" and judged.feedback[-1].by == world.alice.user_id
    # A link to bob's address is bob's acceptance; an outsider's stays an outsider's.
    to_bob = by_to["Bob Builder <BOB@Acme.test>"]
    by_bob = outcomes.feedback_by_link(outcomes.link_for(to_bob.id, "external:bob@acme.test"),
                                       "accepted")  # fmt: skip
    assert by_bob.state == "credited" and by_bob.feedback[-1].by == world.bob.user_id
    outside = by_to["customer@example.com"]
    token = outcomes.link_for(outside.id, "external:customer@example.com")
    by_customer = outcomes.feedback_by_link(token, "accepted")
    assert by_customer.feedback[-1].by == "external:customer@example.com"
    assert by_customer.state == "credited"
