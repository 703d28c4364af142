"""A verified outcome asks each beneficiary but the owner for feedback, in the recording's
transaction: one notification each, carrying that reviewer's own signed link, which only
the mail to that reviewer's address shows (never the inbox, the API or the dashboard)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from meshclaw.config import Settings, WebSettings
from meshclaw.connectors.base import ToolContext, ToolDefinition, ToolResult
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.notify.deliver import DeliverySummary, NotificationDelivery
from meshclaw.notify.models import Notification, NotificationRecipient
from meshclaw.outcomes.asking import KIND
from meshclaw.outcomes.links import feedback_url, public_base
from meshclaw.outcomes.service import OutcomeService
from meshclaw.outcomes.types import OutcomeType
from meshclaw.outcomes.verify import Evidence, Lookup, Undone, Verification
from meshclaw.store.models import AuditEvent, Org
from tests.conftest import World
from tests.outcomes.test_outcomes import Start, call, only_outcome, run_with

BASE = "https://meshclaw.acme.test"


class ListMail:
    """A mail connector whose ``send`` takes a list, as the built-in server's does, and
    returns that server's evidence: every address it was given was delivered."""

    name = "mail"

    async def list_tools(self) -> list[ToolDefinition]:
        return [ToolDefinition(name="send", description="Send.", action="write")]

    async def call_tool(self, tool: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        evidence = {"message_id": f"<{ctx.idempotency_key}@acme.test>",
                    "recipients": list(arguments["to"]), "duplicate": False}  # fmt: skip
        return ToolResult(content="sent", data={"evidence": evidence})


def mailed(
    scripted: Start,
    make_world: Callable[..., World],
    *calls: Any,
    database_url: str | None = None,
    addresses: tuple[str, ...] = ("alice", "bob"),
) -> tuple[World, str]:
    """alice's agent runs ``calls``; ``addresses``: who has a directory address."""
    world = run_with(scripted, lambda url: make_world(url, database_url), *calls)
    for handle in addresses:
        world.platform.accounts.set_email(world.alice.org_id, handle, f"{handle}@acme.test")
    world.platform.outcomes.public_url = BASE
    info = world.run("helper", connectors=ConnectorRegistry([ListMail()]))
    assert info.status == "succeeded", info.error
    return world, info.id


def requests(world: World) -> list[Notification]:
    with world.platform.db.session() as session:
        query = select(Notification).where(Notification.kind == KIND)
        return list(session.scalars(query.order_by(Notification.created_at, Notification.id)))


def token_of(row: Notification) -> str:
    assert row.link is not None and row.link.startswith(f"{BASE}/v1/feedback/")
    return row.link.removeprefix(f"{BASE}/v1/feedback/")


def test_a_verified_mail_asks_the_colleague_and_the_outsider_but_not_the_owner(
    scripted: Start, make_world: Callable[..., World], database_url: str
) -> None:
    world, run_id = mailed(
        scripted, make_world,
        call("mail.send", to=["Bob <bob@acme.test>", "Customer@Example.com", "alice@acme.test"]),
        database_url=database_url,
    )  # fmt: skip
    outcome = only_outcome(world)
    assert outcome.verified and outcome.state == "unaccepted"
    assert outcome.beneficiaries == [world.bob.user_id, "external", world.alice.user_id]
    rows = requests(world)
    by_reviewer = {row.recipients[0]: row for row in rows}
    assert sorted(by_reviewer) == sorted([world.bob.user_id, "external:customer@example.com"])
    for row in rows:
        assert (row.resource, row.status, len(row.recipients)) == (
            f"outcome:{outcome.id}", "pending", 1,
        )  # fmt: skip
        # The text names the outcome, the agent and its owner; the link is not in it.
        assert f"mail sent ({outcome.ref})" in row.body and '"helper"' in row.body
        assert row.subject == "alice's agent helper: was this useful?"
        assert token_of(row) not in row.body + row.subject
    assert f"{BASE}/ui/insights/outcomes/{outcome.id}" in by_reviewer[world.bob.user_id].body
    assert "/ui/" not in by_reviewer["external:customer@example.com"].body

    # Inboxes: bob's copy (without the link); the outsider has none; alice, the owner, none.
    with world.platform.db.session() as session:
        inbox = session.execute(select(NotificationRecipient.user_id)).scalars().all()
    assert inbox == [world.bob.user_id]
    notifications = world.platform.notifications
    (bobs,) = notifications.find(world.bob).notifications
    assert bobs.kind == KIND and token_of(by_reviewer[world.bob.user_id]) not in bobs.body
    assert notifications.find(world.alice).total == 0
    org_view = notifications.find(world.admin, scope="org").notifications
    assert len(org_view) == 2
    assert not any(token_of(row) in view.body for row in rows for view in org_view)

    with world.platform.db.session() as session:
        (recorded,) = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "outcome.record")
        ).all()
    assert recorded.details["asked"] == 2

    # Recording the run again (a retried end of run) asks nobody twice.
    assert asyncio.run(world.platform.outcomes.record_run(run_id)) == []
    assert [row.id for row in requests(world)] == [row.id for row in rows]

    # Each link answers for its own reviewer.
    outcomes = world.platform.outcomes
    by_customer = outcomes.feedback_by_link(
        token_of(by_reviewer["external:customer@example.com"]), "rejected"
    )
    assert by_customer.feedback[-1].by == "external:customer@example.com"
    by_bob = outcomes.feedback_by_link(token_of(by_reviewer[world.bob.user_id]), "accepted")
    assert (by_bob.feedback[-1].by, by_bob.feedback[-1].via) == (world.bob.user_id, "link")
    assert by_bob.state == "credited"


def test_an_unverified_or_self_addressed_outcome_asks_nobody(
    scripted: Start, make_world: Callable[..., World], database_url: str
) -> None:
    world, _ = mailed(
        scripted, make_world,
        call("mail.send", to=[]),  # nobody received it: unverified
        call("mail.send", to=["Alice@acme.test", "alice"]),  # only the owner
        database_url=database_url,
    )  # fmt: skip
    states = sorted(o.state for o in world.platform.outcomes.list_outcomes(world.alice))
    assert states == ["self", "unverified"]
    assert requests(world) == []


class Bounced:
    """A verifier (an org's own, say) that names who a mail was for but could not confirm
    it arrived: an unverified outcome, whoever it names."""

    async def verify(self, evidence: Evidence, lookup: Lookup | None) -> Verification:
        return Verification(verified=False, ref="<x@acme.test>", beneficiaries=["bob"],
                            detail={"reason": "bounced"})  # fmt: skip

    async def recheck(
        self, kind: OutcomeType, ref: str, owner: str, lookup: Lookup | None
    ) -> Undone | None:
        return None


def test_an_outcome_its_verifier_could_not_confirm_asks_nobody_it_names(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world = run_with(scripted, make_world, call("mail.send", to=["bob@acme.test"]))
    platform = world.platform
    platform.outcomes = OutcomeService(
        platform.db, platform.audit, access=platform.access, findings=platform.findings,
        link_key=bytes(32), verifiers={"mail_sent": Bounced()}, public_url=BASE,
    )  # fmt: skip
    world.run("helper", connectors=ConnectorRegistry([ListMail()]))
    outcome = only_outcome(world)
    assert (outcome.state, outcome.beneficiaries) == ("unverified", [world.bob.user_id])
    assert requests(world) == []


def test_a_request_goes_only_by_mail_to_its_reviewer_or_says_why_it_cannot(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world, _ = mailed(
        scripted, make_world, call("mail.send", to=["bob", "customer@example.com"]),
        addresses=("alice",),
    )  # fmt: skip
    with world.platform.db.session() as session:
        org = session.get(Org, world.alice.org_id)
        assert org is not None
        # The org's channel is a shared chat channel, sent as alice (the outcome's owner).
        org.settings = {"notifications": {
            "tool": "chat.post_message", "sender": "alice",
            "arguments": {"channel": "#general", "text": "{text}"},
        }}  # fmt: skip
    delivery = NotificationDelivery(world.platform.db, ConnectorRegistry(), world.platform.audit)
    assert asyncio.run(delivery.deliver_due()) == DeliverySummary(unsent=2)
    reasons = {row.recipients[0]: row.last_error for row in requests(world)}
    # Never the chat channel: bob has no address, so his link is not sent at all ...
    assert reasons[world.bob.user_id] == (
        "@bob has no mail address (set their email): this message carries a link for "
        "them alone, so it is only mailed to them"
    )
    # ... and the owner's mailbox, which keeps what it sends, never carries a link.
    assert (reasons["external:customer@example.com"] or "").startswith(
        "notifications.sender is the owner of the outcome this link is about"
    )


def test_the_links_base_is_the_public_url_else_the_serve_address() -> None:
    assert public_base("https://meshclaw.acme.test/", "0.0.0.0", 8000) == BASE
    assert public_base(None, "127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert public_base(None, "::1", 9000) == "http://[::1]:9000"
    assert public_base(None, "0.0.0.0", 8000) is None  # every interface: no address to name
    assert feedback_url(None, "tok") == "/v1/feedback/tok"
    assert feedback_url(BASE, "tok") == f"{BASE}/v1/feedback/tok"
    assert Settings(web=WebSettings(public_url=f"{BASE}/meshclaw")).web.public_url
    for bad in ("meshclaw.acme.test", "ftp://meshclaw.acme.test", "https://a b"):
        with pytest.raises(ValidationError, match="public_url"):
            WebSettings(public_url=bad)


def test_the_platform_builds_absolute_links_under_its_public_url(tmp_path: Any) -> None:
    from meshclaw.platform import Platform

    public = Settings(home=tmp_path, embedded_model_server=False, database_url=None,
                      web=WebSettings(public_url="https://meshclaw.acme.example/"))  # fmt: skip
    local = Settings(home=tmp_path, embedded_model_server=False, database_url=None,
                     host="127.0.0.1", port=8123)  # fmt: skip
    for settings, base in ((public, "https://meshclaw.acme.example"),
                           (local, "http://127.0.0.1:8123")):  # fmt: skip
        platform = Platform(settings)
        try:
            assert platform.outcomes.public_url == base
        finally:
            platform.close()
