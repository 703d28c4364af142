"""Scheduled durability re-checks read the real connector through the gateway, in the
context of the outcome's run: the spec's read grant, the owner's delegated credential
from the vault, metered and audited; the run's record stays as it ended."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from meshclaw.clock import utcnow
from meshclaw.connectors.fakes.github import GitHubFake, GitHubState
from meshclaw.outcomes.models import Outcome
from meshclaw.outcomes.recheck import RETRY_FIRST
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.store.models import AuditEvent, Run, RunStep, UsageRecord
from meshclaw.workers.inprocess import InProcessWorker
from tests.conftest import World, agent_yaml
from tests.outcomes.test_ticket_verification import REPO, SPEC, file_ticket, resolve


class RecordingTokens(dict[str, str]):
    """The fake tracker's tokens, noting every token a request presented."""

    def __init__(self) -> None:
        super().__init__()
        self.presented: list[str] = []

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.presented.append(key)
        return super().get(key, default)


@pytest.fixture
def tracker() -> Iterator[tuple[GitHubFake, RecordingTokens]]:
    state = GitHubState()
    state.tokens = tokens = RecordingTokens()
    state.add_repo(REPO)
    for login in ("alice", "bob", "bot"):
        state.add_token(f"ghp-{login}", login)
    with GitHubFake(state) as fake:
        yield fake, tokens


def org_tickets_connector(world: World, github: GitHubFake) -> None:
    """The org's tickets server, added by an admin; its token comes from the vault: the
    org's default is a bot's, alice has delegated her own."""
    platform, org = world.platform, world.alice.org_id
    platform.connector_admin.add(world.admin, "tickets", {
        "command": sys.executable, "args": ["-m", "meshclaw.connectors.servers", "tickets"],
        "env": {"MESHCLAW_TICKETS_API_URL": github.api_url, "MESHCLAW_TICKETS_REPO": REPO},
        "credentials": "gh", "credential_env": {"MESHCLAW_TICKETS_TOKEN": "token"},
        "approval": "first_use",
    })  # fmt: skip
    platform.vault.put("gh", {"token": "ghp-bot"}, org_id=org)
    platform.vault.put("gh", {"token": "ghp-alice"}, org_id=org, user_id=world.alice.user_id)


def make_due(world: World) -> None:
    with world.platform.db.session() as session:
        session.execute(update(Outcome).values(durability_due_at=utcnow() - timedelta(minutes=1)))


def test_the_scheduled_recheck_reads_the_tracker_through_the_gateway_as_the_owner(
    tracker: tuple[GitHubFake, RecordingTokens],
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
) -> None:
    github, tokens = tracker
    number = file_ticket(github, "bob", "Checkout is slow")
    model = scripted({"turns": [{"reply": {"tool_calls": [resolve(number)]}},
                                {"reply": {"content": "done"}}]})  # fmt: skip
    world = make_world(model.base_url)
    org_tickets_connector(world, github)
    world.save_agent(SPEC)
    run = world.run("helper")  # the org's connectors, as in production
    assert run.status == "succeeded", run.error
    platform = world.platform
    (outcome,) = platform.outcomes.list_outcomes(world.alice)
    assert (outcome.verified, outcome.beneficiaries) == (True, [world.bob.user_id])
    assert platform.outcomes.feedback(world.bob, outcome.id, "accepted").state == "credited"
    with platform.db.session() as session:
        ended = session.execute(
            select(Run.status, Run.ended_at, Run.step_count).where(Run.id == run.id)
        ).one()

    reopened = httpx.patch(f"{github.api_url}/repos/{REPO}/issues/{number}",
                           json={"state": "open"},
                           headers={"Authorization": "Bearer ghp-bob"})  # fmt: skip
    assert reopened.status_code == 200
    make_due(world)
    tokens.presented.clear()
    worker = InProcessWorker(platform, poll_seconds=0.05, recheck_seconds=0.2)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while platform.outcomes.get(world.alice, outcome.id).state != "undone":
            assert time.monotonic() < deadline, "the scheduled re-check did not undo it"
            time.sleep(0.1)
    finally:
        worker.stop()

    after = platform.outcomes.get(world.alice, outcome.id)
    assert [(f.by, f.verdict) for f in after.feedback][-1] == ("system", "reopened")
    assert after.durability_due_at is None and after.verification["durability"]["status"] == (
        "undone"
    )
    # The tracker was read with alice's own delegated token, never the org's bot.
    assert tokens.presented and set(tokens.presented) == {"ghp-alice"}
    with platform.db.session() as session:
        (step,) = session.scalars(
            select(RunStep).where(
                RunStep.run_id == run.id,
                RunStep.request["tool_call_id"].as_string().like(f"recheck-{outcome.id}-%"),
            )
        ).all()
        assert (step.kind, step.name, step.status) == ("tool", "tickets.get_ticket", "ok")
        assert step.request["arguments"] == {"number": number}
        assert step.started_at > ended.ended_at
        # The run stays as it ended: its status, end and step count do not change.
        assert (
            session.execute(
                select(Run.status, Run.ended_at, Run.step_count).where(Run.id == run.id)
            ).one()
            == ended
        )
        metered = session.scalars(
            select(UsageRecord).where(UsageRecord.step_id == step.id)
        ).one()  # fmt: skip
        assert (metered.tool, metered.user_id, metered.agent_id, metered.run_id) == (
            "tickets.get_ticket", world.alice.user_id, outcome.agent_id, run.id,
        )  # fmt: skip
        audited = session.execute(
            select(AuditEvent.action, AuditEvent.outcome, AuditEvent.details).where(
                AuditEvent.action.in_(("tool.read", "outcome.recheck"))
            )
        ).all()
    reads = [(a, o) for a, o, d in audited if a == "tool.read" and d.get("step") == step.seq]
    assert reads == [("tool.read", "ok")]
    assert [o for a, o, _ in audited if a == "outcome.recheck"] == ["undone"]


NO_READ_GRANT = agent_yaml(tools=(("tickets.resolve", "write"),), timeout=120) + (
    "outcomes:\n  - {type: ticket_resolved}\n"
)


def test_an_agent_without_the_read_grant_cannot_recheck_and_says_why(
    tracker: tuple[GitHubFake, RecordingTokens],
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
) -> None:
    """Verified at the end of its run (here by a test lookup), the outcome is due; the
    agent version may not read the tracker, so the re-check is refused: like a failed
    read it stays due with the reason (past the grace it opens a finding:
    ``test_recheck_grace``), and nothing is undone."""
    from meshclaw.outcomes import InMemoryLookup
    from meshclaw.workers.celery_app import WorkerRuntime

    github, tokens = tracker
    number = file_ticket(github, "bob", "Checkout is slow")
    model = scripted({"turns": [{"reply": {"tool_calls": [resolve(number)]}},
                                {"reply": {"content": "done"}}]})  # fmt: skip
    world = make_world(model.base_url)
    org_tickets_connector(world, github)
    world.save_agent(NO_READ_GRANT)
    platform, key = world.platform, f"{REPO}#{number}"
    platform.outcomes.lookup = InMemoryLookup(
        answers={("tickets.get_ticket", str(number)): {"status": "resolved", "reporter": "bob"}}
    )
    run = world.run("helper")
    platform.outcomes.lookup = None  # production: no lookup, reads go through the gateway
    (outcome,) = platform.outcomes.list_outcomes(world.alice)
    assert (outcome.ref, outcome.verified) == (key, True)
    make_due(world)
    due_at = platform.outcomes.get(world.alice, outcome.id).durability_due_at
    tokens.presented.clear()

    runtime = WorkerRuntime(platform.settings, lambda _: platform)  # beat's job
    assert runtime.recheck_outcomes() == {"checked": 0, "undone": 0, "silently_accepted": 0}
    after = platform.outcomes.get(world.alice, outcome.id)
    # Due again after a back-off: a refusal proves nothing either way.
    assert after.durability_due_at is not None and due_at is not None
    assert due_at < after.durability_due_at <= utcnow() + RETRY_FIRST
    note = after.verification["durability"]
    assert (note["status"], note["reason"]) == (
        "refused", "read refused: the agent's spec does not grant tickets.get_ticket",
    )  # fmt: skip
    assert after.state == outcome.state and not after.feedback  # nothing undone
    assert "ghp-alice" not in tokens.presented  # no ticket was read
    with platform.db.session() as session:
        (step,) = session.scalars(
            select(RunStep).where(
                RunStep.run_id == run.id,
                RunStep.request["tool_call_id"].as_string().like(f"recheck-{outcome.id}-%"),
            )
        ).all()
        assert (step.name, step.status) == ("tickets.get_ticket", "denied")
        refused = session.execute(
            select(AuditEvent.action, AuditEvent.outcome).where(
                AuditEvent.action.in_(("tool.call", "outcome.recheck"))
            )
        ).all()
    assert sorted(refused) == [("tool.call", "denied")]  # the refusal is on record
    make_due(world)  # the back-off has passed
    assert runtime.recheck_outcomes()["checked"] == 0  # tried again, refused again
    with platform.db.session() as session:
        steps = session.scalars(
            select(RunStep.status).where(
                RunStep.run_id == run.id,
                RunStep.request["tool_call_id"].as_string().like(f"recheck-{outcome.id}-%"),
            )
        ).all()
    assert steps == ["denied", "denied"]
