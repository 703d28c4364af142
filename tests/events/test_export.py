"""The store's history written as event format v1 reads back cleanly and matches the store."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import jsonschema
from sqlalchemy import func, select

import meshclaw
from meshclaw.clock import utcnow
from meshclaw.events import EventReader, Feedback, LlmCall, Outcome, Run, ToolCall, load_frame
from meshclaw.events.export import export_org, prompt_of, target_of
from meshclaw.outcomes.models import Outcome as OutcomeRow
from meshclaw.outcomes.models import OutcomeFeedback
from meshclaw.store.models import Run as RunRow
from meshclaw.store.models import RunStep, UsageRecord
from tests.conftest import World
from tests.outcomes.test_outcomes import CONNECTORS, Start, call, run_with

SCHEMA = Path(meshclaw.__file__).parent / "data" / "event-format-v1.schema.json"


def _world(
    scripted: Start, make_world: Callable[..., World], database_url: str | None = None
) -> tuple[World, str, str]:
    """Two ended runs (one mailed bob, who accepted; one failed), one run still queued."""

    def factory(model_url: str) -> World:
        return make_world(model_url, database_url)

    world = run_with(scripted, factory, call("mail.send", to="bob", subject="report"))
    first = world.run("helper", "mail the weekly report to bob", connectors=CONNECTORS)
    assert first.status == "succeeded"
    (outcome,) = world.platform.outcomes.list_outcomes(world.alice)
    world.platform.outcomes.feedback(world.bob, outcome.id, "accepted")
    failed = world.start_run("helper", "this one crashed")
    with world.platform.db.session() as session:
        row = session.get(RunRow, failed)
        assert row is not None
        row.status, row.ended_at = "failed", utcnow()
    world.platform.runs.create(world.alice, "helper", "still queued")  # not ended: left out
    return world, first.id, outcome.id


def test_the_export_reads_back_without_errors_and_matches_the_store(
    scripted: Start, make_world: Callable[..., World], tmp_path: Path, database_url: str
) -> None:
    world, first_run, outcome_id = _world(scripted, make_world, database_url)
    org = world.alice.org_id
    path = tmp_path / "events.jsonl"
    weights = world.platform.outcomes.weights(org)
    summary = export_org(world.platform.db, org, path, weights=weights, batch=1)

    reader = EventReader(path, retain_texts=True)
    events = list(reader)
    assert reader.report.problems == [] and reader.report.skipped == 0
    frame, report = load_frame(path)
    assert report.skipped == 0 and frame.height == len(events) == summary.total
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    for line in path.read_text().splitlines():
        assert list(validator.iter_errors(json.loads(line))) == []

    by_kind = Counter(type(e).__name__ for e in events)
    with world.platform.db.session() as session:
        model_steps = session.scalar(
            select(func.count()).select_from(UsageRecord).where(UsageRecord.kind == "model")
        )
        tool_steps = session.scalars(select(RunStep).where(RunStep.kind == "tool")).all()
        n_outcomes = session.scalar(select(func.count()).select_from(OutcomeRow))
        n_feedback = session.scalar(select(func.count()).select_from(OutcomeFeedback))
    assert by_kind == {
        "Run": 2, "LlmCall": model_steps, "ToolCall": len(tool_steps), "Outcome": n_outcomes,
        "Feedback": n_feedback,
    }  # fmt: skip
    assert summary.counts == {
        "run": 2, "llm_call": model_steps, "tool_call": len(tool_steps), "outcome": 1,
        "feedback": 1,
    }  # fmt: skip

    runs = {e.id: e for e in events if isinstance(e, Run)}
    run = runs[first_run]
    assert (run.status, run.trigger, run.task) == ("ok", "manual", "mail the weekly report to bob")
    assert (run.user, run.team) == (world.alice.user_id, world.alice.team_id)
    assert sorted(r.status for r in runs.values()) == ["error", "ok"]
    (tool,) = [e for e in events if isinstance(e, ToolCall)]
    (step,) = tool_steps
    assert (tool.id, tool.tool, tool.action, tool.status) == (step.id, "mail.send", "write", "ok")
    assert tool.target == target_of("mail.send", step.request["arguments"])
    assert tool.recipients == [world.bob.user_id]
    (outcome,) = [e for e in events if isinstance(e, Outcome)]
    assert (outcome.id, outcome.type, outcome.tool_call) == (outcome_id, "mail_sent", step.id)
    assert outcome.beneficiary == world.bob.user_id and outcome.verified
    assert outcome.value == weights["mail_sent"]
    (feedback,) = [e for e in events if isinstance(e, Feedback)]
    assert (feedback.outcome, feedback.by, feedback.verdict) == (
        outcome_id, world.bob.user_id, "accepted",
    )  # fmt: skip
    assert feedback.user == world.alice.user_id  # the outcome owner's
    calls = [e for e in events if isinstance(e, LlmCall)]
    assert all(c.provider and c.model == "test-model" and c.input_tokens > 0 for c in calls)
    assert {c.run for c in calls} | {tool.run, outcome.run} <= runs.keys()
    # The first call's prompt is what the person wrote (instructions, then the task); the
    # second call only added the tool's result, which is not exported.
    assert [c.prompt for c in calls] == ["You help. mail the weekly report to bob", None]


def test_a_prompt_is_the_system_and_user_text_a_call_added_with_whitespace_collapsed() -> None:
    first = {"new_messages": [
        {"role": "system", "content": "You triage\n  the queue.\n"},
        {"role": "user", "content": "\tlabel OPS-12 "},
    ]}  # fmt: skip
    later = {"new_messages": [{"role": "tool", "content": "ok", "tool_call_id": "c1"}]}

    assert prompt_of(first) == "You triage the queue. label OPS-12"
    assert prompt_of(later) is None
    assert prompt_of({"model": "m"}) is None and prompt_of(None) is None
    assert prompt_of({"new_messages": [{"role": "user", "content": "  "}]}) is None


def test_the_window_keeps_only_runs_created_in_it(
    scripted: Start, make_world: Callable[..., World], tmp_path: Path
) -> None:
    world, _, _ = _world(scripted, make_world)
    org = world.alice.org_id
    later = tmp_path / "later.jsonl"
    assert (
        export_org(world.platform.db, org, later, since=utcnow() + timedelta(minutes=1)).total == 0
    )
    assert later.read_bytes() == b""
    earlier = export_org(world.platform.db, org, tmp_path / "e.jsonl", until=utcnow())
    assert earlier.counts["run"] == 2
    everyone: dict[str, set[str]] = {}
    for line in (tmp_path / "e.jsonl").read_text().splitlines():
        event = json.loads(line)
        everyone.setdefault(event["user"], set()).add(event["team"])
    assert everyone == {world.alice.user_id: {world.alice.team_id}}  # feedback: the owner's
