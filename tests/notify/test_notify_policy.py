"""The platform's own messages pass a Cedar decision (``notify.send``) before the channel's
connector is called: addresses outside the org are refused (unless the message is for that
outside person: an outcome's beneficiary asked for feedback), an org policy can refuse more,
and a refusal is kept on the notification and in the audit log, never dropped silently.
With no connector registered, a send the policy lets through is *retried* (the connector is
missing), and one it refuses is *unsent* at once: the two are told apart below."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.notify.deliver import DeliverySummary, NotificationDelivery, outside_addresses
from meshclaw.notify.models import Notification
from meshclaw.notify.outbox import enqueue
from meshclaw.store.models import AuditEvent, User
from tests.conftest import World
from tests.notify.test_notifications import configure, outbox, pending


def _mail_to(*addresses: str) -> dict[str, Any]:
    arguments = {"to": list(addresses), "subject": "{subject}", "body": "{body}"}
    return {"tool": "mail.send", "arguments": arguments}


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    world = make_world()
    with world.platform.db.session() as session:
        alice = session.get(User, world.alice.user_id)
        assert alice is not None
        alice.email = "alice@acme.example"
    return world


def _deliver(world: World) -> DeliverySummary:
    delivery = NotificationDelivery(
        world.platform.db, ConnectorRegistry(), world.platform.audit, world.platform.access
    )
    return asyncio.run(delivery.deliver_due())


def _denials(world: World) -> list[dict[str, Any]]:
    with world.platform.db.session() as session:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "notification.denied")
        ).all()
        return [{"outcome": r.outcome, **r.details} for r in rows]


def test_an_address_outside_the_org_is_refused_and_kept(world: World) -> None:
    configure(world, _mail_to("ops@elsewhere.example"))
    pending(world)
    assert _deliver(world) == DeliverySummary(unsent=1)
    (note,) = outbox(world)
    assert note.status == "unsent" and note.attempts == 0
    assert note.last_error is not None and "refused by policy (1 address(es) outside" in (
        note.last_error
    )
    assert "platform.notify.inside-org" in note.last_error
    [denied] = _denials(world)
    assert denied["outcome"] == "error" and "platform.notify.inside-org" in denied["error"]
    assert "elsewhere" not in repr(denied)  # the count, not the address


def test_addresses_of_the_orgs_domain_pass(world: World) -> None:
    configure(world, _mail_to("team@acme.example", "{recipient_emails}"))
    pending(world)
    assert _deliver(world) == DeliverySummary(retried=1)  # allowed: on to the connector
    assert _denials(world) == []


def test_an_org_policy_can_refuse_a_kind_of_message(world: World) -> None:
    no_budget_alerts = (
        '@id("org.quiet-budgets")\n'
        'forbid (principal, action == Action::"notify.send", resource)\n'
        'when { context.kind == "budget.soft_cap" };\n'
    )
    world.platform.org_policies.save(world.admin, no_budget_alerts, note="no alerts by mail")
    configure(world, _mail_to("{recipient_emails}"))
    pending(world)
    assert _deliver(world) == DeliverySummary(unsent=1)
    assert "org.quiet-budgets" in (outbox(world)[0].last_error or "")


def test_the_outside_recipient_of_a_feedback_request_is_not_outside(world: World) -> None:
    with world.platform.db.session() as session:
        enqueue(
            session, org_id=world.alice.org_id, kind="outcome.feedback_request",
            resource="outcome:x", recipients=["external:Client@Customer.example"],
            subject="s", body="b", link="https://meshclaw.example/f/t",
        )  # fmt: skip
        row = session.scalars(select(Notification)).one()
        mine = {"to": ["client@customer.example"]}
        assert outside_addresses(session, row, mine) == []
        also = {"to": ["client@customer.example"], "cc": "spy@else.example"}
        assert outside_addresses(session, row, also) == ["spy@else.example"]
        nested = {"to": [["alice@acme.example", "spy@else.example"]]}  # a list in a list
        assert outside_addresses(session, row, nested) == ["spy@else.example"]
