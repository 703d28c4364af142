"""Outcomes end to end: real runs on the scripted model, connectors that return evidence."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from sqlalchemy import select

from meshclaw.clock import utcnow
from meshclaw.connectors.base import ToolContext, ToolDefinition, ToolResult
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.errors import AuthError, PermissionDenied
from meshclaw.outcomes import InMemoryLookup
from meshclaw.outcomes.service import OutcomeInfo
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.store.models import AuditEvent
from tests.conftest import World, agent_yaml

Start = Callable[[dict[str, Any]], ScriptedServer]


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


class FakeMail:
    """A mail connector whose ``send`` returns the built-in server's evidence shape."""

    name = "mail"

    async def list_tools(self) -> list[ToolDefinition]:
        return [ToolDefinition(name="send", description="Send.", action="write")]

    async def call_tool(self, tool: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        to = arguments["to"]
        evidence = {"message_id": f"<{ctx.idempotency_key}@mail>", "recipients": [to]}
        return ToolResult(content="sent", data={"evidence": evidence})


class FakeTickets:
    """A tracker: ``resolve`` (write, with evidence) and ``get`` (read: the real state)."""

    name = "tickets"
    records: ClassVar[dict[str, dict[str, Any]]] = {
        "OPS-7": {"status": "resolved", "reporter": "bob"}
    }

    async def list_tools(self) -> list[ToolDefinition]:
        return [
            ToolDefinition(name="resolve", description="Resolve.", action="write"),
            ToolDefinition(name="get", description="Read a ticket.", action="read"),
        ]

    async def call_tool(self, tool: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        if tool == "get":
            record = self.records.get(arguments["ticket"])
            if record is None:
                return ToolResult(content="no such ticket", is_error=True)
            return ToolResult(content="ticket", data={"structured": record})
        return ToolResult(content="resolved", data={"evidence": {"ticket": arguments["ticket"]}})


CONNECTORS = ConnectorRegistry([FakeMail(), FakeTickets()])
SPEC = agent_yaml(tools=(("mail.send", "write"), ("tickets.resolve", "write"))) + (
    "outcomes:\n  - {type: mail_sent, silence_accepts_hours: 48}\n"
    # This tracker reads a ticket with ``get(ticket=KEY)``, not the built-in server's
    # ``get_ticket(number=N)``: the agent's claim says so, and re-checks honour it.
    "  - {type: ticket_resolved, verify_tool: tickets.get, verify_argument: ticket}\n"
)


def run_with(scripted: Start, world_factory: Callable[..., World], *calls: Any) -> World:
    server = scripted(
        {"turns": [{"reply": {"tool_calls": list(calls)}}, {"reply": {"content": "done"}}]}
    )
    world = world_factory(server.base_url)
    world.save_agent(SPEC)
    return world


def only_outcome(world: World) -> OutcomeInfo:
    (outcome,) = world.platform.outcomes.list_outcomes(world.alice)
    return outcome


def test_a_mail_to_someone_else_is_verified_and_credited_once_they_accept(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world = run_with(scripted, make_world, call("mail.send", to="bob", subject="report"))
    info = world.run("helper", connectors=CONNECTORS)
    assert info.status == "succeeded"
    outcome = only_outcome(world)
    assert (outcome.type, outcome.verified, outcome.state) == ("mail_sent", True, "unaccepted")
    assert outcome.beneficiaries == [world.bob.user_id] and outcome.ref.endswith("@mail>")
    outcomes = world.platform.outcomes
    # The owner's own acceptance is kept but never counts; strangers cannot judge it.
    assert outcomes.feedback(world.alice, outcome.id, "accepted").state == "unaccepted"
    with pytest.raises(PermissionDenied):
        outcomes.feedback(world.admin, outcome.id, "accepted")
    assert [o.id for o in outcomes.list_outcomes(world.bob, to_review=True)] == [outcome.id]
    accepted = outcomes.feedback(world.bob, outcome.id, "accepted", note="thanks")
    assert accepted.state == "credited"
    assert [f.by for f in accepted.feedback] == [world.alice.user_id, world.bob.user_id]
    assert outcomes.feedback(world.bob, outcome.id, "rejected").state == "undone"
    # Recording the same run again adds nothing.
    assert asyncio.run(outcomes.record_run(info.id)) == []
    with world.platform.db.session() as session:
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.action.like("outcome.%"))
        ).all()
    assert actions.count("outcome.record") == 1 and actions.count("outcome.feedback") == 3


def test_a_mail_to_oneself_earns_nothing(scripted: Start, make_world: Callable[..., World]) -> None:
    world = run_with(scripted, make_world, call("mail.send", to="alice"))
    world.run("helper", connectors=CONNECTORS)
    assert only_outcome(world).state == "self"


def test_a_ticket_is_verified_against_the_tracker_and_rechecked_for_durability(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world = run_with(scripted, make_world, call("tickets.resolve", ticket="OPS-12"))
    lookup = InMemoryLookup(
        answers={("tickets.get", "OPS-12"): {"status": "resolved", "reporter": "bob"}}
    )
    world.platform.outcomes.lookup = lookup
    world.run("helper", connectors=CONNECTORS)
    outcome = only_outcome(world)
    assert outcome.verified and outcome.beneficiaries == [world.bob.user_id]
    assert outcome.verification == {"checked": "resolved in the tracker; reported by bob"}
    assert outcome.durability_due_at is not None
    outcomes = world.platform.outcomes
    assert outcomes.feedback(world.bob, outcome.id, "accepted").state == "credited"
    # Not due yet: nothing happens.
    assert asyncio.run(outcomes.recheck_due()).checked == 0
    lookup.answers[("tickets.get", "OPS-12")]["status"] = "reopened"
    later = utcnow() + timedelta(hours=73)
    summary = asyncio.run(outcomes.recheck_due(now=later))
    assert (summary.checked, summary.undone) == (1, 1)
    after = outcomes.get(world.alice, outcome.id)
    assert after.state == "undone" and after.feedback[-1].by == "system"
    assert after.feedback[-1].verdict == "reopened" and after.durability_due_at is None


def test_without_a_granted_read_a_ticket_is_unverified(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world = run_with(scripted, make_world, call("tickets.resolve", ticket="OPS-13"))
    world.run("helper", connectors=CONNECTORS)  # no lookup configured
    outcome = only_outcome(world)
    assert (outcome.verified, outcome.state) == (False, "unverified")
    # The spec does not grant tickets.get: the gateway refuses the read.
    assert outcome.verification["reason"] == "tickets.get: error: no tool named tickets.get"
    assert world.platform.outcomes.feedback(world.alice, outcome.id, "accepted").state == (
        "unverified"
    )


def test_signed_one_click_links(scripted: Start, make_world: Callable[..., World]) -> None:
    world = run_with(scripted, make_world, call("mail.send", to="customer@example.com"))
    world.run("helper", connectors=CONNECTORS)
    outcome = only_outcome(world)
    assert outcome.beneficiaries == ["external"]
    outcomes = world.platform.outcomes
    token = outcomes.link_for(outcome.id, "external:customer@example.com")
    assert outcomes.check_link(token).id == outcome.id
    assert outcomes.feedback_by_link(token, "accepted").state == "credited"
    body, mac = token.split(".")
    with pytest.raises(AuthError):
        outcomes.feedback_by_link(body + "." + mac[::-1], "accepted")
    with pytest.raises(AuthError):
        outcomes.feedback_by_link("garbage", "accepted")
    expired = outcomes.link_for(outcome.id, "external:x@example.com", ttl=timedelta(seconds=-1))
    with pytest.raises(AuthError, match="expired"):
        outcomes.feedback_by_link(expired, "accepted")


def test_silence_accepts_when_the_type_says_so(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world = run_with(scripted, make_world, call("mail.send", to="bob"))
    world.run("helper", connectors=CONNECTORS)
    outcomes = world.platform.outcomes
    early = asyncio.run(outcomes.recheck_due(now=utcnow() + timedelta(hours=47)))
    assert early.silently_accepted == 0
    summary = asyncio.run(outcomes.recheck_due(now=utcnow() + timedelta(hours=49)))
    assert summary.silently_accepted == 1
    assert only_outcome(world).state == "credited"


def test_type_weights_are_admin_set(make_world: Callable[..., World]) -> None:
    world = make_world()
    outcomes = world.platform.outcomes
    assert outcomes.weights(world.alice.org_id)["deploy"] == 3.0
    with pytest.raises(PermissionDenied):
        outcomes.set_weight(world.alice, "deploy", 10)
    assert outcomes.set_weight(world.admin, "deploy", 5.0)["deploy"] == 5.0
    assert outcomes.set_weight(world.admin, "custom_thing", 0.5)["custom_thing"] == 0.5


def test_cost_per_accepted_durable_outcome(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world = run_with(scripted, make_world, call("mail.send", to="bob"))
    world.run("helper", connectors=CONNECTORS)
    outcomes = world.platform.outcomes
    (row,) = outcomes.cost_per_outcome(world.alice.org_id, by="user")
    assert row.key == world.alice.user_id and row.credited == 0 and row.cost_per_outcome is None
    outcomes.feedback(world.bob, only_outcome(world).id, "accepted")
    (row,) = outcomes.cost_per_outcome(world.alice.org_id, by="team")
    assert row.credited == 1 and row.cost_usd >= Decimal(0)
    assert row.cost_per_outcome == row.cost_usd.quantize(Decimal("0.000001"))


def test_verification_reads_the_tracker_through_the_gateway(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted(
        {
            "turns": [
                {"reply": {"tool_calls": [call("tickets.resolve", ticket="OPS-7")]}},
                {"reply": {"tool_calls": [call("tickets.resolve", ticket="OPS-8")]}},
                {"reply": {"content": "done"}},
            ]
        }
    )
    world = make_world(server.base_url)
    world.save_agent(
        agent_yaml(tools=(("tickets.resolve", "write"), ("tickets.get", "read")))
        + "outcomes:\n  - {type: ticket_resolved, verify_tool: tickets.get, "
        "verify_argument: ticket}\n"
    )
    info = world.run("helper", connectors=CONNECTORS)
    by_ref = {o.ref: o for o in world.platform.outcomes.list_outcomes(world.alice)}
    assert by_ref["OPS-7"].verified and by_ref["OPS-7"].beneficiaries == [world.bob.user_id]
    assert not by_ref["OPS-8"].verified
    assert by_ref["OPS-8"].verification["reason"] == "tickets.get: no such ticket"
    # The reads are steps of the run: authorised, metered and audited like any call.
    steps = world.platform.runs.steps(world.alice, info.id)
    assert [s.name for s in steps if s.kind == "tool"] == [
        "tickets.resolve", "tickets.resolve", "tickets.get", "tickets.get",
    ]  # fmt: skip
