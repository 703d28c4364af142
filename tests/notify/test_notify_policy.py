"""The platform's own messages pass Cedar before the channel's connector is called: the
call as ``Platform::"notifier"`` (``policy.platform``: messaging tools only, each argument
checked, addresses only inside the org) and ``notify.send`` on the sender's behalf.
Addresses outside the org are refused (unless the message is for that outside person: an
outcome's beneficiary asked for feedback), an org policy can refuse more, and a refusal is
kept on the notification (``failed``, with the reason) and in the audit log with the
decision, never dropped silently. With no connector registered, a send the policy lets
through is *retried* (the connector is missing), and one it refuses *fails* at once: the
two are told apart below."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from meshclaw.clock import utcnow
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.notify.deliver import (
    DeliverySummary,
    NotificationDelivery,
    normalize_addresses,
    outside_addresses,
)
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


def _deliver(world: World, now: datetime | None = None) -> DeliverySummary:
    delivery = NotificationDelivery(
        world.platform.db, ConnectorRegistry(), world.platform.audit, world.platform.access
    )
    return asyncio.run(delivery.deliver_due(now=now))


def _denials(world: World) -> list[dict[str, Any]]:
    with world.platform.db.session() as session:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "notification.denied")
        ).all()
        return [{"outcome": r.outcome, **r.details} for r in rows]


def test_an_address_outside_the_org_is_refused_and_kept(world: World) -> None:
    configure(world, _mail_to("ops@elsewhere.example"))
    pending(world)
    assert _deliver(world) == DeliverySummary(failed=1)
    (note,) = outbox(world)
    assert note.status == "failed" and note.attempts == 0
    assert note.last_error == (
        "refused by policy (1 address(es) outside the org): tool.argument Tool::mail.send "
        "argument to: no policy permits it (deny by default)"
    )
    [denied] = _denials(world)
    assert denied["outcome"] == "error" and denied["error"] == note.last_error
    assert denied["decision"] == {
        "principal": 'Platform::"notifier"', "action": "tool.write", "tool": "mail.send",
        "decision": "deny", "reason": note.last_error.split(": ", 1)[1], "policies": [],
    }  # fmt: skip
    assert "elsewhere" not in repr(denied)  # the count, not the address
    assert _deliver(world) == DeliverySummary()  # refused once: not retried


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
    assert _deliver(world) == DeliverySummary(failed=1)
    assert "org.quiet-budgets" in (outbox(world)[0].last_error or "")
    [denied] = _denials(world)
    assert denied["decision"]["action"] == "notify.send"
    assert denied["decision"]["principal"] == f'User::"{world.admin.user_id}"'
    assert denied["decision"]["policies"] == ["org.quiet-budgets"]


def test_the_outside_recipient_of_a_feedback_request_is_not_outside(world: World) -> None:
    with world.platform.db.session() as session:
        enqueue(
            session, org_id=world.alice.org_id, kind="outcome.feedback_request",
            resource="outcome:x", recipients=["external:Client@Customer.example"],
            subject="s", body="b", link="https://meshclaw.example/f/t",
        )  # fmt: skip
        row = session.scalars(select(Notification)).one()
        # Compared as the platform policy compares them: the domain's case does not count,
        # the local part's does (RFC 5321), so the reason names what the policy refused.
        mine = {"to": ["Client@customer.EXAMPLE"]}
        assert outside_addresses(session, row, mine) == []
        assert outside_addresses(session, row, {"to": "client@customer.example"}) == [
            "client@customer.example"
        ]
        also = {"to": ["Client@customer.example"], "cc": "spy@else.example"}
        assert outside_addresses(session, row, also) == ["spy@else.example"]
        nested = {"to": [["alice@acme.example", "spy@else.example"]]}  # a list in a list
        assert outside_addresses(session, row, nested) == ["spy@else.example"]


NO_OUTSIDE_MAIL = (
    '@id("org.notifier.mail-inside")\n'
    'forbid (principal == Platform::"notifier", action == Action::"tool.argument",\n'
    '        resource == Tool::"mail.send")\n'
    'when { context.kind == "argument" && ["to", "cc", "bcc"].contains(context.name) &&\n'
    '       !(context.value like "*@acme.example") };\n'
)


def _feedback_request(world: World) -> None:
    """A feedback request for a reviewer outside the org, at their own address."""
    with world.platform.db.session() as session:
        enqueue(
            session, org_id=world.alice.org_id, kind="outcome.feedback_request",
            resource="outcome:x", recipients=["external:Client@Customer.example"],
            subject="was this useful?", body="b", link="https://meshclaw.example/f/t",
        )  # fmt: skip


def test_an_org_policy_can_keep_the_notifier_from_mailing_outside_the_org(world: World) -> None:
    configure(world, _mail_to("{recipient_emails}"))
    _feedback_request(world)
    # By default a feedback request reaches the outside reviewer it is for (allowed, then
    # retried here: no mail connector is registered).
    assert _deliver(world) == DeliverySummary(retried=1)
    assert _denials(world) == []

    world.platform.org_policies.save(world.admin, NO_OUTSIDE_MAIL, note="org mail only")
    _feedback_request(world)
    later = utcnow() + timedelta(hours=2)  # the first one is due again too
    assert _deliver(world, now=later) == DeliverySummary(failed=2)
    for note in outbox(world):
        assert note.status == "failed"
        assert note.last_error == (
            "refused by policy: tool.argument Tool::mail.send argument to: forbidden by "
            "org.notifier.mail-inside"
        )
    denials = _denials(world)
    assert len(denials) == 2
    for denied in denials:
        assert denied["decision"] == {
            "principal": 'Platform::"notifier"', "action": "tool.write", "tool": "mail.send",
            "decision": "deny", "policies": ["org.notifier.mail-inside"],
            "reason": "tool.argument Tool::mail.send argument to: forbidden by "
            "org.notifier.mail-inside",
        }  # fmt: skip
        assert "customer" not in repr(denied).lower()  # the reason, not the address
    assert _deliver(world, now=later + timedelta(days=1)) == DeliverySummary()  # not retried


def test_an_org_policy_about_every_principals_arguments_holds_for_the_notifier(
    world: World,
) -> None:
    no_keys = (
        '@id("org.no-secrets-in-arguments")\n'
        'forbid (principal, action == Action::"tool.argument", resource)\n'
        'when { context.kind == "argument" && context.value like "*BEGIN PRIVATE KEY*" };\n'
    )
    world.platform.org_policies.save(world.admin, no_keys, note="no keys anywhere")
    configure(world, _mail_to("{recipient_emails}"))
    with world.platform.db.session() as session:
        enqueue(
            session, org_id=world.alice.org_id, kind="approval.requested", resource="approval:x",
            recipients=[world.alice.user_id], subject="s", body="-----BEGIN PRIVATE KEY-----",
        )  # fmt: skip
    pending(world)  # an ordinary message still goes
    assert _deliver(world) == DeliverySummary(retried=1, failed=1)
    failed = [n for n in outbox(world) if n.status == "failed"]
    assert [n.kind for n in failed] == ["approval.requested"]
    assert failed[0].last_error == (
        "refused by policy: tool.argument Tool::mail.send argument body: forbidden by "
        "org.no-secrets-in-arguments"
    )


def test_domains_are_compared_in_lower_case_and_sent_so(world: World) -> None:
    configure(world, _mail_to("Team@ACME.Example"))
    pending(world)
    assert _deliver(world) == DeliverySummary(retried=1)
    assert normalize_addresses({"to": ["Team@ACME.Example"], "cc": "X@Y.Z", "body": "A@B.C"}) == {
        "to": ["Team@acme.example"], "cc": "X@y.z", "body": "A@B.C",
    }  # fmt: skip
