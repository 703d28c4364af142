"""A run says when its outcomes are recorded: ``outcomes_settled_at``, set after them.

The run's end is written first and its outcomes are verified and recorded after it, so a
client that saw ``succeeded`` could read none yet. These tests pin the marker: unset while
recording, set once every outcome is stored (also with no outcome claims, or when the
recording failed, then with why), and set later by the sweep for a run whose worker died
in between, for one cancelled while it waited for an approval, and never twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from meshclaw import platform as platform_module
from meshclaw.clock import utcnow
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.runtime.executor import RunExecutor, ToolReader
from meshclaw.runtime.service import SETTLE_GRACE, RunInfo
from meshclaw.store.models import Run, RunStep
from tests.conftest import FAST_RETRY, World, agent_yaml
from tests.outcomes.test_outcomes import CONNECTORS, FakeMail, FakeTickets, Start, call, run_with

TICKETS_SPEC = agent_yaml(tools=(("tickets.resolve", "write"), ("tickets.get", "read"))) + (
    "outcomes:\n  - {type: ticket_resolved, verify_tool: tickets.get, verify_argument: ticket}\n"
)


def tickets_world(scripted: Start, make_world: Callable[..., World], *tickets: str) -> World:
    """alice's agent resolves ``tickets``; the tracker (``CONNECTORS``) reads them back."""
    turns = [{"reply": {"tool_calls": [call("tickets.resolve", ticket=t)]}} for t in tickets]
    server = scripted({"turns": [*turns, {"reply": {"content": "done"}}]})
    world = make_world(server.base_url)
    world.save_agent(TICKETS_SPEC)
    return world


async def execute_with(world: World, run_id: str, on_finish: Any) -> None:
    """Execute the run with ``on_finish`` in place of the platform's outcome recording."""
    gateway = world.platform.build_gateway(retry=FAST_RETRY, connectors=CONNECTORS)
    try:
        executor = RunExecutor(
            db=world.platform.db, gateway=gateway, audit=world.platform.audit, on_finish=on_finish
        )
        await executor.execute(run_id)
    finally:
        await gateway.aclose()


async def die_after_the_end(world: World, run_id: str) -> None:
    """The worker is shut down (its task cancelled) after the run's end was written and
    before any outcome was recorded: what a crash at that moment leaves in the store."""
    recording = asyncio.Event()

    async def hang(run_id: str, read: ToolReader) -> None:
        recording.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(execute_with(world, run_id, hang))
    await recording.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def settle_later(world: World) -> list[str]:
    """The sweep as it runs once ``SETTLE_GRACE`` has passed since the run's end."""
    later = utcnow() + SETTLE_GRACE + timedelta(seconds=1)
    return asyncio.run(world.platform.settle_outcomes(now=later))


def test_a_run_is_settled_only_once_its_outcomes_are_recorded(
    scripted: Start, make_world: Callable[..., World], database_url: str
) -> None:
    world = run_with(scripted, lambda url: make_world(url, database_url),
                     call("mail.send", to="bob", subject="report"))  # fmt: skip
    seen: list[tuple[RunInfo, int]] = []
    record = world.platform.outcomes.record_run

    async def record_and_look(run_id: str, read: ToolReader) -> object:
        # What a client polling the run sees while the outcomes are being recorded.
        seen.append((world.platform.runs.get(world.alice, run_id), len(outcomes_of(world))))
        return await record(run_id, read)

    run_id = world.start_run("helper")
    before = utcnow()
    asyncio.run(execute_with(world, run_id, record_and_look))

    [(during, outcomes_then)] = seen
    assert during.status == "succeeded" and during.ended_at is not None
    assert (during.outcomes_settled_at, during.settled, outcomes_then) == (None, False, 0)
    run = world.platform.runs.get(world.alice, run_id)
    assert run.settled and run.outcomes_error is None
    assert run.outcomes_settled_at is not None and run.ended_at is not None
    assert before <= run.ended_at <= run.outcomes_settled_at <= utcnow()
    (outcome,) = outcomes_of(world)
    assert outcome.run_id == run_id and outcome.verified
    # Nothing is left for the sweep, however late it comes.
    assert settle_later(world) == []


def outcomes_of(world: World) -> list[Any]:
    return world.platform.outcomes.list_outcomes(world.alice)


def test_a_run_without_outcome_claims_is_settled_at_its_end(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted({"turns": [{"reply": {"content": "nothing to do"}}]})
    world = make_world(server.base_url)
    world.save_agent(agent_yaml())
    run = world.run("helper")
    assert run.status == "succeeded" and run.settled and run.outcomes_error is None
    assert run.ended_at is not None and run.outcomes_settled_at is not None
    assert run.outcomes_settled_at >= run.ended_at


def test_a_failed_recording_settles_the_run_with_why(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world = run_with(scripted, make_world, call("mail.send", to="bob", subject="report"))

    async def broken(run_id: str, read: ToolReader) -> None:
        raise RuntimeError("the verifier's store is gone")

    run_id = world.start_run("helper")
    asyncio.run(execute_with(world, run_id, broken))
    run = world.platform.runs.get(world.alice, run_id)
    assert run.status == "succeeded" and run.settled
    assert run.outcomes_error == "RuntimeError: the verifier's store is gone"
    assert outcomes_of(world) == []
    assert settle_later(world) == []  # settled, failure and all: the sweep leaves it


def test_a_run_whose_worker_died_after_its_end_is_settled_by_the_sweep(
    scripted: Start, make_world: Callable[..., World], database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    world = tickets_world(scripted, lambda url: make_world(url, database_url), "OPS-7")
    # The sweep reads through the platform's own connectors, as a scheduler's would.
    monkeypatch.setattr(
        world.platform, "connectors", lambda: ConnectorRegistry([FakeMail(), FakeTickets()])
    )
    run_id = world.start_run("helper")
    asyncio.run(die_after_the_end(world, run_id))
    left = world.platform.runs.get(world.alice, run_id)
    assert left.status == "succeeded" and not left.settled and outcomes_of(world) == []

    # Within the grace its executor may still be at it: the sweep leaves it alone.
    assert asyncio.run(world.platform.settle_outcomes()) == []
    assert settle_later(world) == [run_id]
    run = world.platform.runs.get(world.alice, run_id)
    assert run.settled and run.outcomes_error is None and run.status == "succeeded"
    assert run.ended_at == left.ended_at  # the run's own record is not touched
    (outcome,) = outcomes_of(world)
    assert (outcome.ref, outcome.verified, outcome.beneficiaries) == (
        "OPS-7", True, [world.bob.user_id],
    )  # fmt: skip
    # Verified as at a run's end: a read of the tracker, through the gateway, a step.
    reads = [s for s in world.platform.runs.steps(world.alice, run_id) if s.name == "tickets.get"]
    assert [(s.status, s.request["tool_call_id"]) for s in reads] == [("ok", "verify-1")]
    assert settle_later(world) == []  # once


def test_the_outcome_recheck_schedule_runs_the_sweep(
    scripted: Start, make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    world = run_with(scripted, make_world, call("mail.send", to="bob", subject="report"))
    run_id = world.start_run("helper")
    asyncio.run(die_after_the_end(world, run_id))
    monkeypatch.setattr(platform_module, "SETTLE_GRACE", timedelta(0))
    asyncio.run(world.platform.recheck_outcomes())  # the scheduler's job, every org
    assert world.platform.runs.get(world.alice, run_id).settled
    assert [o.run_id for o in outcomes_of(world)] == [run_id]


def test_a_cancelled_run_is_settled_at_once_unless_it_wrote_something(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    world.save_agent(agent_yaml())
    queued = world.platform.runs.create(world.alice, "helper")
    cancelled = world.platform.runs.cancel(world.alice, queued.id)
    assert cancelled.status == "cancelled" and cancelled.settled
    assert cancelled.outcomes_settled_at == cancelled.ended_at

    # A run that waited for an approval after a tool call went through: its writes
    # may have outcomes, which the sweep records (nothing holds the run any more).
    held = world.platform.runs.create(world.alice, "helper")
    with world.platform.db.session() as session:
        run = session.get(Run, held.id)
        assert run is not None
        run.status = "waiting_approval"
        session.add(RunStep(id=f"stp_{held.id}", run_id=held.id, seq=1, kind="tool",
                            name="notes.write", status="ok", request={}, response={}))  # fmt: skip
    waiting = world.platform.runs.cancel(world.alice, held.id)
    assert waiting.status == "cancelled" and not waiting.settled
    assert settle_later(world) == [held.id]
    assert world.platform.runs.get(world.alice, held.id).settled


def test_the_sweep_takes_only_ended_unsettled_runs_of_the_org_asked(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world = run_with(scripted, make_world, call("mail.send", to="bob", subject="report"))
    run_id = world.start_run("helper")
    asyncio.run(die_after_the_end(world, run_id))
    live = world.platform.runs.create(world.alice, "helper").id  # queued: not ended
    runs = world.platform.runs
    late = utcnow() + SETTLE_GRACE + timedelta(seconds=1)
    assert runs.unsettled(ended_before=late) == [run_id]
    assert runs.unsettled(ended_before=late, org_id=world.alice.org_id) == [run_id]
    assert runs.unsettled(ended_before=late, org_id="org_elsewhere") == []
    assert runs.unsettled(ended_before=utcnow() - timedelta(seconds=5)) == []
    with world.platform.db.session() as session:
        assert session.scalar(select(Run.outcomes_settled_at).where(Run.id == live)) is None
    other = asyncio.run(world.platform.settle_outcomes("org_elsewhere", now=late))
    assert other == [] and not runs.get(world.alice, run_id).settled


def test_a_recording_that_lost_a_race_leaves_settling_to_the_winner(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    world = run_with(scripted, make_world, call("mail.send", to="bob", subject="report"))

    async def beaten(run_id: str, read: ToolReader) -> None:
        # Another recorder (the sweep, for a very slow executor) stored the outcome
        # first: this one's insert of the same outcome breaks the unique constraint.
        await world.platform.outcomes.record_run(run_id, read)
        raise IntegrityError("INSERT INTO outcomes", {}, Exception("UNIQUE constraint failed"))

    run_id = world.start_run("helper")
    asyncio.run(execute_with(world, run_id, beaten))
    run = world.platform.runs.get(world.alice, run_id)
    assert run.status == "succeeded" and not run.settled and run.outcomes_error is None
    assert settle_later(world) == [run_id]  # the sweep settles it, recording nothing twice
    assert world.platform.runs.get(world.alice, run_id).settled
    assert [o.run_id for o in outcomes_of(world)] == [run_id]
