"""Notifications: a soft cap crossed or an approval requested puts one message in the
outbox in the same transaction; the scheduler's ``deliver_due`` sends it through the
org's chosen connector tool (here the built-in chat server against the Slack fake),
retries with back-off, and says why when it cannot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from slack_sdk import WebClient
from sqlalchemy import select

from meshclaw.clock import utcnow
from meshclaw.connectors.approvals import ToolApprovals
from meshclaw.connectors.fakes.slack import SlackFake, SlackWorkspace
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.notify.deliver import MAX_ATTEMPTS, DeliverySummary, NotificationDelivery
from meshclaw.notify.models import Notification
from meshclaw.notify.outbox import enqueue
from meshclaw.policy.approvals import HeldCall
from meshclaw.policy.authorizer import Decision
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.store.models import AuditEvent, Org
from meshclaw.workers.inprocess import InProcessWorker
from tests.conftest import World, agent_yaml
from tests.connectors.test_chat_server import BOT, TOKEN, chat_connector
from tests.metering.conftest import tool_turns

Start = Callable[[dict[str, Any]], ScriptedServer]
CHANNEL = {"tool": "chat.post_message",
           "arguments": {"channel": "#budgets", "text": "{recipients}: {subject}"}}  # fmt: skip


@pytest.fixture
def slack() -> Iterator[SlackFake]:
    workspace = SlackWorkspace(channels=("general", "budgets"))
    workspace.add_token(TOKEN, BOT)
    with SlackFake(workspace) as fake:
        yield fake


def configure(world: World, channel: dict[str, Any] | None) -> None:
    with world.platform.db.session() as session:
        org = session.get(Org, world.alice.org_id)
        assert org is not None
        org.settings = {**(org.settings or {}), "notifications": channel}


def outbox(world: World) -> list[Notification]:
    with world.platform.db.session() as session:
        rows = session.scalars(select(Notification).order_by(Notification.created_at))
        return [row for row in rows]


def audited(world: World, action: str) -> list[AuditEvent]:
    with world.platform.db.session() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def pending(world: World) -> None:
    """A notification for alice, as a crossed soft cap writes it."""
    with world.platform.db.session() as session:
        enqueue(
            session, org_id=world.alice.org_id, kind="budget.soft_cap", resource="budget:x",
            recipients=[world.alice.user_id], subject="s", body="b",
        )  # fmt: skip


def deliver(delivery: NotificationDelivery, **kwargs: Any) -> DeliverySummary:
    return asyncio.run(delivery.deliver_due(**kwargs))


def test_a_crossed_soft_cap_reaches_the_budget_owner_in_chat_once(
    scripted: Start, make_world: Callable[..., World], slack: SlackFake
) -> None:
    world = make_world(scripted(tool_turns()).base_url)
    world.save_agent(agent_yaml())
    world.platform.budgets.set(
        world.admin, scope="user", name="alice", metric="tokens", period="month",
        hard_cap=None, soft_cap="1",
    )  # fmt: skip
    assert world.run("helper").status == "succeeded"
    assert world.run("helper").status == "succeeded"  # same window: no second message
    (note,) = outbox(world)
    assert (note.kind, note.recipients, note.status) == (
        "budget.soft_cap",
        [world.alice.user_id],
        "pending",
    )
    assert "soft cap of 1 tokens" in note.body

    configure(world, CHANNEL)
    registry = ConnectorRegistry([chat_connector(slack, ToolApprovals(world.platform.db))])
    delivery = NotificationDelivery(world.platform.db, registry, world.platform.audit)
    assert deliver(delivery) == DeliverySummary(sent=1)
    assert deliver(delivery) == DeliverySummary()  # sent once, never again
    history = WebClient(token=TOKEN, base_url=slack.base_url).conversations_history(
        channel="C00000002"
    )["messages"]
    assert [m["text"] for m in history] == [f"@alice: {note.subject}"]
    (sent,) = outbox(world)
    assert sent.status == "sent" and sent.attempts == 1 and sent.sent_at is not None
    assert [e.resource for e in audited(world, "notification.sent")] == [f"notification:{note.id}"]


def test_an_approval_request_notifies_the_owner(make_world: Callable[..., World]) -> None:
    world = make_world()
    agent_id = world.save_agent(agent_yaml())
    run_id = world.start_run("helper")
    held = HeldCall(
        org_id=world.alice.org_id, run_id=run_id, agent_id=agent_id,
        owner_id=world.alice.user_id, seq=3, tool_call_id="call_1", tool="notes.write",
        action="tool.write", arguments={"title": "t", "body": "b"},
        decision=Decision(allowed=False, needs_approval=True, reason="write after untrusted"),
    )  # fmt: skip
    resolution = world.platform.approvals.resolve(held)
    world.platform.approvals.resolve(held)  # asked again while pending: no second message
    (note,) = outbox(world)
    assert note.kind == "approval.requested" and note.recipients == [world.alice.user_id]
    assert note.resource == f"approval:{resolution.approval_id}"
    assert "notes.write" in note.subject and resolution.approval_id in note.body


def test_a_failing_channel_is_retried_with_back_off_then_given_up(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    configure(world, {"tool": "chat.post_message", "arguments": {"text": "{text}"}})
    pending(world)
    delivery = NotificationDelivery(world.platform.db, ConnectorRegistry(), world.platform.audit)
    now = utcnow()
    assert deliver(delivery, now=now) == DeliverySummary(retried=1)
    assert deliver(delivery, now=now + timedelta(seconds=10)) == DeliverySummary()  # not yet due
    (note,) = outbox(world)
    assert "no connector 'chat'" in (note.last_error or "")  # not registered here
    assert note.due_at - now == timedelta(seconds=30)
    for _ in range(MAX_ATTEMPTS - 1):
        now += timedelta(hours=2)
        deliver(delivery, now=now)
    (note,) = outbox(world)
    assert (note.status, note.attempts) == ("failed", MAX_ATTEMPTS)
    assert len(audited(world, "notification.failed")) == 1


@pytest.mark.parametrize(
    ("channel", "reason"),
    [
        (None, "the org has no notifications channel"),
        ({"tool": "chat"}, "notifications.tool: String should match pattern"),
        ({"tool": "deploy.rollout", "arguments": {"env": "prod"}},
         "notifications.tool: Value error, must be one of chat.post_message, mail.send"),
        ({"tool": "chat.post_message", "arguments": {"text": "{secret}"}},
         "notifications.arguments.text: unknown placeholder {secret}"),
        ({"tool": "mail.send", "arguments": {"to": "{recipient_emails}"}},
         "notifications.arguments.to: no recipient has an email address"),
        ({"tool": "chat.post_message", "sender": "ghost"},
         "notifications.sender: no user 'ghost' in the org"),
    ],
)  # fmt: skip
def test_an_unusable_channel_leaves_the_notification_unsent_with_the_reason(
    make_world: Callable[..., World], channel: dict[str, Any] | None, reason: str
) -> None:
    world = make_world()
    configure(world, channel)
    pending(world)
    delivery = NotificationDelivery(world.platform.db, ConnectorRegistry(), world.platform.audit)
    assert deliver(delivery) == DeliverySummary(unsent=1)
    (note,) = outbox(world)
    assert note.status == "unsent" and reason in (note.last_error or ""), note.last_error


def test_the_embedded_scheduler_sends_the_outbox(make_world: Callable[..., World]) -> None:
    world = make_world()
    pending(world)  # the org has no channel: sending it records why it stays unsent
    world.platform.settings.notify_seconds = 0.2
    worker = InProcessWorker(world.platform, cron=True, cron_seconds=3600)
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while outbox(world)[0].status == "pending" and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        worker.stop()
    assert outbox(world)[0].status == "unsent"
