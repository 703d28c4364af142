"""``meshclaw runs list`` and ``GET /v1/runs`` refuse a status no run can have, naming the
ones it can, instead of answering with an empty list."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from meshclaw.api.app import create_app
from meshclaw.runtime.service import STATUSES
from tests.cli.test_agent_cli import Invoke, flat, home, meshclaw, ok_json, seeded
from tests.conftest import World

__all__ = ["home", "meshclaw", "seeded"]  # fixtures used by the tests below


def test_runs_list_refuses_an_unknown_status(seeded: Invoke) -> None:
    weird = seeded("runs", "list", "--status", "weird")
    assert weird.exit_code == 2
    message = flat(weird.stderr)
    assert "unknown run status 'weird'" in message and all(s in message for s in STATUSES)
    assert ok_json(seeded("runs", "list", "--status", "succeeded", "--json")) is not None


def test_the_api_answers_400_for_an_unknown_status(make_world: Callable[..., World]) -> None:
    world = make_world()
    token = world.platform.accounts.issue_token(world.alice.user_id, "t")
    with TestClient(create_app(world.platform)) as client:
        auth = {"Authorization": f"Bearer {token}"}
        bad = client.get("/v1/runs", params={"status": "weird"}, headers=auth)
        assert bad.status_code == 400 and "unknown run status" in bad.json()["detail"]
        assert client.get("/v1/runs", params={"status": "queued"}, headers=auth).json() == []
