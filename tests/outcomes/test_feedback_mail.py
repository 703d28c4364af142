"""End to end on loopback: an agent mails a colleague, a customer and its owner through
the built-in mail server (aiosmtpd, dovecot); the verified outcome's feedback requests
are mailed by the notification outbox through the same server, each to its reviewer
alone with that reviewer's link; following the colleague's link and accepting credits
the outcome."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from meshclaw.api.app import create_app
from meshclaw.connectors.approvals import ToolApprovals
from meshclaw.connectors.mcp import McpConnector
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.notify.deliver import DeliverySummary, NotificationDelivery
from meshclaw.policy.authorizer import SpecGrantAuthorizer
from meshclaw.store.models import Org
from tests.conftest import World
from tests.connectors.conftest import require
from tests.connectors.mailpeers import (
    ImapAccount,
    SmtpServer,
    dovecot_available,
    start_dovecot,
    start_smtp,
)
from tests.connectors.test_mail_server import credentials, mail_config
from tests.outcomes.test_outcomes import SPEC, Start, call, only_outcome

BASE = "https://meshclaw.acme.test"
LINK = re.compile(re.escape(BASE) + r"(/v1/feedback/[A-Za-z0-9_.-]+)")


@pytest.fixture
def peers() -> Iterator[tuple[ImapAccount, SmtpServer]]:
    require(dovecot_available(), "dovecot is not installed: apt-get install dovecot-imapd")
    with start_dovecot() as account, start_smtp(account) as smtp:
        yield account, smtp


def mail(world: World, account: ImapAccount, smtp: SmtpServer) -> ConnectorRegistry:
    connector = McpConnector(
        "mail", mail_config(account, smtp), approvals=ToolApprovals(world.platform.db),
        credentials=credentials(account),
    )  # fmt: skip
    return ConnectorRegistry([connector])


def test_each_reviewer_is_mailed_their_own_link_and_the_colleagues_credits_the_outcome(
    peers: tuple[ImapAccount, SmtpServer],
    scripted: Start,
    make_world: Callable[..., World],
    database_url: str,
) -> None:
    account, smtp = peers
    to = ["bob@acme.test", "customer@example.com", "alice@acme.test"]
    server = scripted({"turns": [
        {"reply": {"tool_calls": [call("mail.send", to=to, subject="Q3", body="Attached.")]}},
        {"reply": {"content": "sent"}},
    ]})  # fmt: skip
    world = make_world(server.base_url, database_url)
    for handle in ("alice", "bob"):
        world.platform.accounts.set_email(world.alice.org_id, handle, f"{handle}@acme.test")
    world.save_agent(SPEC)
    world.platform.outcomes.public_url = BASE
    info = world.run(
        "helper", connectors=mail(world, account, smtp), authorizer=SpecGrantAuthorizer()
    )
    assert info.status == "succeeded", info.error
    outcome = only_outcome(world)
    assert (outcome.verified, outcome.state) == (True, "unaccepted")
    assert [e["to"] for e in smtp.envelopes] == [to]  # the agent's own mail

    # The org tells people in a shared chat channel: links still go only by mail, each to
    # its reviewer (no chat connector is even registered here).
    with world.platform.db.session() as session:
        org = session.get(Org, world.alice.org_id)
        assert org is not None
        org.settings = {
            "notifications": {
                "tool": "chat.post_message",
                "arguments": {"channel": "#general", "text": "{text}"},
            }
        }
    registry = mail(world, account, smtp)
    delivery = NotificationDelivery(world.platform.db, registry, world.platform.audit)
    try:
        assert asyncio.run(delivery.deliver_due()) == DeliverySummary(sent=2)
    finally:
        asyncio.run(registry.aclose())

    links: dict[str, str] = {}
    for envelope in smtp.envelopes[1:]:
        message = email.message_from_bytes(envelope["data"], policy=email.policy.default)
        body = message.get_body(preferencelist=("plain",))
        assert body is not None
        text = body.get_content()
        (path,) = LINK.findall(text)
        (address,) = envelope["to"]
        links[address] = path
        assert message["Subject"] == "alice's agent helper: was this useful?"
        assert f"mail sent ({outcome.ref})" in text
    # One mail each for the colleague and the customer; none to the owner's own address.
    assert sorted(links) == ["bob@acme.test", "customer@example.com"]
    assert links["bob@acme.test"] != links["customer@example.com"]

    with TestClient(create_app(world.platform)) as client:
        page = client.get(links["bob@acme.test"])
        assert page.status_code == 200 and "mail sent" in page.text  # a GET records nothing
        assert world.platform.outcomes.get(world.alice, outcome.id).feedback == []
        answered = client.post(links["bob@acme.test"], params={"verdict": "accepted"})
        assert answered.status_code == 200 and "Recorded: accepted" in answered.text
    credited = world.platform.outcomes.get(world.alice, outcome.id)
    assert credited.state == "credited"
    assert [(f.by, f.verdict, f.via) for f in credited.feedback] == [
        (world.bob.user_id, "accepted", "link")
    ]
