"""Durability re-checks: per org by hand, install-wide on a schedule, each outcome once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from meshclaw.api.app import create_app
from meshclaw.clock import utcnow
from meshclaw.errors import PermissionDenied
from meshclaw.outcomes import InMemoryLookup
from meshclaw.outcomes.models import Outcome
from meshclaw.outcomes.recheck import CLAIM
from meshclaw.policy.api import ApiResource
from meshclaw.store.models import AuditEvent
from meshclaw.workers.inprocess import InProcessWorker
from tests.conftest import World
from tests.outcomes.test_outcomes import CONNECTORS, SPEC, Start, call, only_outcome, run_with

TICKET = ("tickets.get", "OPS-12")


def due_ticket(scripted: Start, make_world: Callable[..., World]) -> tuple[World, InMemoryLookup]:
    """Alice's agent resolved bob's ticket OPS-12; bob accepted; the tracker has it reopened
    and the durability re-check is due now."""
    world = run_with(scripted, make_world, call("tickets.resolve", ticket="OPS-12"))
    lookup = InMemoryLookup(answers={TICKET: {"status": "resolved", "reporter": "bob"}})
    world.platform.outcomes.lookup = lookup
    world.run("helper", connectors=CONNECTORS)
    outcome = only_outcome(world)
    assert world.platform.outcomes.feedback(world.bob, outcome.id, "accepted").state == "credited"
    lookup.answers[TICKET]["status"] = "reopened"
    make_due(world)
    return world, lookup


def make_due(world: World) -> None:
    with world.platform.db.session() as session:
        session.execute(update(Outcome).values(durability_due_at=utcnow() - timedelta(minutes=1)))


def rechecks(world: World) -> list[str]:
    """The audited verdicts of durability re-checks."""
    with world.platform.db.session() as session:
        rows = session.execute(
            select(AuditEvent.outcome, AuditEvent.details).where(
                AuditEvent.action == "outcome.feedback"
            )
        ).all()
    return [verdict for verdict, details in rows if (details or {}).get("by") == "system"]


def test_an_admin_rechecks_only_her_own_orgs_outcomes(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world, _ = due_ticket(scripted, make_world)
    platform = world.platform
    globex = platform.accounts.create_org("globex")
    mallory = platform.accounts.create_user(globex.id, "mallory", role="platform_admin")
    tokens = {
        "org_b": platform.accounts.issue_token(mallory.id, "t"),
        "org_a": platform.accounts.issue_token(world.admin.user_id, "t"),
    }
    with TestClient(create_app(platform)) as client:

        def recheck(who: str) -> dict[str, Any]:
            response = client.post(
                "/v1/outcomes/recheck", headers={"Authorization": f"Bearer {tokens[who]}"}
            )
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        assert recheck("org_b") == {"checked": 0, "undone": 0, "silently_accepted": 0}
        assert only_outcome(world).state == "credited"  # org A's outcome untouched, still due
        assert only_outcome(world).durability_due_at is not None
        assert recheck("org_a") == {"checked": 1, "undone": 1, "silently_accepted": 0}
    assert only_outcome(world).state == "undone"


def test_silence_acceptance_by_hand_is_per_org_too(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world = run_with(scripted, make_world, call("mail.send", to="bob"))
    world.run("helper", connectors=CONNECTORS)
    outcomes, later = world.platform.outcomes, utcnow() + timedelta(hours=49)
    other = world.platform.accounts.create_org("globex").id
    assert asyncio.run(outcomes.recheck_due(org_id=other, now=later)).silently_accepted == 0
    assert only_outcome(world).state == "unaccepted"
    summary = asyncio.run(outcomes.recheck_due(org_id=world.alice.org_id, now=later))
    assert summary.silently_accepted == 1 and only_outcome(world).state == "credited"


class SlowLookup(InMemoryLookup):
    """Answers after a pause, so two re-checks overlap while one is reading."""

    async def read(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
        await asyncio.sleep(0.3)
        return await super().read(tool, arguments)


def test_overlapping_rechecks_judge_an_outcome_once(
    scripted: Start, make_world: Callable[..., World], database_url: str
) -> None:
    world, lookup = due_ticket(scripted, lambda model: make_world(model, database_url))
    outcomes = world.platform.outcomes
    outcomes.lookup = SlowLookup(answers=lookup.answers)
    results: list[Any] = []

    def recheck() -> None:
        results.append(asyncio.run(outcomes.recheck_due()))

    threads = [threading.Thread(target=recheck) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(r.undone for r in results) == [0, 0, 1]
    assert rechecks(world) == ["reopened"]  # one system verdict, not three
    assert [f.verdict for f in only_outcome_feedback(world)] == ["accepted", "reopened"]


def only_outcome_feedback(world: World) -> list[Any]:
    return world.platform.outcomes.get(world.alice, only_outcome(world).id).feedback


def test_a_recheck_that_needs_a_read_stays_due_without_a_lookup(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world, lookup = due_ticket(scripted, make_world)
    outcomes = world.platform.outcomes
    outcomes.lookup = None
    assert asyncio.run(outcomes.recheck_due()).checked == 0
    assert only_outcome(world).durability_due_at is not None  # not marked checked unchecked
    outcomes.lookup = lookup
    assert asyncio.run(outcomes.recheck_due()).undone == 1


class FailingLookup(InMemoryLookup):
    async def read(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
        raise ConnectionError("tracker down")


def test_a_recheck_whose_read_fails_is_due_again(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world, lookup = due_ticket(scripted, make_world)
    outcomes = world.platform.outcomes
    due_at = only_outcome(world).durability_due_at
    outcomes.lookup = FailingLookup()
    assert asyncio.run(outcomes.recheck_due()).checked == 0
    again = only_outcome(world).durability_due_at
    assert due_at is not None and again is not None and again > due_at  # after a back-off
    outcomes.lookup = lookup
    assert asyncio.run(outcomes.recheck_due(now=again)).undone == 1


def test_the_embedded_scheduler_runs_every_orgs_rechecks(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world, _ = due_ticket(scripted, make_world)
    worker = InProcessWorker(world.platform, poll_seconds=0.05, recheck_seconds=0.2)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while only_outcome(world).state != "undone":
            assert time.monotonic() < deadline, "the scheduled re-check did not run"
            time.sleep(0.1)
    finally:
        worker.stop()
    assert rechecks(world) == ["reopened"]


def test_the_embedded_scheduler_takes_its_interval_from_the_settings(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    assert world.platform.settings.outcomes_recheck_seconds == 900
    assert InProcessWorker(world.platform, cron=True)._recheck_seconds == 900
    assert InProcessWorker(world.platform)._recheck_seconds == 0  # not the scheduler


class WorkerDied(BaseException):
    """The worker process goes away mid-read: nothing after this line runs."""


class DyingLookup(InMemoryLookup):
    async def read(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
        raise WorkerDied


def test_an_outcome_claimed_by_a_worker_that_died_is_rechecked_once_the_claim_lapses(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world, lookup = due_ticket(scripted, make_world)
    outcomes, now = world.platform.outcomes, utcnow()
    outcomes.lookup = DyingLookup()
    with pytest.raises(WorkerDied):
        asyncio.run(outcomes.recheck_due(now=now))
    claimed_until = only_outcome(world).durability_due_at
    assert claimed_until == now + CLAIM  # held, not lost: due again when the claim lapses
    outcomes.lookup = lookup
    assert asyncio.run(outcomes.recheck_due(now=now + timedelta(minutes=1))).checked == 0
    later = asyncio.run(outcomes.recheck_due(now=now + CLAIM + timedelta(seconds=1)))
    assert (later.checked, later.undone) == (1, 1)
    assert only_outcome(world).state == "undone" and rechecks(world) == ["reopened"]


def test_a_read_that_fails_through_the_gateway_leaves_the_outcome_due_with_the_reason(
    scripted: Start, make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent may read the tracker (``tickets.get``), but the tracker answers with an
    error: the outcome is due again, as before, never undone."""
    world = run_with(scripted, make_world, call("tickets.resolve", ticket="OPS-404"))
    world.save_agent(SPEC.replace("tools:", "tools:\n  - {name: tickets.get, scope: read}"))
    outcomes = world.platform.outcomes
    outcomes.lookup = InMemoryLookup(
        answers={("tickets.get", "OPS-404"): {"status": "resolved", "reporter": "bob"}}
    )
    world.run("helper", connectors=CONNECTORS)
    outcomes.lookup = None
    make_due(world)
    due_at = only_outcome(world).durability_due_at
    monkeypatch.setattr(world.platform, "connectors", lambda: CONNECTORS)
    summary = asyncio.run(world.platform.recheck_outcomes())  # FakeTickets: no OPS-404
    assert summary.checked == 0
    after = only_outcome(world)
    assert after.state == "unaccepted"
    assert due_at is not None and after.durability_due_at is not None
    assert after.durability_due_at > due_at  # due again, after a back-off
    note = after.verification["durability"]
    assert note["status"] == "due" and "no such ticket" in note["reason"]


def test_who_rechecks_and_sets_weights_is_cedars_decision(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    platform = world.platform
    auditor = platform.accounts.caller_for(
        platform.accounts.create_user(world.alice.org_id, "audrey", role="auditor")
    )
    org = ApiResource.org(world.alice.org_id)
    for action in ("outcome.recheck", "outcome.weight"):
        allowed = platform.access.explain(world.admin, action, org).decision
        assert allowed.allowed and allowed.policies == ("role.platform_admin.outcomes",)
        for caller in (world.alice, auditor):
            assert not platform.access.authorize_api(caller, action, org).allowed
    with pytest.raises(PermissionDenied, match=r"outcome\.weight denied"):
        platform.outcomes.set_weight(world.alice, "deploy", 9)
    with pytest.raises(PermissionDenied, match=r"outcome\.recheck denied"):
        asyncio.run(platform.recheck_outcomes(auditor))
    assert platform.outcomes.set_weight(world.admin, "deploy", 9)["deploy"] == 9
    assert asyncio.run(platform.recheck_outcomes(world.admin)).checked == 0
