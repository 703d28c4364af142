"""A durability re-check that keeps failing (connector down, credential revoked) does not
keep its credit forever: past the grace it opens one integrity finding about the owner,
so the credit waits ("pending review") until a reviewer decides."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from meshclaw.config import Settings
from meshclaw.connectors.fakes.github import GitHubFake, GitHubState
from meshclaw.integrity.models import IntegrityFinding
from meshclaw.outcomes import InMemoryLookup
from meshclaw.outcomes.recheck import RECHECK_GRACE, RETRY_FIRST
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.store.models import AuditEvent, RunStep
from tests.conftest import World
from tests.outcomes.test_outcomes import Start, only_outcome
from tests.outcomes.test_recheck import TICKET, FailingLookup, due_ticket
from tests.outcomes.test_recheck_gateway import RecordingTokens, make_due, org_tickets_connector
from tests.outcomes.test_ticket_verification import REPO, SPEC, file_ticket, resolve


def findings(world: World) -> list[IntegrityFinding]:
    with world.platform.db.session() as session:
        rows = session.scalars(select(IntegrityFinding)).all()
        session.expunge_all()
        return list(rows)


def tick(world: World, now: datetime) -> None:
    asyncio.run(world.platform.outcomes.recheck_due(now=now))


def failing_ticket(scripted: Start, make_world: Callable[..., World]) -> tuple[World, datetime]:
    """Alice's credited ticket is due for its re-check, and the tracker cannot be read."""
    world, lookup = due_ticket(scripted, make_world)
    lookup.answers[TICKET]["status"] = "resolved"  # still holds, were it readable
    due_at = only_outcome(world).durability_due_at
    assert due_at is not None
    world.platform.outcomes.lookup = FailingLookup()
    return world, due_at


def credit(world: World) -> tuple[float, float]:
    mine = world.platform.analytics.person(world.alice, world.alice.user_id)
    return mine["score"], mine["pending_review"]


def test_the_grace_is_a_setting_of_three_days() -> None:
    assert Settings().outcomes_recheck_grace_hours == 72
    assert timedelta(hours=72) == RECHECK_GRACE


def test_before_the_grace_a_failing_recheck_changes_nothing(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world, due_at = failing_ticket(scripted, make_world)
    before = credit(world)
    assert before[0] > 0 and before[1] == 0
    for hours in (1, 24, 71):
        tick(world, due_at + timedelta(hours=hours))
    assert findings(world) == []
    assert credit(world) == before
    after = only_outcome(world)
    # Due again, each failure waiting twice as long: the third waits 60 minutes.
    assert after.state == "credited"
    assert after.durability_due_at == due_at + timedelta(hours=71) + 4 * RETRY_FIRST
    failing = after.verification["recheck_failing"]
    assert failing["since"] == (due_at + timedelta(hours=1)).isoformat()
    assert failing["first_due"] == due_at.isoformat() and failing["tries"] == 3
    assert "tracker down" in failing["last_error"] and "finding" not in failing


def test_a_failing_recheck_backs_off_instead_of_trying_every_tick(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world, due_at = failing_ticket(scripted, make_world)
    for quarter in range(4 * 24):  # the scheduler's tick, every 15 minutes for a day
        tick(world, due_at + quarter * timedelta(minutes=15))
    failing = only_outcome(world).verification["recheck_failing"]
    # 0:00, 0:15, 0:45, 1:45, 3:45, 7:45, 13:45, 19:45: eight tries, not 96.
    assert failing["tries"] == 8
    assert only_outcome(world).durability_due_at == due_at + timedelta(hours=25, minutes=45)


def test_past_the_grace_one_finding_withholds_the_owners_credit_until_a_recheck_reads(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world, due_at = failing_ticket(scripted, make_world)
    score, _ = credit(world)
    first = due_at + timedelta(hours=1)
    tick(world, first)
    tick(world, due_at + RECHECK_GRACE + timedelta(minutes=1))
    (finding,) = findings(world)
    outcome = only_outcome(world)
    assert (finding.subject, finding.status, finding.detector) == (
        world.alice.user_id, "open", "recheck_failing",
    )  # fmt: skip
    assert finding.evidence["outcome"] == outcome.id
    assert (finding.evidence["type"], finding.evidence["ref"]) == ("ticket_resolved", "OPS-12")
    assert finding.evidence["first_failure"] == first.isoformat()
    assert "tracker down" in finding.evidence["last_error"]
    assert outcome.verification["recheck_failing"]["finding"] == finding.id
    assert credit(world) == (0.0, score)  # pending review, not lost
    with world.platform.db.session() as session:
        audited = session.scalars(
            select(AuditEvent.resource).where(AuditEvent.action == "integrity.finding.open")
        ).all()
    assert audited == [f"finding:{finding.id}"]

    tick(world, due_at + RECHECK_GRACE + timedelta(hours=2))  # next tick: none more
    assert [f.id for f in findings(world)] == [finding.id]

    # The tracker answers again: the outcome holds and says so; the finding stays open for
    # the reviewer, noting the recovery.
    world.platform.outcomes.lookup = InMemoryLookup(
        answers={TICKET: {"status": "resolved", "reporter": "bob"}}
    )
    recovered = due_at + RECHECK_GRACE + timedelta(hours=3)
    tick(world, recovered)
    outcome = only_outcome(world)
    assert outcome.durability_due_at is None
    assert outcome.verification["durability"]["status"] == "holds"
    assert outcome.verification["recheck_failing"]["recovered_at"] == recovered.isoformat()
    (still,) = findings(world)
    assert still.status == "open" and still.evidence["recovered_at"] == recovered.isoformat()
    assert credit(world) == (0.0, score)  # a reviewer decides, not the re-check


@pytest.fixture
def tracker() -> Iterator[tuple[GitHubFake, RecordingTokens]]:
    """The fake tracker of ``test_recheck_gateway``: alice's and a bot's tokens."""
    state = GitHubState()
    state.tokens = tokens = RecordingTokens()
    state.add_repo(REPO)
    for login in ("alice", "bob", "bot"):
        state.add_token(f"ghp-{login}", login)
    with GitHubFake(state) as fake:
        yield fake, tokens


def test_an_owner_who_revokes_her_credential_loses_the_credit_to_review(
    tracker: tuple[GitHubFake, RecordingTokens],
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
) -> None:
    """Through the gateway: alice deletes her delegated tracker credential (and the org
    has no default), so every re-check read fails; past the grace, a finding."""
    github, _ = tracker
    number = file_ticket(github, "bob", "Checkout is slow")
    model = scripted({"turns": [{"reply": {"tool_calls": [resolve(number)]}},
                                {"reply": {"content": "done"}}]})  # fmt: skip
    world = make_world(model.base_url)
    org_tickets_connector(world, github)
    world.save_agent(SPEC)
    assert world.run("helper").status == "succeeded"
    platform, org = world.platform, world.alice.org_id
    (outcome,) = platform.outcomes.list_outcomes(world.alice)
    assert platform.outcomes.feedback(world.bob, outcome.id, "accepted").state == "credited"
    score, _ = credit(world)
    assert platform.vault.delete("gh", org_id=org, user_id=world.alice.user_id)
    assert platform.vault.delete("gh", org_id=org)
    make_due(world)
    due_at = only_outcome(world).durability_due_at
    assert due_at is not None

    asyncio.run(platform.recheck_outcomes(now=due_at + timedelta(hours=1)))
    after = only_outcome(world)
    assert after.verification["durability"]["status"] == "due", after.verification
    assert findings(world) == []
    asyncio.run(platform.recheck_outcomes(now=due_at + RECHECK_GRACE))
    (finding,) = findings(world)
    assert finding.evidence["outcome"] == outcome.id
    assert credit(world) == (0.0, score)


def test_a_removed_connector_is_refused_retried_and_past_the_grace_withholds_the_credit(
    tracker: tuple[GitHubFake, RecordingTokens],
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
) -> None:
    """Through the gateway: the org's admin removes the tracker connector after alice's
    ticket was verified and accepted. The re-check read is refused (the tool is no longer
    offered): like a failing read it stays due, and past the grace one finding withholds
    the credit. The connector is added back: the re-check reads again, the outcome holds
    and says so, the finding notes the recovery and a reviewer gives the credit back."""
    github, _ = tracker
    number = file_ticket(github, "bob", "Checkout is slow")
    model = scripted({"turns": [{"reply": {"tool_calls": [resolve(number)]}},
                                {"reply": {"content": "done"}}]})  # fmt: skip
    world = make_world(model.base_url)
    org_tickets_connector(world, github)
    world.save_agent(SPEC)
    assert world.run("helper").status == "succeeded"
    platform = world.platform
    (outcome,) = platform.outcomes.list_outcomes(world.alice)
    assert platform.outcomes.feedback(world.bob, outcome.id, "accepted").state == "credited"
    score, _ = credit(world)
    platform.connector_admin.remove(world.admin, "tickets")
    make_due(world)
    due_at = only_outcome(world).durability_due_at
    assert due_at is not None

    first = due_at + timedelta(hours=1)
    asyncio.run(platform.recheck_outcomes(now=first))
    after = only_outcome(world)
    assert after.durability_due_at == first + RETRY_FIRST  # due again, not given up on
    note = after.verification["durability"]
    assert note["status"] == "refused" and "not offered" in note["reason"], note
    assert after.verification["recheck_failing"]["since"] == first.isoformat()
    assert findings(world) == [] and credit(world) == (score, 0.0)  # within the grace

    asyncio.run(platform.recheck_outcomes(now=due_at + RECHECK_GRACE + timedelta(minutes=1)))
    (finding,) = findings(world)
    assert (finding.subject, finding.status, finding.detector) == (
        world.alice.user_id, "open", "recheck_failing",
    )  # fmt: skip
    assert finding.evidence["outcome"] == outcome.id
    assert finding.evidence["first_failure"] == first.isoformat()
    assert "read refused" in finding.evidence["last_error"]
    assert credit(world) == (0.0, score)  # pending review
    with platform.db.session() as session:  # every refused read is kept: a step, audited
        refused = session.scalars(
            select(RunStep.status).where(
                RunStep.run_id == outcome.run_id,
                RunStep.request["tool_call_id"].as_string().like(f"recheck-{outcome.id}-%"),
            )
        ).all()
    assert refused == ["denied", "denied"]
    assert only_outcome(world).state == "credited"  # the record itself is unchanged

    org_tickets_connector(world, github)  # the admin adds the tracker back
    recovered = due_at + RECHECK_GRACE + timedelta(hours=2)
    asyncio.run(platform.recheck_outcomes(now=recovered))
    after = only_outcome(world)
    assert after.durability_due_at is None
    assert after.verification["durability"]["status"] == "holds"
    assert after.verification["recheck_failing"]["recovered_at"] == recovered.isoformat()
    (still,) = findings(world)
    assert still.status == "open" and still.evidence["recovered_as"] == "holds"
    assert credit(world) == (0.0, score)  # a reviewer decides, not the re-check
    platform.findings.move(world.admin, finding.id, "dismiss", reason="tracker was moved")
    assert credit(world) == (score, 0.0)
