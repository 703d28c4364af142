"""Webhooks over the real API: signed deliveries start runs; forged or replayed ones are
refused with 401 and leave an audit record."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from meshclaw.api.app import create_app
from meshclaw.store.models import AuditEvent, Run
from meshclaw.triggers.secrets import LocalSecretStore
from meshclaw.triggers.webhook import sign
from tests.conftest import World, agent_yaml

SECRET = b"s3cret-webhook-key"
HOOK_AGENT = agent_yaml(name="hooked").replace(
    "budget:", "triggers:\n  - {type: webhook, secret_ref: deploy-hook}\nbudget:"
)


class Recorder:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def dispatch(self, run_id: str) -> None:
        self.sent.append(run_id)


@pytest.fixture
def world(make_world: Callable[..., World], tmp_path: Path) -> World:
    world = make_world()
    secrets = world.platform.settings.home / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    (secrets / "deploy-hook").write_bytes(SECRET + b"\n")
    return world


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def client(world: World, recorder: Recorder) -> Iterator[TestClient]:
    with TestClient(create_app(world.platform, recorder)) as client:
        yield client


def headers(
    body: bytes, *, secret: bytes = SECRET, ts: int | None = None, nonce: str = ""
) -> dict[str, str]:
    stamp = str(int(time.time()) if ts is None else ts)
    nonce = nonce or uuid.uuid4().hex
    return {
        "X-MeshClaw-Timestamp": stamp,
        "X-MeshClaw-Nonce": nonce,
        "X-MeshClaw-Signature": sign(secret, stamp, nonce, body),
        "Content-Type": "application/json",
    }


def refusals(world: World) -> list[str]:
    with world.platform.db.session() as session:
        rows = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.action == "webhook.refused")
            .order_by(AuditEvent.seq)
        ).all()
        return [str(r.details.get("reason")) for r in rows]


def test_a_signed_delivery_starts_a_webhook_run(
    world: World, client: TestClient, recorder: Recorder
) -> None:
    agent_id = world.save_agent(HOOK_AGENT)
    body = b'{"ref": "deploy 42"}'
    response = client.post(f"/v1/hooks/{agent_id}", content=body, headers=headers(body))
    assert response.status_code == 202, response.text
    run = response.json()
    assert (run["trigger"], run["status"], run["input"]) == ("webhook", "queued", body.decode())
    assert recorder.sent == [run["id"]]
    with world.platform.db.session() as session:
        stored = session.get(Run, run["id"])
        assert stored is not None and stored.user_id == world.alice.user_id


def test_a_delivery_with_a_json_escaped_nul_starts_its_run_and_a_raw_nul_is_a_400(
    world: World, client: TestClient, recorder: Recorder
) -> None:
    """Deliveries are kept as delivered (JSON text, where ``\\u0000`` is six characters,
    harmless on either engine): the sender is not refused for them. A raw NUL byte is
    refused at the door on both engines (``api/nul.py``)."""
    agent_id = world.save_agent(HOOK_AGENT)
    body = b'{"ref": "deploy \\u0000 42"}'
    response = client.post(f"/v1/hooks/{agent_id}", content=body, headers=headers(body))
    assert response.status_code == 202, response.text
    assert response.json()["input"] == body.decode()
    raw = b'{"ref": "deploy \x00 42"}'
    refused = client.post(f"/v1/hooks/{agent_id}", content=raw, headers=headers(raw))
    assert refused.status_code == 400 and "NUL" in refused.json()["detail"]
    assert len(recorder.sent) == 1


def test_forged_stale_and_replayed_deliveries_are_refused_and_audited(
    world: World, client: TestClient, recorder: Recorder
) -> None:
    agent_id = world.save_agent(HOOK_AGENT)
    url = f"/v1/hooks/{agent_id}"
    body = b'{"ref": "deploy 43"}'

    forged = client.post(url, content=body, headers=headers(body, secret=b"guessed"))
    assert forged.status_code == 401
    assert forged.headers["www-authenticate"].startswith("MeshClaw-HMAC-SHA256")
    assert forged.headers["content-type"] == "application/problem+json"
    tampered = headers(body)
    assert client.post(url, content=b'{"ref": "rm -rf"}', headers=tampered).status_code == 401
    stale = client.post(url, content=body, headers=headers(body, ts=int(time.time()) - 3600))
    assert stale.status_code == 401
    unsigned = client.post(url, content=body)
    assert unsigned.status_code == 401

    delivery = headers(body)
    assert client.post(url, content=body, headers=delivery).status_code == 202
    replayed = client.post(url, content=body, headers=delivery)
    assert replayed.status_code == 401 and "replayed" in replayed.json()["detail"]

    no_hook = world.save_agent(agent_yaml(name="plain"))
    assert (
        client.post(f"/v1/hooks/{no_hook}", content=body, headers=headers(body)).status_code == 401
    )
    assert client.post("/v1/hooks/agt_nope", content=body, headers=headers(body)).status_code == 401

    assert refusals(world) == [
        "bad signature",
        "bad signature",
        "the timestamp is outside the accepted window",
        "missing timestamp, nonce or signature header",
        "replayed nonce",
        "the agent has no webhook trigger",
        "the agent has no webhook trigger",
    ]
    assert len(recorder.sent) == 1  # only the one good delivery started a run


def test_a_delivery_whose_run_could_not_start_can_be_retried(
    world: World, client: TestClient, recorder: Recorder
) -> None:
    """The nonce is spent only when the run is created: a delivery refused because the run
    could not start (here an org policy forbids runs) is taken again when retried."""
    agent_id = world.save_agent(HOOK_AGENT)
    url = f"/v1/hooks/{agent_id}"
    body = b'{"ref": "deploy 44"}'
    delivery = headers(body)
    freeze = '@id("org.freeze")\nforbid (principal, action == Action::"run.start", resource);\n'
    world.platform.org_policies.save(world.admin, freeze, note="change freeze")
    refused = client.post(url, content=body, headers=delivery)
    assert refused.status_code == 403, refused.text
    assert recorder.sent == []

    world.platform.org_policies.save(world.admin, "", note="freeze over")
    retried = client.post(url, content=body, headers=delivery)
    assert retried.status_code == 202, retried.text
    assert recorder.sent == [retried.json()["id"]]
    again = client.post(url, content=body, headers=delivery)
    assert again.status_code == 401 and "replayed" in again.json()["detail"]


def test_secret_references_resolve_from_env_files_and_names(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "named").write_text("from-name\n")
    (tmp_path / "plain.txt").write_text("from-file")
    store = LocalSecretStore(tmp_path, environ={"HOOK_KEY": "from-env"})
    assert store.get("env:HOOK_KEY") == b"from-env"
    assert store.get(f"file:{tmp_path / 'plain.txt'}") == b"from-file"
    assert store.get("named") == b"from-name"
    assert store.get("env:MISSING") is None
    assert store.get("../plain.txt") is None
    assert store.get("nope") is None


def test_ready_reports_the_store(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok"}}
