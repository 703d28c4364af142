"""``meshclaw runs list`` and ``GET /v1/runs`` refuse a status no run can have, naming the
ones it can, instead of answering with an empty list; ``meshclaw run`` runs its run
itself, even beside a serving platform's worker."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meshclaw.api.app import create_app
from meshclaw.runtime.service import STATUSES, RunInfo, RunService
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


def test_a_run_started_by_the_cli_is_never_queued_for_a_server_worker_to_take(
    seeded: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The README's tour runs the CLI beside `make run`, whose worker claims queued runs
    # from the same store. Created queued, the CLI's run could be taken while the CLI
    # started its model server: no steps to follow, "picked up by a server worker".
    taken: list[str] = []
    create = RunService.create

    def create_then_a_worker_polls(self: RunService, *args: Any, **kwargs: Any) -> RunInfo:
        info = create(self, *args, **kwargs)
        taken.extend(run_id for run_id in self.queued() if self.claim(run_id))
        return info

    monkeypatch.setattr(RunService, "create", create_then_a_worker_polls)
    embedded_model = {"MESHCLAW_EMBEDDED_MODEL_SERVER": "true"}
    result = seeded(
        "run", "daily-notes", "--input", "note the time", "-f", "--json", env_extra=embedded_model
    )
    assert result.exit_code == 0, result.output
    assert taken == []
    lines = result.stdout.splitlines()
    assert [json.loads(line)["seq"] for line in lines[:5]] == [1, 2, 3, 4, 5]
    assert json.loads("\n".join(lines[5:]))["status"] == "succeeded"
