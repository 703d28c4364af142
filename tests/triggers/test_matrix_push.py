"""Matrix pushes for chat triggers (``triggers.matrix_push``): a real Synapse pushes its
application-service transactions to a MeshClaw server on loopback (through
``synapsepeer.PushRelay``, as its registration's ``url``), and each new message of a
person starts one run, once — however often the transaction comes, and whether a poll
reads the message too. The route's refusals and bad bodies are checked without Synapse."""

from __future__ import annotations

import json
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import select

from meshclaw.api import matrix_events
from meshclaw.api.app import create_app
from meshclaw.platform import Platform
from meshclaw.store.models import AuditEvent
from tests.conftest import World
from tests.connectors.conftest import synapse  # noqa: F401  (the homeserver fixture)
from tests.connectors.synapsepeer import CLIENT, Push, Synapse
from tests.triggers.test_matrix_trigger import (
    add_matrix_chat,
    chat_runs,
    edit,
    matrix_agent,
    matrix_world,
    new_room,
    poller,
    refusals,
)

HS_TOKEN = "hs-5f0c1d2e3a4b"
APP = "/_matrix/app/v1"


def hook(world: World, connector: str = "chat") -> str:
    return f"/v1/hooks/matrix/{world.alice.org_id}/{connector}"


def audited(world: World, action: str) -> list[AuditEvent]:
    with world.platform.db.session() as session:
        query = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
        return list(session.scalars(query).all())


def fired(world: World) -> list[dict[str, Any]]:
    return [dict(e.details) for e in audited(world, "trigger.fired")]


# -- the route, without a homeserver ----------------------------------------------------


def offline_world(make_world: Callable[..., World], hs_token: str | None = HS_TOKEN) -> World:
    """The org's Matrix chat connector on a homeserver that does not answer."""
    world = make_world()
    fields = {"token": "syt_bot"} | ({"hs_token": hs_token} if hs_token else {})
    add_matrix_chat(world, "http://127.0.0.1:9", fields)
    return world


@pytest.fixture
def offline(make_world: Callable[..., World]) -> Iterator[tuple[World, TestClient]]:
    world = offline_world(make_world)
    with TestClient(create_app(world.platform)) as client:
        yield world, client


def bearer(token: str = HS_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def message(room: str = "!room:meshclaw.test", body: str = "hello") -> dict[str, Any]:
    return {
        "type": "m.room.message", "room_id": room, "sender": "@carol:meshclaw.test",
        "event_id": f"${secrets.token_hex(8)}", "content": {"msgtype": "m.text", "body": body},
    }  # fmt: skip


def test_a_request_without_the_homeservers_token_is_refused_and_audited(
    offline: tuple[World, TestClient],
) -> None:
    world, client = offline
    world.platform.connector_admin.add(
        world.admin, "slack", {"command": sys.executable, "env": {"MESHCLAW_CHAT_KIND": "slack"}}
    )
    body = {"events": [message()]}
    path = f"{hook(world)}{APP}/transactions/1"
    missing = client.put(path, json=body)
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["detail"] == (
        "matrix transaction refused: missing the homeserver's token "
        "(Authorization: Bearer <hs_token>)"
    )
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="matrix-appservice"'
    # The legacy query parameter is not taken: it would put the token in access logs.
    legacy = client.put(path, json=body, params={"access_token": HS_TOKEN})
    assert legacy.status_code == 401
    wrong = client.put(path, json=body, headers=bearer("hs-not-the-one"))
    assert wrong.status_code == 401
    assert wrong.json()["detail"].endswith("the token is not the connector's hs_token")
    for connector in ("nope", "slack"):  # none, or a Slack one: not a Matrix chat connector
        other = client.put(f"{hook(world, connector)}{APP}/transactions/1", json=body,
                           headers=bearer())  # fmt: skip
        assert other.status_code == 401
    for method, rest in (("GET", "/users/%40x%3Ameshclaw.test"), ("GET", "/rooms/%23x"),
                         ("POST", "/ping")):  # fmt: skip
        assert client.request(method, f"{hook(world)}{APP}{rest}").status_code == 401

    refused = audited(world, "chat_event.refused")
    assert [e.details["reason"] for e in refused] == [
        "missing the homeserver's token (Authorization: Bearer <hs_token>)",
        "missing the homeserver's token (Authorization: Bearer <hs_token>)",
        "the token is not the connector's hs_token",
        "no such Matrix chat connector",
        "no such Matrix chat connector",
    ] + ["missing the homeserver's token (Authorization: Bearer <hs_token>)"] * 3
    assert {e.details["via"] for e in refused} == {"appservice"}
    assert refused[0].org_id == world.alice.org_id and refused[3].org_id is None
    assert refused[0].resource == "connector:chat" and refused[0].outcome == "denied"
    assert chat_runs(world) == []
    assert HS_TOKEN not in json.dumps([e.details for e in refused]) + wrong.text


def test_a_connector_whose_credential_has_no_hs_token_accepts_nothing(
    make_world: Callable[..., World],
) -> None:
    world = offline_world(make_world, hs_token=None)
    with TestClient(create_app(world.platform)) as client:
        answer = client.put(f"{hook(world)}{APP}/transactions/1", json={"events": []},
                            headers=bearer())  # fmt: skip
    assert answer.status_code == 401
    assert answer.json()["detail"].endswith("the connector's credential has no hs_token")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "the body is not JSON"),
        (b"[]", "the body is not a JSON object"),
        (b"{}", "the transaction has no 'events' list"),
        (b'{"events": {"0": 1}}', "the transaction has no 'events' list"),
    ],
)
def test_a_body_that_is_no_transaction_is_a_400_with_the_reason(
    offline: tuple[World, TestClient], body: bytes, reason: str
) -> None:
    world, client = offline
    answer = client.put(f"{hook(world)}{APP}/transactions/1", content=body,
                        headers=bearer() | {"Content-Type": "application/json"})  # fmt: skip
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["detail"] == reason


def test_a_transaction_too_large_is_a_400_read_no_further(
    offline: tuple[World, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    world, client = offline
    monkeypatch.setattr(matrix_events, "MAX_BODY", 1024)
    answer = client.put(f"{hook(world)}{APP}/transactions/1",
                        json={"events": [message(body="x" * 2000)]}, headers=bearer())  # fmt: skip
    assert answer.status_code == 400
    assert "larger than" in answer.json()["detail"]


def test_events_that_are_not_messages_start_nothing_and_odd_ones_no_traceback(
    offline: tuple[World, TestClient],
) -> None:
    world, client = offline
    world.save_agent(matrix_agent("help"))
    odd = [
        1, "x", {"type": "m.room.message", "content": "body"},
        {"type": "m.room.member", "room_id": "!r:meshclaw.test", "event_id": "$m",
         "content": {"membership": "join"}},
        {"type": "m.room.message", "event_id": "$no-room", "content": {"body": "hi"}},
    ]  # fmt: skip
    answer = client.put(f"{hook(world)}{APP}/transactions/2", json={"events": odd},
                        headers=bearer())  # fmt: skip
    assert (answer.status_code, answer.json()) == (200, {"runs": []})
    assert refusals(world) == []  # nothing to act on: the homeserver was not even asked


def test_an_unreachable_homeserver_marks_the_trigger_refused_and_the_transaction_is_taken(
    offline: tuple[World, TestClient],
) -> None:
    world, client = offline
    world.save_agent(matrix_agent("help"))
    answer = client.put(f"{hook(world)}{APP}/transactions/3", json={"events": [message()]},
                        headers=bearer())  # fmt: skip
    # 200: a failing answer would hold up the homeserver's later transactions; the poll
    # reads the message once the homeserver answers again.
    assert (answer.status_code, answer.json()) == (200, {"runs": []})
    (reason,) = refusals(world)
    assert reason.startswith("connector 'chat': cannot reach the homeserver at http://127.0.0.1:9")


def test_the_user_and_room_queries_say_not_here_and_a_ping_is_answered(
    offline: tuple[World, TestClient],
) -> None:
    world, client = offline
    user = client.get(f"{hook(world)}{APP}/users/%40x%3Ameshclaw.test", headers=bearer())
    assert user.status_code == 404
    assert user.json()["detail"] == "no Matrix user '@x:meshclaw.test' is made on demand here"
    room = client.get(f"{hook(world)}{APP}/rooms/%23ops%3Ameshclaw.test", headers=bearer())
    assert room.status_code == 404
    ping = client.post(f"{hook(world)}{APP}/ping", json={"transaction_id": "t"},
                       headers=bearer())  # fmt: skip
    assert (ping.status_code, ping.json()) == (200, {})


# -- pushed by the real Synapse ---------------------------------------------------------


@contextmanager
def serving(platform: Platform) -> Iterator[str]:
    """MeshClaw's API on a free loopback port (uvicorn in a thread), for Synapse to reach."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(platform), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)  # waiting for the server thread; bounded by the deadline
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def push_world(world: World, synapse: Synapse, **env: str) -> World:  # noqa: F811
    """``matrix_world`` with the registration's ``hs_token`` in the connector's credential."""
    matrix_world(world, synapse, **env)
    credential(world, synapse, synapse.push_hs_token)
    return world


def credential(world: World, synapse: Synapse, hs_token: str) -> None:  # noqa: F811
    fields = {"token": synapse.tokens["bot"], "hs_token": hs_token}
    world.platform.vault.put("chat", fields, org_id=world.alice.org_id)


@contextmanager
def pushed_to(world: World, synapse: Synapse) -> Iterator[None]:  # noqa: F811
    with serving(world.platform) as base, synapse.relay.forwarding(base + hook(world)):
        yield


def answered(synapse: Synapse, event_id: str, status: int = 200) -> Push:  # noqa: F811
    """The transaction that carried ``event_id`` and was answered ``status``."""
    return synapse.relay.wait_for(lambda p: event_id in p.events() and p.status == status)


def notice(synapse: Synapse, login: str, room: str, text: str) -> str:  # noqa: F811
    path = f"{CLIENT}/rooms/{quote(room)}/send/m.room.message/{secrets.token_hex(8)}"
    content = {"msgtype": "m.notice", "body": text}
    return str(synapse.call(login, "PUT", path, json=content)["event_id"])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_message_synapse_pushes_starts_one_run_once_also_when_polled(
    database_url: str,
    make_world: Callable[..., World],
    synapse: Synapse,  # noqa: F811
) -> None:
    world = push_world(make_world(database_url=database_url), synapse)
    name, room = new_room(synapse)
    agent_id = world.save_agent(matrix_agent(name))
    p = poller(world)
    assert p.tick() == []  # the poll notes where the room stands
    with pushed_to(world, synapse):
        asked = synapse.send("carol", room, "Is the VPN down?")
        skipped = [
            synapse.send("bot", room, "Looking."),  # the bot's own message
            synapse.send("carol", room, "for everyone?", thread=asked),  # a thread reply
            edit(synapse, "carol", room, asked, "Is the VPN down for you?"),
            notice(synapse, "carol", room, "an automated notice"),
        ]
        pushes = [answered(synapse, e) for e in [asked, *skipped]]
    started = [run for push in pushes for run in push.answer["runs"]]
    (run,) = chat_runs(world)
    assert started == [run.id] and (run.agent_id, run.user_id) == (agent_id, world.alice.user_id)
    data = json.loads(run.input)
    assert (data["text"], data["ts"], data["channel_id"], data["user"]) == (
        "Is the VPN down?", asked, room, synapse.user_id("carol"),
    )  # fmt: skip
    (record,) = fired(world)
    assert record["via"] == "appservice" and record["message"] == f"{room}/{asked}"
    assert p.tick() == []  # the poll reads the same message: same key, no second run
    assert len(chat_runs(world)) == 1 and refusals(world) == []


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_transaction_synapse_sends_again_starts_nothing_new(
    database_url: str,
    make_world: Callable[..., World],
    synapse: Synapse,  # noqa: F811
) -> None:
    world = push_world(make_world(database_url=database_url), synapse)
    name, room = new_room(synapse)
    world.save_agent(matrix_agent(name))
    with pushed_to(world, synapse):
        synapse.relay.lose = 1  # MeshClaw takes it, but Synapse hears 502: it sends it again
        asked = synapse.send("carol", room, "Can someone restart the runner?")
        again = answered(synapse, asked)
    first = answered(synapse, asked, status=502)
    assert first.path == again.path and first.path.startswith(f"{APP}/transactions/")
    (run,) = chat_runs(world)
    assert first.answer == {"runs": [run.id]} and again.answer == {"runs": []}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_push_with_the_wrong_token_is_refused_audited_and_taken_once_fixed(
    make_world: Callable[..., World],
    synapse: Synapse,  # noqa: F811
) -> None:
    world = push_world(make_world(), synapse)
    credential(world, synapse, "hs-stale")
    name, room = new_room(synapse)
    world.save_agent(matrix_agent(name))
    with pushed_to(world, synapse):
        asked = synapse.send("carol", room, "Who owns the billing service?")
        refused = answered(synapse, asked, status=401)
        assert chat_runs(world) == []
        (record,) = audited(world, "chat_event.refused")
        assert record.details["reason"] == "the token is not the connector's hs_token"
        assert record.org_id == world.alice.org_id
        credential(world, synapse, synapse.push_hs_token)  # the operator fixes it
        taken = answered(synapse, asked)  # Synapse retries the transaction (2 s back-off)
    assert taken.path == refused.path
    (run,) = chat_runs(world)
    assert taken.answer == {"runs": [run.id]}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pushed_messages_follow_the_mention_rule_and_outside_senders_stay_untrusted(
    make_world: Callable[..., World],
    synapse: Synapse,  # noqa: F811
) -> None:
    # Only elsewhere.example is the org's: carol (of meshclaw.test) is outside it.
    world = push_world(make_world(), synapse, org_servers="elsewhere.example")
    name, room = new_room(synapse)
    world.save_agent(matrix_agent(name, mention=True))
    bot = synapse.user_id("bot")
    path = f"{CLIENT}/rooms/{quote(room)}/send/m.room.message/{secrets.token_hex(8)}"
    with pushed_to(world, synapse):
        chatting = synapse.send("carol", room, "just chatting")
        pill = {"msgtype": "m.text", "body": "can you look?", "m.mentions": {"user_ids": [bot]}}
        mentioned = str(synapse.call("carol", "PUT", path, json=pill)["event_id"])
        for event_id in (chatting, mentioned):
            answered(synapse, event_id)
    (run,) = chat_runs(world)
    data = json.loads(run.input)
    assert data["ts"] == mentioned and "text" not in data
    assert (
        data["note"] == f"read the message with chat.read_thread (channel {room}, ts {mentioned})"
    )
    assert fired(world)[0]["outside_org"] is True


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_synapse_reaches_meshclaw_with_the_registration(
    make_world: Callable[..., World],
    synapse: Synapse,  # noqa: F811
) -> None:
    """The check an operator runs after registering: Synapse pings the application service."""
    world = push_world(make_world(), synapse)
    with pushed_to(world, synapse):
        pinged = httpx.post(
            f"{synapse.url}/_matrix/client/v1/appservice/meshclaw/ping",
            headers={"Authorization": f"Bearer {synapse.push_as_token}"},
            json={"transaction_id": "setup-check"},
            timeout=30,
        )
    assert pinged.status_code == 200, pinged.text
    assert "duration_ms" in pinged.json()
    ping = synapse.relay.wait_for(lambda p: p.path == f"{APP}/ping")
    assert ping.status == 200 and ping.body == {"transaction_id": "setup-check"}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_pushed_event_id_too_long_to_keep_refuses_the_trigger_as_a_poll_would(
    make_world: Callable[..., World],
    synapse: Synapse,  # noqa: F811
) -> None:
    world = push_world(make_world(), synapse)
    name, room = new_room(synapse)
    world.save_agent(matrix_agent(name))
    event = message(room, "hi") | {"event_id": "$" + "x" * 80, "sender": synapse.user_id("carol")}
    with TestClient(create_app(world.platform)) as client:
        answer = client.put(f"{hook(world)}{APP}/transactions/long", json={"events": [event]},
                            headers=bearer(synapse.push_hs_token))  # fmt: skip
    assert (answer.status_code, answer.json()) == (200, {"runs": []})
    assert chat_runs(world) == []
    (reason,) = refusals(world)
    assert "is too long to keep" in reason
