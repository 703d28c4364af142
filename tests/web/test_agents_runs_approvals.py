"""Dashboard pages for agents, runs and approvals, and the run event stream, end to end.

A real platform on a temp SQLite store, the embedded worker, the scripted model server
on loopback, and the real FastAPI app through its TestClient, signed in like a browser
(session cookie from ``POST /ui/login``, CSRF token from the pages' forms).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from markupsafe import escape
from typer.testing import CliRunner

from meshclaw.api.app import create_app
from meshclaw.api.streams import RunFollower
from meshclaw.cli.main import app as cli_app
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.web._pages import money
from meshclaw.workers.inprocess import InProcessWorker
from tests.conftest import World, agent_yaml
from tests.policy.test_approvals import SPEC as MAILER_SPEC
from tests.policy.test_approvals import Mail, send

Start = Callable[[dict[str, Any]], ScriptedServer]
PASSWORD = "a long test password"
CLOCK_TURNS = {
    "turns": [
        {"reply": {"tool_calls": [{"name": "clock.now", "arguments": {"tz": "UTC"}}]}},
        {"reply": {"content": "It is time for the stand-up."}},
    ]
}


class Site:
    """The app with a running worker; ``browser(handle)`` is a signed-in TestClient."""

    def __init__(self, world: World, stack: ExitStack) -> None:
        self.world = world
        self.platform = world.platform
        # The worker builds its gateway (and its connectors) as it starts.
        worker = InProcessWorker(world.platform, concurrency=2, poll_seconds=0.05)
        worker.start()
        stack.callback(worker.stop)
        self.app: FastAPI = create_app(world.platform, worker)
        self._stack = stack
        self._passwords: set[str] = set()

    def browser(self, handle: str, org: str = "") -> TestClient:
        known = {c.handle: c for c in (self.world.alice, self.world.bob, self.world.admin)}
        if handle in known and handle not in self._passwords:
            # argon2 is slow on purpose: set only the passwords of who signs in.
            self.platform.signin.set_password(known[handle].user_id, PASSWORD)
            self._passwords.add(handle)
        client = self._stack.enter_context(TestClient(self.app, follow_redirects=False))
        signed = client.post(
            "/ui/login", data={"handle": handle, "password": PASSWORD, "org": org, "next": "/ui/"}
        )
        assert signed.status_code == 303, signed.text
        return client

    def wait(self, run_id: str, *statuses: str) -> str:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            status = self.platform.runs.get(self.world.alice, run_id).status
            if status in statuses:
                return status
            time.sleep(0.02)
        raise AssertionError(f"run {run_id} never reached {statuses}")


SiteFor = Callable[..., Site]


@pytest.fixture
def site_for(
    make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> Iterator[SiteFor]:
    with ExitStack() as stack:

        def build(
            model_url: str, connectors: Callable[[], ConnectorRegistry] | None = None
        ) -> Site:
            world = make_world(model_url)
            if connectors is not None:
                monkeypatch.setattr(world.platform, "connectors", connectors)
            return Site(world, stack)

        yield build


@pytest.fixture
def site(scripted: Start, site_for: SiteFor) -> Site:
    return site_for(scripted(CLOCK_TURNS).base_url)


def csrf_of(client: TestClient, path: str = "/ui/agents/new") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match is not None
    return match.group(1)


def field_block(page: str, field_id: str) -> str:
    """The ``<div class="field">`` that holds the input ``field_id``."""
    for block in page.split('<div class="field">')[1:]:
        if f'id="{field_id}"' in block:
            return block.split("</div>")[0]
    raise AssertionError(f"no field {field_id} on the page")


def builder_fields(csrf: str, **changes: str) -> dict[str, str]:
    fields = {
        "csrf": csrf,
        "name": "standup",
        "description": "Books the stand-up.",
        "owner": "alice",
        "model-provider": "scripted",
        "model-model": "test-model",
        "instructions": "Book the stand-up.\r\nThen say when it is.",
        "tools-0-name": "clock.now",
        "tools-0-scope": "read",
        "tools-0-targets": "",
        "tools-1-name": "notes.write",
        "tools-1-scope": "write",
        "tools-1-targets": "note:standup/*, note:team/*",
        "tools-2-name": "",
        "budget-max_steps": "5",
        "budget-timeout_seconds": "30",
        "outcomes-0-type": "meeting_scheduled",
        "outcomes-0-description": "A stand-up everyone attends.",
        "outcomes-0-verification": "{durability_hours: 24}",
        "triggers": "- type: manual\r\n",
    }
    return fields | changes


def sse_events(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        event: dict[str, Any] = {}
        for line in block.splitlines():
            key, _, value = line.partition(": ")
            if key in ("event", "id"):
                event[key] = value
            elif key == "data":
                event["data"] = json.loads(value)
        if "event" in event:
            events.append(event)
    return events


def stream(client: TestClient, run_id: str, **kwargs: Any) -> tuple[int, list[dict[str, Any]]]:
    with client.stream("GET", f"/v1/runs/{run_id}/events", **kwargs) as response:
        body = response.read().decode()
        if response.status_code == 200:
            assert response.headers["content-type"].startswith("text/event-stream")
        return response.status_code, sse_events(body) if response.status_code == 200 else []


# -- the agent builder -------------------------------------------------------------------


def test_builder_saves_version_one_then_two_and_shows_the_diff(site: Site) -> None:
    alice = site.browser("alice")
    form = alice.get("/ui/agents/new")
    assert '<label for="tools-0-name">' in form.text and 'name="csrf"' in form.text
    csrf = csrf_of(alice)
    # More rows without JavaScript: the form comes back with what was typed, unsaved.
    more = alice.post("/ui/agents/new", data=builder_fields(csrf, add="rows"))
    assert more.status_code == 200 and 'id="tools-3-name"' in more.text
    assert 'value="note:standup/*, note:team/*"' in more.text
    assert site.platform.agents.list_agents(site.world.alice) == []

    created = alice.post("/ui/agents/new", data=builder_fields(csrf))
    assert created.status_code == 303, created.text
    assert created.headers["location"] == "/ui/agents/standup?saved=new"
    agent = site.platform.agents.get(site.world.alice, "standup")
    assert agent.version == 1
    assert [(t.name, t.scope.value, t.targets) for t in agent.spec.tools] == [
        ("clock.now", "read", ["*"]),
        ("notes.write", "write", ["note:standup/*", "note:team/*"]),
    ]
    assert agent.spec.instructions == "Book the stand-up.\nThen say when it is."
    assert agent.spec.outcomes[0].durability_hours == 24
    assert agent.spec.budget.max_steps == 5

    # The edit form shows the saved spec in its fields; saving a change adds version 2.
    edit = alice.get("/ui/agents/standup/edit")
    assert 'value="note:standup/*, note:team/*"' in edit.text
    assert 'id="name" name="name" type="text" value="standup" required readonly' in edit.text
    changed = builder_fields(csrf, instructions="Book the stand-up at 09:30.")
    changed["budget-max_steps"] = "8"
    updated = alice.post("/ui/agents/standup/edit", data=changed)
    assert updated.status_code == 303, updated.text
    assert updated.headers["location"] == "/ui/agents/standup?saved=new&old=1&new=2"
    assert site.platform.agents.get(site.world.alice, "standup").version == 2

    page = alice.get(updated.headers["location"])
    assert page.status_code == 200
    assert "Saved as a new version." in page.text
    assert "Changes from version 1 to version 2" in page.text
    assert "<del>-  max_steps: 5</del>" in page.text
    assert "<ins>+  max_steps: 8</ins>" in page.text
    assert "<ins>+instructions: Book the stand-up at 09:30.</ins>" in page.text
    # Any two versions can be compared from the page's form.
    back = alice.get("/ui/agents/standup", params={"old": "2", "new": "1"})
    assert "<ins>+  max_steps: 5</ins>" in back.text
    bad = alice.get("/ui/agents/standup", params={"old": "7", "new": "1"})
    assert bad.status_code == 200 and "Choose two versions between 1 and 2." in bad.text

    # The same spec again is not a new version.
    same = alice.post("/ui/agents/standup/edit", data=changed)
    assert same.headers["location"] == "/ui/agents/standup?saved=unchanged"
    assert site.platform.agents.get(site.world.alice, "standup").version == 2
    listed = alice.get("/ui/agents")
    assert '<a href="/ui/agents/standup">standup</a>' in listed.text


def test_a_spec_error_shows_the_cli_message_at_its_field_and_saves_nothing(
    site: Site, tmp_path: Path
) -> None:
    alice = site.browser("alice")
    csrf = csrf_of(alice)
    fields = builder_fields(
        csrf,
        **{
            "name": "Stand Up",
            "tools-1-scope": "delete",
            "budget-max_steps": "many",
            "outcomes-0-verification": "{durability_hours: -1}",
            "triggers": "- type: cron\n  schedule: every morning\n",
        },
    )
    response = alice.post("/ui/agents/new", data=fields)
    assert response.status_code == 422
    assert "Nothing was saved: 5 problems to fix" in response.text
    assert site.platform.agents.list_agents(site.world.alice) == []

    # The same spec as YAML, through `meshclaw agent validate --json`.
    spec = tmp_path / "standup.yaml"
    spec.write_text(
        "name: Stand Up\nowner: alice\nmodel: {provider: scripted, model: test-model}\n"
        "instructions: Book it.\ntools:\n  - {name: clock.now, scope: read}\n"
        "  - {name: notes.write, scope: delete}\nbudget: {max_steps: many}\n"
        "outcomes:\n  - {type: meeting_scheduled, durability_hours: -1}\n"
        "triggers:\n  - {type: cron, schedule: every morning}\n"
    )
    result = CliRunner().invoke(
        cli_app,
        ["agent", "validate", str(spec), "--json"],
        env={"MESHCLAW_HOME": str(tmp_path / "cli"), "MESHCLAW_EMBEDDED_MODEL_SERVER": "false"},
    )
    assert result.exit_code == 2, result.output
    cli = {e["path"]: e["message"] for e in json.loads(result.stdout)["errors"]}
    expected_fields = {
        "name": "name",
        "tools[1].scope": "tools-1-scope",
        "budget.max_steps": "budget-max_steps",
        "outcomes[0].durability_hours": "outcomes-0-verification",
        "triggers[0].schedule": "triggers",
    }
    assert set(cli) == set(expected_fields)
    for path, field_id in expected_fields.items():
        block = field_block(response.text, field_id)
        assert f"Error: {escape(cli[path])}" in block, (path, block)
        assert f'id="{field_id}-error"' in block
        assert 'aria-invalid="true"' in block
        assert re.search(rf'aria-describedby="[^"]*{field_id}-error', block), block
    # What the user typed is still in the form.
    assert 'value="Stand Up"' in field_block(response.text, "name")
    assert 'value="many"' in field_block(response.text, "budget-max_steps")
    assert "every morning" in field_block(response.text, "triggers")
    # A field without a problem is not marked.
    assert "aria-invalid" not in field_block(response.text, "tools-0-scope")

    # A YAML typo in a YAML field and an unknown owner (a check that needs the store).
    typo = builder_fields(csrf, **{"model-parameters": "temperature: [0", "owner": "nobody"})
    response = alice.post("/ui/agents/new", data=typo)
    assert response.status_code == 422
    assert "YAML: " in field_block(response.text, "model-parameters")
    fixed = builder_fields(csrf, owner="nobody")
    response = alice.post("/ui/agents/new", data=fixed)
    assert response.status_code == 422
    assert "no user &#39;nobody&#39; in this org" in field_block(response.text, "owner")
    assert site.platform.agents.list_agents(site.world.alice) == []


# -- test runs, the run view and the event stream -----------------------------------------


def test_a_test_run_completes_and_its_trace_shows_steps_costs_and_decisions(site: Site) -> None:
    site.world.save_agent(agent_yaml("helper"))
    alice = site.browser("alice")
    csrf = csrf_of(alice, "/ui/agents/helper")
    started = alice.post("/ui/agents/helper/runs", data={"csrf": csrf, "input": "When?"})
    assert started.status_code == 303, started.text
    run_path = started.headers["location"]
    run_id = run_path.rsplit("/", 1)[1]
    assert run_path == f"/ui/runs/{run_id}"
    assert site.wait(run_id, "succeeded", "failed", "cancelled") == "succeeded"

    page = alice.get(run_path)
    assert page.status_code == 200
    text = page.text
    assert "It is time for the stand-up." in text  # the final output
    assert "1. Model turn: <code>test-model</code>" in text
    assert "2. Tool call: <code>clock.now</code>" in text
    assert "3. Model turn: <code>test-model</code>" in text
    assert text.count('<span class="badge allow">allow</span>') == 3  # policy decisions
    assert "&#34;tz&#34;: &#34;UTC&#34;" in text  # the tool call's arguments
    steps = site.platform.runs.steps(site.world.alice, run_id)
    for step in steps:
        if step.kind == "model":
            assert step.cost_usd > 0
        assert f"<dt>Cost</dt><dd>{money(step.cost_usd)}</dd>" in text
    run = site.platform.runs.get(site.world.alice, run_id)
    assert f"cost {money(run.cost_usd)}" in text
    assert "data-live-events" not in text  # finished: nothing to follow

    fragment = alice.get(f"{run_path}/trace")
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert "2. Tool call" in fragment.text

    listed = alice.get("/ui/runs", params={"agent": "helper", "status": "succeeded"})
    assert run_id in listed.text
    assert run_id not in alice.get("/ui/runs", params={"status": "failed"}).text
    assert run_id not in alice.get("/ui/runs", params={"page": "2"}).text
    odd = alice.get("/ui/runs", params={"status": "sleeping", "page": "x"})
    assert odd.status_code == 200 and "Unknown status" in odd.text and run_id in odd.text
    assert run_id in alice.get("/ui/agents/helper").text  # the agent's recent runs


def test_the_event_stream_sends_steps_then_end_and_only_to_who_may_read_the_run(
    site: Site,
) -> None:
    site.world.save_agent(agent_yaml("helper"))
    run_id = site.platform.runs.create(site.world.alice, "helper", "When?").id
    site.wait(run_id, "succeeded")
    alice = site.browser("alice")

    status, events = stream(alice, run_id)
    assert status == 200
    assert [e["event"] for e in events] == ["step", "step", "step", "status", "end"]
    assert [e["data"]["seq"] for e in events[:3]] == [1, 2, 3]
    assert [e["data"]["name"] for e in events[:3]] == ["test-model", "clock.now", "test-model"]
    assert all(e["data"]["decision"].startswith("allow") for e in events[:3])
    assert [e["id"] for e in events] == ["1", "2", "3", "3", "3"]
    assert events[-1]["data"]["status"] == "succeeded"
    assert events[-1]["data"]["output"] == "It is time for the stand-up."

    # Resume where a dropped connection stopped: Last-Event-ID, or ?after=.
    _, resumed = stream(alice, run_id, headers={"Last-Event-ID": "2"})
    assert [(e["event"], e["data"].get("seq")) for e in resumed] == [
        ("step", 3),
        ("status", None),
        ("end", None),
    ]
    _, after = stream(alice, run_id, params={"after": 1})
    assert [e["data"]["seq"] for e in after if e["event"] == "step"] == [2, 3]

    # Bob (same org, not his run), nobody signed in: no stream.
    assert stream(site.browser("bob"), run_id)[0] == 404
    with TestClient(site.app) as anonymous:
        assert stream(anonymous, run_id)[0] == 401
    token = site.platform.accounts.issue_token(site.world.admin.user_id, "test")
    admin = stream(alice, run_id, headers={"Authorization": f"Bearer {token}"})
    assert admin[0] == 200 and admin[1][-1]["event"] == "end"


# -- approvals ---------------------------------------------------------------------------


@pytest.fixture
def mail_site(scripted: Start, site_for: SiteFor) -> tuple[Site, Mail]:
    """The mailer reads outside mail, then wants to send: the policy holds the send."""
    server = scripted(
        {
            "turns": [
                {"reply": {"tool_calls": [{"name": "inbox.fetch", "arguments": {}}]}},
                {"reply": {"tool_calls": [send("bob@acme.example")]}},
                {"reply": {"content": "done"}},
            ]
        }
    )
    mail = Mail()
    site = site_for(server.base_url, mail.connectors)
    site.world.save_agent(MAILER_SPEC)
    return site, mail


def test_the_approvals_inbox_approves_a_held_call_and_the_run_resumes(
    mail_site: tuple[Site, Mail], monkeypatch: pytest.MonkeyPatch
) -> None:
    site, mail = mail_site
    alice, bob = site.browser("alice"), site.browser("bob")
    csrf = csrf_of(alice, "/ui/agents/mailer")
    started = alice.post("/ui/agents/mailer/runs", data={"csrf": csrf, "input": "Answer."})
    run_id = started.headers["location"].rsplit("/", 1)[1]
    site.wait(run_id, "waiting_approval")

    run_page = alice.get(f"/ui/runs/{run_id}").text
    assert f'data-live-events="/v1/runs/{run_id}/events"' in run_page
    assert "Cancel this run" in run_page and "waiting approval" in run_page

    inbox = alice.get("/ui/approvals")
    (pending,) = site.platform.approvals.pending(site.world.alice)
    assert "<code>outbox.send</code> wants to run" in inbox.text
    assert "<code>tool.write</code>" in inbox.text
    assert escape(json.dumps(pending.arguments, indent=2, sort_keys=True)) in inbox.text
    assert "approval.write-after-untrusted" in inbox.text
    assert f'href="/ui/runs/{run_id}"' in inbox.text
    assert f'<label for="note-{pending.id}">' in inbox.text

    # Not bob's to decide: he does not see it, and posting the decision finds nothing.
    assert "outbox.send" not in bob.get("/ui/approvals").text
    bob_csrf = csrf_of(bob, "/ui/approvals")
    refused = bob.post(
        f"/ui/approvals/{pending.id}", data={"csrf": bob_csrf, "decision": "approve"}
    )
    assert refused.status_code == 404
    # Without the CSRF token nothing happens either.
    forged = alice.post(f"/ui/approvals/{pending.id}", data={"decision": "approve"})
    assert forged.status_code == 403
    assert site.platform.approvals.get(site.world.alice, pending.id).status == "pending"

    # Someone follows the run's event stream while it waits (TestClient hands over the
    # body when the stream ends, so it is read in a thread).
    polled = threading.Event()
    first_poll = RunFollower.poll

    def poll(follower: RunFollower) -> tuple[list[Any], bool]:
        result = first_poll(follower)
        polled.set()
        return result

    monkeypatch.setattr(RunFollower, "poll", poll)
    live: list[dict[str, Any]] = []
    token = site.platform.accounts.issue_token(site.world.alice.user_id, "test")

    def follow() -> None:
        with TestClient(site.app) as client:
            live.extend(stream(client, run_id, headers={"Authorization": f"Bearer {token}"})[1])

    follower = threading.Thread(target=follow)
    follower.start()
    assert polled.wait(15)

    csrf = csrf_of(alice, "/ui/approvals")
    approved = alice.post(
        f"/ui/approvals/{pending.id}",
        data={"csrf": csrf, "decision": "approve", "note": "Expected reply."},
    )
    assert approved.status_code == 303
    assert approved.headers["location"] == "/ui/approvals?done=approved"
    assert site.wait(run_id, "succeeded", "failed") == "succeeded"
    assert mail.sent == [{"to": "bob@acme.example", "body": "hello"}]
    follower.join(timeout=15)
    assert not follower.is_alive()
    statuses = [e["data"]["status"] for e in live if e["event"] == "status"]
    assert statuses[0] == "waiting_approval" and statuses[-1] == "succeeded"
    held = [e["data"]["status"] for e in live if e["event"] == "step" and e["data"]["seq"] == 4]
    assert held == ["waiting_approval", "ok"]  # sent when held, and again when it went through
    assert live[-1]["event"] == "end" and live[-1]["data"]["output"] == "done"

    after = alice.get(approved.headers["location"]).text
    assert "Approved: the call goes through once" in after
    assert "Nothing is waiting for you." in after
    decided = after.split("Recent decisions")[1]
    assert "outbox.send" in decided and "Expected reply." in decided and ">used<" in decided
    again = alice.post(f"/ui/approvals/{pending.id}", data={"csrf": csrf, "decision": "deny"})
    assert again.status_code == 409 and "already used" in again.text

    _, events = stream(alice, run_id)
    held = [e["data"] for e in events if e["event"] == "step" and e["data"]["seq"] == 4]
    assert [(s["name"], s["status"]) for s in held] == [("outbox.send", "ok")]


def test_a_waiting_run_can_be_cancelled_from_its_page(mail_site: tuple[Site, Mail]) -> None:
    site, mail = mail_site
    alice = site.browser("alice")
    run_id = site.platform.runs.create(site.world.alice, "mailer", "Answer.").id
    site.wait(run_id, "waiting_approval")
    csrf = csrf_of(alice, f"/ui/runs/{run_id}")
    assert alice.post(f"/ui/runs/{run_id}/cancel").status_code == 403  # no CSRF token
    cancelled = alice.post(f"/ui/runs/{run_id}/cancel", data={"csrf": csrf})
    assert cancelled.headers["location"] == f"/ui/runs/{run_id}?note=cancel"
    page = alice.get(cancelled.headers["location"]).text
    assert "Cancellation requested" in page and "Cancel this run" not in page
    assert site.platform.runs.get(site.world.alice, run_id).status == "cancelled"
    assert mail.sent == []
    again = alice.post(f"/ui/runs/{run_id}/cancel", data={"csrf": csrf})
    assert again.headers["location"].endswith("?note=finished")


# -- refusals ----------------------------------------------------------------------------


def test_posts_without_the_csrf_token_are_refused(site: Site) -> None:
    alice = site.browser("alice")
    fields = builder_fields("")
    del fields["csrf"]
    assert alice.post("/ui/agents/new", data=fields).status_code == 403
    wrong = alice.post("/ui/agents/new", data=fields | {"csrf": "forged"})
    assert wrong.status_code == 403 and "CSRF" in wrong.text
    assert site.platform.agents.list_agents(site.world.alice) == []
    site.world.save_agent(agent_yaml("helper"))
    assert alice.post("/ui/agents/helper/runs", data={"input": "x"}).status_code == 403
    assert site.platform.runs.find(site.world.alice) == []


def test_people_of_another_org_or_without_access_cannot_see_the_pages(site: Site) -> None:
    site.world.save_agent(agent_yaml("helper"))
    run_id = site.platform.runs.create(site.world.alice, "helper", "When?").id
    site.wait(run_id, "succeeded")
    accounts = site.platform.accounts
    other = accounts.create_org("globex")
    zed = accounts.create_user(other.id, "zed", role="platform_admin")
    site.platform.signin.set_password(zed.id, PASSWORD)
    outsider = site.browser("zed")
    csrf = csrf_of(outsider)

    for path in (
        "/ui/agents/helper",
        "/ui/agents/helper/edit",
        f"/ui/runs/{run_id}",
        f"/ui/runs/{run_id}/trace",
    ):
        response = outsider.get(path)
        assert response.status_code == 404, path
        assert "text/html" in response.headers["content-type"]
    assert outsider.post("/ui/agents/helper/runs", data={"csrf": csrf}).status_code == 404
    assert outsider.post(f"/ui/runs/{run_id}/cancel", data={"csrf": csrf}).status_code == 404
    assert stream(outsider, run_id)[0] == 404
    assert "helper" not in outsider.get("/ui/agents").text
    assert run_id not in outsider.get("/ui/runs").text

    # Same org, someone else's agent: bob reads nothing of alice's and changes nothing.
    bob = site.browser("bob")
    assert bob.get(f"/ui/runs/{run_id}").status_code == 404
    bob_csrf = csrf_of(bob)
    taken = bob.post("/ui/agents/helper/edit", data=builder_fields(bob_csrf, name="helper"))
    assert taken.status_code in (403, 404)
    assert site.platform.agents.get(site.world.alice, "helper").version == 1

    # Not signed in: the pages send you to the sign-in page.
    with TestClient(site.app, follow_redirects=False) as anonymous:
        response = anonymous.get("/ui/agents")
        assert response.status_code == 303
        assert response.headers["location"] == "/ui/login?next=/ui/agents"
