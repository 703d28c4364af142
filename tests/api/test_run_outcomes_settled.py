"""Clients learn when a run's outcomes are recorded: the API's run, its event stream's
``end``, the dashboard's run page and ``meshclaw runs show`` all say so."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from html import escape

import pytest
from fastapi.testclient import TestClient

from meshclaw.api.app import create_app
from meshclaw.api.schemas import RunOut, StepOut
from meshclaw.api.streams import RunFollower
from meshclaw.cli.runs import _outcomes_line
from meshclaw.clock import utcnow
from meshclaw.runtime.service import SETTLE_GRACE, RunInfo, StepInfo
from tests.accounts.passwords import cheap_hashing
from tests.conftest import World
from tests.outcomes.test_outcomes import CONNECTORS, Start, call, run_with
from tests.runtime.test_outcomes_settled import die_after_the_end

PASSWORD = "a long test password"


@pytest.fixture
def world(scripted: Start, make_world: Callable[..., World]) -> World:
    """alice's agent mails bob a report: one verified ``mail_sent`` outcome per run."""
    return run_with(scripted, make_world, call("mail.send", to="bob", subject="report"))


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.platform), follow_redirects=False) as client:
        yield client


def bearer(world: World) -> dict[str, str]:
    token = world.platform.accounts.issue_token(world.alice.user_id, "test")
    return {"Authorization": f"Bearer {token}"}


def crashed_run(world: World) -> str:
    """A run that ended, whose worker died before recording its outcomes."""
    run_id = world.start_run("helper")
    asyncio.run(die_after_the_end(world, run_id))
    return run_id


def settle(world: World) -> None:
    later = utcnow() + SETTLE_GRACE + timedelta(seconds=1)
    assert asyncio.run(world.platform.settle_outcomes(now=later))


def test_the_api_run_mirrors_the_service_run_field_for_field() -> None:
    # Derived, not copied: a field added to RunInfo is in the API, with its type.
    run_fields = {f.name for f in dataclasses.fields(RunInfo)}
    assert set(RunOut.model_fields) == run_fields | {"steps"}
    assert set(StepOut.model_fields) == {f.name for f in dataclasses.fields(StepInfo)}
    assert {"outcomes_settled_at", "outcomes_error"} <= run_fields


def test_get_run_says_whether_the_outcomes_are_recorded(world: World, client: TestClient) -> None:
    headers = bearer(world)
    done = world.run("helper", connectors=CONNECTORS)
    body = client.get(f"/v1/runs/{done.id}", headers=headers).json()
    assert body["status"] == "succeeded" and body["outcomes_error"] is None
    assert body["outcomes_settled_at"] is not None
    assert body["outcomes_settled_at"] >= body["ended_at"]
    outcomes = client.get("/v1/outcomes", headers=headers).json()
    assert [o["run_id"] for o in outcomes] == [done.id]  # settled: its outcome is there

    left = crashed_run(world)
    body = client.get(f"/v1/runs/{left}", headers=headers).json()
    assert (body["status"], body["outcomes_settled_at"]) == ("succeeded", None)
    listed = {r["id"]: r for r in client.get("/v1/runs", headers=headers).json()}
    assert listed[left]["outcomes_settled_at"] is None
    assert listed[done.id]["outcomes_settled_at"] == body_of(client, done.id, headers)


def body_of(client: TestClient, run_id: str, headers: dict[str, str]) -> str:
    value: str = client.get(f"/v1/runs/{run_id}", headers=headers).json()["outcomes_settled_at"]
    return value


def test_the_event_stream_ends_only_once_the_outcomes_are_recorded(world: World) -> None:
    run_id = crashed_run(world)
    follower = RunFollower(platform=world.platform, caller=world.alice, run_id=run_id)
    events, finished = follower.poll()
    # The finished status is told at once; the stream stays open for the outcomes.
    assert [e.event for e in events if e.event != "step"] == ["status"]
    status = events[-1].data
    assert (status["status"], status["outcomes_settled_at"], finished) == ("succeeded", None, False)
    assert follower.poll() == ([], False)

    settle(world)
    events, finished = follower.poll()
    assert finished and events[-1].event == "end"
    end = events[-1].data
    run = world.platform.runs.get(world.alice, run_id)
    assert run.outcomes_settled_at is not None
    assert end["outcomes_settled_at"] == run.outcomes_settled_at.isoformat()
    assert end["status"] == "succeeded" and end["outcomes_error"] is None
    assert end["output"] == "done"


def test_the_http_stream_of_a_settled_run_ends_with_the_settled_time(
    world: World, client: TestClient
) -> None:
    run = world.run("helper", connectors=CONNECTORS)
    with client.stream("GET", f"/v1/runs/{run.id}/events", headers=bearer(world)) as response:
        text = response.read().decode()
    blocks = [b for b in text.strip().split("\n\n") if "event: " in b]
    assert blocks[-1].startswith("event: end") or "\nevent: end" in blocks[-1]
    data = next(line for line in blocks[-1].splitlines() if line.startswith("data: "))
    end = json.loads(data.removeprefix("data: "))
    assert run.outcomes_settled_at is not None
    assert end["outcomes_settled_at"] == run.outcomes_settled_at.isoformat()


def sign_in(world: World, client: TestClient) -> None:
    world.platform.signin.set_password(world.alice.user_id, PASSWORD)
    signed = client.post("/ui/login", data={"handle": "alice", "password": PASSWORD, "org": "",
                                              "next": "/ui/"})  # fmt: skip
    assert signed.status_code == 303, signed.text


def test_the_run_page_says_recording_then_lists_the_outcomes(
    world: World, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    cheap_hashing(monkeypatch)
    sign_in(world, client)
    run_id = crashed_run(world)
    page = client.get(f"/ui/runs/{run_id}").text
    assert "<h2>Outcomes</h2>" in page and "Outcomes: recording…" in page
    fragment = client.get(f"/ui/runs/{run_id}/trace").text
    assert "Outcomes: recording…" in fragment

    settle(world)
    (outcome,) = world.platform.outcomes.list_outcomes(world.alice)
    fragment = client.get(f"/ui/runs/{run_id}/trace").text
    assert "recording…" not in fragment
    assert f'<a href="/ui/insights/outcomes/{outcome.id}">{escape(outcome.ref)}</a>' in fragment
    assert '<span class="badge unaccepted">unaccepted</span>' in fragment

    quiet = world.platform.runs.create(world.alice, "helper")
    world.platform.runs.cancel(world.alice, quiet.id)  # never ran: settled, nothing
    assert "This run recorded no outcomes." in client.get(f"/ui/runs/{quiet.id}").text


def test_runs_show_says_whether_the_outcomes_are_recorded(world: World) -> None:
    left = world.platform.runs.get(world.alice, crashed_run(world))
    assert _outcomes_line(left).startswith("outcomes: recording…")
    settle(world)
    settled = world.platform.runs.get(world.alice, left.id)
    assert settled.outcomes_settled_at is not None
    when = settled.outcomes_settled_at.isoformat(timespec="seconds")
    assert _outcomes_line(settled) == f"outcomes: recorded {when}"
    failed = dataclasses.replace(settled, outcomes_error="RuntimeError: boom")
    assert _outcomes_line(failed) == (
        f"[red]outcomes: recording failed at {when}: RuntimeError: boom[/red]"
    )
