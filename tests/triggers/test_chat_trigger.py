"""Chat triggers against MeshClaw's Slack Web API fake: polled messages and signed Events
API deliveries each start one run per message; forged deliveries are refused and audited."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from meshclaw.api.app import create_app
from meshclaw.config import TriggerSettings
from meshclaw.connectors.fakes.slack import SlackFake, SlackWorkspace
from meshclaw.errors import SpecError
from meshclaw.spec.loader import parse_spec
from meshclaw.store.models import AuditEvent, Run
from meshclaw.triggers.inbound import InboundPoller
from meshclaw.triggers.models import InboundDelivery, InboundWatermark
from meshclaw.triggers.slack_events import sign
from tests.conftest import World, agent_yaml
from tests.triggers.storedown import runs_refused
from tests.triggers.test_matrix_trigger import add_matrix_chat
from tests.triggers.together import tick_together

TOKEN, BOT, SIGNING_SECRET = "xoxb-meshclaw-bot", "UBOT0001", "8f742231b10e8888abcd99yyyzzz85a5"
T0 = datetime(2026, 11, 27, 9, 0, 20, tzinfo=UTC)


def chat_agent(name: str = "helpdesk", *, mention: bool = False, grant: bool = True) -> str:
    tools = (("chat.read_thread", "read"),) if grant else (("clock.now", "read"),)
    trigger = f"  - {{type: chat, channel: '#help', mention: {str(mention).lower()}}}\n"
    return agent_yaml(name=name, tools=tools).replace("budget:", f"triggers:\n{trigger}budget:")


def save_unchecked(world: World, yaml_text: str) -> None:
    """Store a version as one stored before validation checked triggers against grants
    (validation refuses it now: tests/spec/test_trigger_grants.py)."""
    with pytest.raises(SpecError):
        parse_spec(yaml_text)
    world.platform.agents.save(world.alice, parse_spec(yaml_text, cross_checks=False))


@pytest.fixture
def slack() -> Iterator[SlackFake]:
    workspace = SlackWorkspace(channels=("general", "help"))
    workspace.add_token(TOKEN, BOT)
    with SlackFake(workspace) as fake:
        yield fake


@pytest.fixture
def world(make_world: Callable[..., World], slack: SlackFake) -> World:
    return chat_world(make_world(), slack)


def chat_world(world: World, slack: SlackFake) -> World:
    """``world`` with the org's chat connector on the Slack fake, and its credential."""
    world.platform.connector_admin.add(
        world.admin,
        "chat",
        {
            "command": sys.executable,
            "args": ["-m", "meshclaw.connectors.servers", "chat"],
            "env": {"MESHCLAW_CHAT_BASE_URL": slack.base_url},
            "credentials": "chat",
            "credential_env": {"MESHCLAW_CHAT_TOKEN": "token"},
        },
    )
    world.platform.vault.put(
        "chat", {"token": TOKEN, "signing_secret": SIGNING_SECRET}, org_id=world.alice.org_id
    )
    return world


def channel_id(slack: SlackFake) -> str:
    channel = slack.workspace.channel("help")
    assert channel is not None
    return channel.id


def say(slack: SlackFake, text: str, user: str = "UALICE01") -> str:
    channel = slack.workspace.channel("help")
    assert channel is not None
    return slack.workspace.post(channel, user, text).ts


def chat_runs(world: World) -> list[Run]:
    with world.platform.db.session() as session:
        return list(session.scalars(select(Run).where(Run.trigger == "chat")).all())


def audited(world: World, action: str) -> list[AuditEvent]:
    with world.platform.db.session() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)).all())


def poller(
    world: World, owner: str = "scheduler-a", *, clock: list[datetime] | None = None
) -> InboundPoller:
    if clock is None:
        return InboundPoller(world.platform, dispatch=None, owner=owner)
    return InboundPoller(world.platform, dispatch=None, owner=owner, clock=lambda: clock[0])


def watching(world: World, slack: SlackFake) -> tuple[World, InboundPoller, list[datetime]]:
    """The chat agent saved, a poller on a settable clock (at ``T0``), and its first tick
    done (which only notes where the channel stands)."""
    world = chat_world(world, slack)
    world.save_agent(chat_agent())
    now = [T0]
    p = poller(world, clock=now)
    assert p.tick() == []
    return world, p, now


def deliveries(world: World) -> dict[str, tuple[str, str | None]]:
    """Each message's delivery row: its status and its run."""
    with world.platform.db.session() as session:
        rows = session.scalars(select(InboundDelivery)).all()
    return {row.message_key: (row.status, row.run_id) for row in rows}


def pending_attempts(world: World, message_key: str) -> int:
    with world.platform.db.session() as session:
        row = session.scalar(
            select(InboundDelivery).where(InboundDelivery.message_key == message_key)
        )
    assert row is not None and row.status == "pending"
    return row.attempts


def test_a_message_in_the_channel_starts_one_run_with_the_message(
    world: World, slack: SlackFake
) -> None:
    agent_id = world.save_agent(chat_agent())
    say(slack, "an old question")
    p = poller(world)
    assert p.tick() == []  # the first poll only notes where the channel stands

    ts = say(slack, "How do I rotate my VPN certificate?")
    say(slack, "On it!", user=BOT)  # the bot's own messages never trigger it
    (run_id,) = p.tick()
    assert p.tick() == [] and poller(world, "scheduler-b").tick() == []
    (run,) = chat_runs(world)
    assert (run.id, run.agent_id, run.user_id) == (run_id, agent_id, world.alice.user_id)
    data = json.loads(run.input)
    assert data["text"] == "How do I rotate my VPN certificate?"
    assert (data["channel"], data["ts"], data["user"]) == ("#help", ts, "UALICE01")
    (fired,) = audited(world, "trigger.fired")
    assert fired.details["run_id"] == run_id and fired.details["trigger"] == "chat"


def test_a_message_holding_nul_starts_its_run_with_the_text_as_sent(
    world: World, slack: SlackFake
) -> None:
    # PostgreSQL keeps NUL in no text column; the message is kept as the JSON it came in.
    world.save_agent(chat_agent())
    p = poller(world)
    assert p.tick() == []
    say(slack, "paste:\x00\x00end")
    (run_id,) = p.tick()
    (run,) = chat_runs(world)
    assert run.id == run_id and json.loads(run.input)["text"] == "paste:\x00\x00end"


def test_messages_whose_runs_could_not_be_created_are_kept_and_started_when_due(
    database_url: str, make_world: Callable[..., World], slack: SlackFake
) -> None:
    world, p, now = watching(make_world(database_url=database_url), slack)
    first, second = say(slack, "first"), say(slack, "second")
    with runs_refused(world.platform.db):
        assert p.tick() == []
    assert chat_runs(world) == [] and audited(world, "trigger.refused") == []
    deferred = [e.details for e in audited(world, "trigger.deferred")]  # once per message
    assert [d["message"] for d in deferred] == [
        f"{channel_id(slack)}/{ts}" for ts in (first, second)
    ]
    assert deferred[0]["reason"].startswith("its run could not be created (")  # error type
    assert deferred[0]["reason"].endswith("; retried until 2026-11-28T09:00:20+00:00")
    with world.platform.db.session() as session:
        (mark,) = session.scalars(select(InboundWatermark)).all()
    assert mark.error is None and mark.position == second  # kept as rows: the mark moves on

    assert p.tick() == []  # the store is back, but the retries are not due yet
    now[0] = T0 + timedelta(minutes=1)
    assert len(p.tick()) == 2  # both messages, in order, once each
    now[0] = T0 + timedelta(hours=2)
    assert p.tick() == [] and poller(world, "scheduler-b", clock=now).tick() == []
    runs = sorted(chat_runs(world), key=lambda r: json.loads(r.input)["ts"])
    assert [json.loads(r.input)["text"] for r in runs] == ["first", "second"]
    fired = [e.details for e in audited(world, "trigger.fired")]
    assert [f["attempts"] for f in fired] == [2, 2]
    assert deliveries(world) == {
        f"{channel_id(slack)}/{ts}": ("started", run.id)
        for ts, run in zip((first, second), runs, strict=True)
    }


def test_a_message_whose_run_keeps_failing_does_not_hold_back_the_next_one(
    database_url: str, make_world: Callable[..., World], slack: SlackFake
) -> None:
    world, p, now = watching(make_world(database_url=database_url), slack)
    poison = say(slack, "poison pill")
    say(slack, "a fine question")
    with runs_refused(world.platform.db, input_containing="poison"):
        (run_id,) = p.tick()  # the next message gets its run on the same poll
        (run,) = chat_runs(world)
        assert run.id == run_id and json.loads(run.input)["text"] == "a fine question"
        say(slack, "another fine one")
        assert len(p.tick()) == 1  # later messages keep going; the failed one is not due
        now[0] = T0 + timedelta(minutes=1)
        assert p.tick() == []  # retried (due after a minute) and failed again
    key = f"{channel_id(slack)}/{poison}"
    assert pending_attempts(world, key) == 2
    now[0] = T0 + timedelta(minutes=2)
    assert p.tick() == []  # back-off: the third try is due two minutes after the second
    now[0] = T0 + timedelta(minutes=3)
    (retried,) = p.tick()  # the store is back for it too
    assert json.loads(world.platform.runs.get(world.alice, retried).input)["text"] == "poison pill"
    assert p.tick() == [] and len(chat_runs(world)) == 3
    assert deliveries(world)[key] == ("started", retried)


def test_a_message_whose_run_cannot_be_created_for_a_day_is_given_up_and_audited(
    database_url: str, make_world: Callable[..., World], slack: SlackFake
) -> None:
    world, p, now = watching(make_world(database_url=database_url), slack)
    poison = say(slack, "poison pill")
    key = f"{channel_id(slack)}/{poison}"
    with runs_refused(world.platform.db, input_containing="poison"):
        assert p.tick() == []
        for minutes in (1, 3, 7, 15):  # each try due twice as long after the one before
            now[0] = T0 + timedelta(minutes=minutes)
            assert p.tick() == []
        assert pending_attempts(world, key) == 5
        now[0] = T0 + timedelta(hours=24)  # the deadline: the last try fails, it is given up
        assert p.tick() == []
    (abandoned,) = audited(world, "trigger.abandoned")
    assert abandoned.details["message"] == key and abandoned.details["attempts"] == 6
    assert abandoned.details["reason"].startswith("gave up after 6 attempts in 24 h: its run")
    assert abandoned.outcome == "error" and abandoned.actor_agent_id is not None
    assert deliveries(world)[key] == ("abandoned", None)
    with world.platform.db.session() as session:
        row = session.scalar(select(InboundDelivery).where(InboundDelivery.message_key == key))
    assert row is not None and row.run_input is None and row.next_attempt_at is None
    now[0] = T0 + timedelta(hours=30)
    assert p.tick() == [] and chat_runs(world) == []  # given up: never started later


def test_retries_off_give_a_message_up_at_its_first_failure(world: World, slack: SlackFake) -> None:
    world.platform.settings.triggers = TriggerSettings(retry_hours=0)
    world.save_agent(chat_agent())
    p = poller(world)
    assert p.tick() == []
    say(slack, "poison pill")
    with runs_refused(world.platform.db, input_containing="poison"):
        assert p.tick() == []
    (abandoned,) = audited(world, "trigger.abandoned")
    assert abandoned.details["reason"].endswith("not retried (triggers.retry_hours is 0)")
    assert audited(world, "trigger.deferred") == []
    assert list(deliveries(world).values()) == [("abandoned", None)]


def test_a_pending_message_whose_trigger_is_gone_is_given_up_after_its_deadline(
    world: World, slack: SlackFake
) -> None:
    world.save_agent(chat_agent())
    now = [T0]
    p = poller(world, clock=now)
    assert p.tick() == []
    say(slack, "poison pill")
    with runs_refused(world.platform.db, input_containing="poison"):
        assert p.tick() == []
    world.save_agent(chat_agent().replace("channel: '#help'", "channel: '#general'"))
    now[0] = T0 + timedelta(hours=24)
    assert p.tick() == [] and audited(world, "trigger.abandoned") == []  # an hour's grace
    now[0] = T0 + timedelta(hours=25, minutes=1)
    assert p.tick() == [] and chat_runs(world) == []
    (abandoned,) = audited(world, "trigger.abandoned")
    assert abandoned.details["attempts"] == 1
    assert abandoned.details["reason"].endswith("; its trigger no longer polls")
    assert list(deliveries(world).values()) == [("abandoned", None)]


def test_two_schedulers_retrying_the_same_message_start_one_run(
    database_url: str, make_world: Callable[..., World], slack: SlackFake
) -> None:
    world = chat_world(make_world(database_url=database_url), slack)
    world.save_agent(chat_agent())
    now = [T0]
    # Same lease owner: both renew the lease and both retry (a paused leader and its
    # successor); the pending row is claimed in the run's transaction by one of them.
    a, b = poller(world, "scheduler", clock=now), poller(world, "scheduler", clock=now)
    assert a.tick() == []
    say(slack, "retry me")
    with runs_refused(world.platform.db):
        assert a.tick() == []
    now[0] = T0 + timedelta(minutes=1)
    results = tick_together(a, b)
    assert sorted(len(r) for r in results) == [0, 1]
    (run,) = chat_runs(world)
    assert list(deliveries(world).values()) == [("started", run.id)]
    assert len(audited(world, "trigger.fired")) == 1


def test_a_mention_trigger_starts_only_for_messages_that_mention_the_bot(
    world: World, slack: SlackFake
) -> None:
    world.save_agent(chat_agent(mention=True))
    p = poller(world)
    assert p.tick() == []
    say(slack, "just chatting")
    say(slack, f"<@{BOT}> please reset my password")
    assert len(p.tick()) == 1
    (run,) = chat_runs(world)
    assert json.loads(run.input)["text"] == f"<@{BOT}> please reset my password"


def test_a_chat_trigger_without_a_read_grant_is_refused(world: World, slack: SlackFake) -> None:
    save_unchecked(world, chat_agent(grant=False))
    p = poller(world)
    say(slack, "hello?")
    assert p.tick() == [] and p.tick() == []
    (refused,) = audited(world, "trigger.refused")
    assert refused.details["reason"] == (
        "triggers[0].connector: the agent may not read connector 'chat'; grant "
        "'chat.read_channel' or 'chat.read_thread' or 'chat.*' in tools"
    )


def test_a_slack_event_for_a_matrix_connector_is_refused_with_the_reason(
    make_world: Callable[..., World],
) -> None:
    # A Matrix connector's triggers poll their room (tests/triggers/test_matrix_trigger.py);
    # Slack's Events API does not reach them, even signed with the vault's secret.
    world = make_world()
    add_matrix_chat(world, "http://127.0.0.1:9", {"token": TOKEN, "signing_secret": SIGNING_SECRET})
    world.save_agent(chat_agent())
    payload = {
        "type": "event_callback",
        "event": {"type": "message", "channel": "help", "user": "UALICE01", "text": "hi",
                  "ts": "1764230400.000100"},
    }  # fmt: skip
    with TestClient(create_app(world.platform)) as client:
        answer = deliver(client, world, payload)
    assert answer.status_code == 200 and answer.json()["runs"] == []
    (refused,) = audited(world, "trigger.refused")
    assert refused.details["reason"] == (
        "connector 'chat' is a matrix chat server; "
        "Slack events start triggers on Slack connectors only"
    )
    assert chat_runs(world) == []


def test_a_chat_trigger_whose_read_grant_leaves_out_its_channel_is_refused(
    world: World, slack: SlackFake
) -> None:
    elsewhere = chat_agent().replace(
        "{name: chat.read_thread, scope: read}",
        '{name: chat.read_thread, scope: read, targets: ["chat:#deploys"]}',
    )
    save_unchecked(world, elsewhere)
    p = poller(world)
    say(slack, "hello?")
    assert p.tick() == [] and p.tick() == []
    (refused,) = audited(world, "trigger.refused")
    assert refused.details["reason"] == (
        "triggers[0].channel: channel '#help' is outside the targets of the agent's read "
        "grant on connector 'chat' (tools[0] 'chat.read_thread': 'chat:#deploys'); add "
        "'chat:#help' to its targets"
    )
    assert chat_runs(world) == []


def test_creating_an_agent_over_the_api_checks_its_trigger_against_its_grants(
    world: World,
) -> None:
    token = world.platform.accounts.issue_token(world.alice.user_id, "test")
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(world.platform)) as client:
        refused = client.post(
            "/v1/agents", json={"spec_yaml": chat_agent(grant=False)}, headers=headers
        )
        assert refused.status_code == 422
        (issue,) = refused.json()["errors"]
        assert issue["path"] == "triggers[0].connector"
        assert issue["line"] == 8  # the trigger's item in the YAML sent
        assert "the agent may not read connector 'chat'" in issue["message"]
        created = client.post("/v1/agents", json={"spec_yaml": chat_agent()}, headers=headers)
        assert created.status_code == 201


# -- the Events API ---------------------------------------------------------------------


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.platform)) as client:
        yield client


def deliver(
    client: TestClient,
    world: World,
    payload: dict[str, Any],
    *,
    secret: str = SIGNING_SECRET,
    ts: int | None = None,
    connector: str = "chat",
) -> Any:
    body = json.dumps(payload).encode()
    stamp = str(int(time.time()) if ts is None else ts)
    headers = {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": sign(secret.encode(), stamp, body),
        "Content-Type": "application/json",
    }
    return client.post(
        f"/v1/hooks/chat/{world.alice.org_id}/{connector}", content=body, headers=headers
    )


def event(slack: SlackFake, ts: str, text: str, user: str = "UALICE01") -> dict[str, Any]:
    channel = slack.workspace.channel("help")
    assert channel is not None
    return {
        "type": "event_callback",
        "team_id": "T00000001",
        "event": {"type": "message", "channel": channel.id, "user": user, "text": text, "ts": ts},
        "authorizations": [{"team_id": "T00000001", "user_id": BOT, "is_bot": True}],
    }


def test_a_signed_slack_event_starts_one_run_even_when_retried_or_also_polled(
    world: World, slack: SlackFake, client: TestClient
) -> None:
    world.save_agent(chat_agent())
    verified = deliver(client, world, {"type": "url_verification", "challenge": "c-123"})
    assert verified.status_code == 200 and verified.json() == {"challenge": "c-123"}
    p = poller(world)
    assert p.tick() == []

    ts = say(slack, "The build is red again")
    first = deliver(client, world, event(slack, ts, "The build is red again"))
    assert first.status_code == 200
    (run_id,) = first.json()["runs"]
    assert deliver(client, world, event(slack, ts, "The build is red again")).json()["runs"] == []
    assert p.tick() == []  # the poll sees the same message: same key, no second run
    (run,) = chat_runs(world)
    assert run.id == run_id and json.loads(run.input)["text"] == "The build is red again"
    bot_says = deliver(client, world, event(slack, say(slack, "ack", BOT), "ack", user=BOT))
    assert bot_says.json()["runs"] == []


def test_forged_or_stale_slack_events_are_refused_and_audited(
    world: World, slack: SlackFake, client: TestClient
) -> None:
    world.save_agent(chat_agent())
    ts = say(slack, "hi")
    forged = deliver(client, world, event(slack, ts, "hi"), secret="not-the-secret")
    assert forged.status_code == 401
    assert forged.json()["detail"] == "chat event refused: bad signature"
    assert forged.headers["WWW-Authenticate"].startswith("Slack-Signature")
    stale = deliver(client, world, event(slack, ts, "hi"), ts=int(time.time()) - 3600)
    assert stale.status_code == 401
    unknown = deliver(client, world, event(slack, ts, "hi"), connector="nope")
    assert unknown.status_code == 401
    unsigned = client.post(f"/v1/hooks/chat/{world.alice.org_id}/chat", json={"type": "x"})
    assert unsigned.status_code == 401
    reasons = [e.details["reason"] for e in audited(world, "chat_event.refused")]
    assert reasons == [
        "bad signature",
        "the timestamp is outside the accepted window",
        "no such chat connector",
        "missing timestamp or signature header",
    ]
    assert chat_runs(world) == []
    assert SIGNING_SECRET not in json.dumps([forged.json(), stale.json(), reasons])
