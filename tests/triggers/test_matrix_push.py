"""Matrix pushes for chat triggers (``triggers.matrix_push``): a real Synapse pushes its
application-service transactions to a MeshClaw server on loopback (through
``synapsepeer.PushRelay``, as its registration's ``url``), and each new message of a
person starts one run, once — however often the transaction comes, and whether a poll
reads the message too. A transaction processed before is answered from its row without a
walk; one that failed half-way is processed again. The route's refusals and bad bodies,
and the pruning of old transaction rows, are checked without Synapse."""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
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
from meshclaw.triggers import matrix_push
from meshclaw.triggers.matrix_push import MatrixPushReceiver, prune_transactions
from meshclaw.triggers.models import MatrixTransaction
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
    profile_name,
    refusals,
    room_name,
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


def transactions(world: World) -> list[MatrixTransaction]:
    with world.platform.db.session() as session:
        query = select(MatrixTransaction).order_by(MatrixTransaction.received_at)
        return list(session.scalars(query).all())


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


def test_old_transaction_rows_are_pruned_and_their_ids_then_processed_again(
    database_url: str, make_world: Callable[..., World]
) -> None:
    world = offline_world(lambda: make_world(database_url=database_url))
    org = world.alice.org_id
    start = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    now = [start]
    receiver = MatrixPushReceiver(world.platform, clock=lambda: now[0])
    old, kept, long = "41", "42", "t" * 300  # a homeserver may choose ids of any length
    long_key = "sha256:" + hashlib.sha256(long.encode()).hexdigest()
    bodies = {
        t: json.dumps({"events": [message(), {"type": "m.typing", "content": {}}]}).encode()
        for t in (old, kept, long)
    }

    def push(txn: str, connector: str = "chat") -> list[str]:
        return receiver.transaction(org, connector, txn, bodies[txn])

    def rows() -> dict[tuple[str, str], MatrixTransaction]:
        return {(r.connector, r.txn_id): r for r in transactions(world)}

    assert push(old) == []  # no trigger wants it, but it was processed to its end
    now[0] = start + timedelta(hours=71)
    assert push(kept) == [] and push(long) == [] and push(long) == []
    assert push(kept, connector="other") == []  # ids are per registration: another row
    nothing = b'{"events": [{"type": "m.typing", "content": {}}]}'
    assert receiver.transaction(org, "chat", "43", nothing) == []  # no message: no row
    assert {k: (r.events, r.runs, r.resends) for k, r in rows().items()} == {
        ("chat", old): (2, 0, 0), ("chat", kept): (2, 0, 0), ("chat", long_key): (2, 0, 1),
        ("other", kept): (2, 0, 0),
    }  # fmt: skip

    # The default retention is 72 hours: the first is a minute past it, the others not.
    assert prune_transactions(world.platform, start + timedelta(hours=72, minutes=1)) == 1
    assert set(rows()) == {("chat", kept), ("chat", long_key), ("other", kept)}
    now[0] = start + timedelta(hours=72, minutes=2)
    assert push(old) == []  # forgotten: processed again (a new row), not counted as a resend
    again = rows()[("chat", old)]
    assert (again.received_at, again.resends) == (now[0], 0)
    assert prune_transactions(world.platform, now[0]) == 0


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
    (row,) = [r for r in transactions(world) if r.txn_id == first.path.rsplit("/", 1)[1]]
    assert (row.connector, row.runs, row.resends) == ("chat", 1, 1)  # answered from its row
    assert row.events == len(first.body["events"])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_transaction_processed_before_is_answered_from_its_row_without_a_walk(
    database_url: str,
    make_world: Callable[..., World],
    synapse: Synapse,  # noqa: F811
) -> None:
    world = push_world(make_world(database_url=database_url), synapse)
    name, room = new_room(synapse)
    world.save_agent(matrix_agent(name))
    with pushed_to(world, synapse):
        asked = synapse.send("carol", room, "Is the wiki down?")
        first = answered(synapse, asked)
    (run,) = chat_runs(world)
    assert first.answer == {"runs": [run.id]}
    txn = first.path.rsplit("/", 1)[1]
    # The bot's token is revoked: a walk of the transaction would now ask the homeserver,
    # be refused, and mark the trigger refused.
    credential_fields = {"token": "syt_revoked", "hs_token": synapse.push_hs_token}
    world.platform.vault.put("chat", credential_fields, org_id=world.alice.org_id)
    path, headers = hook(world) + first.path, bearer(synapse.push_hs_token)
    with TestClient(create_app(world.platform)) as client:
        resent = client.put(path, json=first.body, headers=headers)  # as the homeserver would
        assert (resent.status_code, resent.json()) == (200, {"runs": []})
        assert refusals(world) == []  # not walked
        (row,) = [r for r in transactions(world) if r.txn_id == txn]
        assert (row.runs, row.resends) == (1, 1)
        # The same id with another message is no resend (a homeserver restored from a
        # backup counts again): it is walked, and refused now.
        other = message(room, "and the tracker?") | {"sender": synapse.user_id("carol")}
        reused = client.put(path, json={"events": [other]}, headers=headers)
        assert (reused.status_code, reused.json()) == (200, {"runs": []})
    (reason,) = refusals(world)
    assert reason.endswith("refused the access token")
    (row,) = [r for r in transactions(world) if r.txn_id == txn]
    assert (row.runs, row.resends, row.events) == (0, 0, 1)  # the row is the new one's
    assert len(chat_runs(world)) == 1


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_transaction_that_failed_half_way_is_processed_when_synapse_sends_it_again(
    database_url: str,
    make_world: Callable[..., World],
    synapse: Synapse,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = push_world(make_world(database_url=database_url), synapse)
    name, room = new_room(synapse)
    agents = {
        world.save_agent(matrix_agent(name)),
        world.save_agent(matrix_agent(name).replace("name: helper", "name: helper-two")),
    }
    real = matrix_push.start_matrix
    calls: list[str] = []

    async def failing_once(inbound: Any, watcher: Any, *args: Any, **kwargs: Any) -> str | None:
        calls.append(watcher.agent_id)
        if len(calls) == 2:  # the first try's second trigger: the store fails there
            raise RuntimeError("the store went away")
        return await real(inbound, watcher, *args, **kwargs)

    monkeypatch.setattr(matrix_push, "start_matrix", failing_once)
    with pushed_to(world, synapse):
        asked = synapse.send("carol", room, "Who is on call tonight?")
        retried = answered(synapse, asked)  # Synapse retries after its back-off (2 s)
    failed = answered(synapse, asked, status=500)
    assert failed.path == retried.path
    done, failed_at = calls[:2]
    assert {done, failed_at} == agents and sorted(calls[2:]) == sorted(agents)  # walked again
    runs = {r.agent_id: r.id for r in chat_runs(world)}
    assert set(runs) == agents  # one run each: the first try's is not started twice
    assert retried.answer == {"runs": [runs[failed_at]]}
    (row,) = [r for r in transactions(world) if r.txn_id == failed.path.rsplit("/", 1)[1]]
    assert (row.runs, row.resends) == (1, 0)  # recorded once, by the try that got through


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
def test_a_pushed_mention_by_the_bots_name_in_the_room_starts_a_run(
    make_world: Callable[..., World],
    synapse: Synapse,  # noqa: F811
) -> None:
    world = push_world(make_world(), synapse)
    name, room = new_room(synapse)
    world.save_agent(matrix_agent(name, mention=True))
    profile_name(synapse, "Helpdesk Bot", room)
    room_name(synapse, room, "Ops Helper")
    with pushed_to(world, synapse):
        by_profile_name = synapse.send("carol", room, "helpdesk bot, anyone there?")
        by_room_name = synapse.send("carol", room, "Ops Helper: the build is red")
        pushes = [answered(synapse, e) for e in (by_profile_name, by_room_name)]
    (run,) = chat_runs(world)
    assert json.loads(run.input)["ts"] == by_room_name
    one_each = {push.path: push for push in pushes}.values()  # both may come in one
    assert [run.id] == [r for push in one_each for r in push.answer["runs"]]


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
