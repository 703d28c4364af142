"""The REST API in-process: auth on every route, problem details, agents and runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meshclaw.api.app import create_app
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.workers.inprocess import InProcessWorker
from tests.conftest import World, agent_yaml


@pytest.fixture
def world(
    scripted: Callable[[dict[str, Any]], ScriptedServer], make_world: Callable[..., World]
) -> World:
    server = scripted({"turns": [{"reply": {"content": "hello from the model"}}]})
    return make_world(server.base_url)


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    worker = InProcessWorker(world.platform, concurrency=2, poll_seconds=0.05)
    worker.start()
    with TestClient(create_app(world.platform, worker)) as client:
        yield client
    worker.stop()


def auth(world: World, who: str = "alice") -> dict[str, str]:
    caller = getattr(world, who)
    return {
        "Authorization": f"Bearer {world.platform.accounts.issue_token(caller.user_id, 'test')}"
    }


def test_health_is_open_and_everything_else_needs_a_token(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    for method, path in [
        ("GET", "/v1/agents"),
        ("POST", "/v1/agents"),
        ("GET", "/v1/agents/x"),
        ("POST", "/v1/runs"),
        ("GET", "/v1/runs"),
        ("GET", "/v1/runs/x"),
        ("POST", "/v1/runs/x/cancel"),
        ("GET", "/v1/usage"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 401, path
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"] == 'Bearer realm="meshclaw"', path
    bad = client.get("/v1/agents", headers={"Authorization": "Bearer mc_nope"})
    assert bad.status_code == 401 and "invalid or revoked" in bad.json()["detail"]


def test_openapi_lists_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/agents", "/v1/runs", "/v1/runs/{run_id}", "/v1/usage"} <= set(paths)


def test_bad_spec_gets_422_with_field_paths_and_lines_and_stores_nothing(
    client: TestClient, world: World
) -> None:
    headers = auth(world)
    spec = agent_yaml().replace("scope: write", "scope: delete")
    response = client.post("/v1/agents", json={"spec_yaml": spec}, headers=headers)
    assert response.status_code == 422
    problem = response.json()
    assert problem["title"] == "Invalid agent spec"
    assert problem["errors"] == [
        {"path": "tools[1].scope", "line": 7, "message": "Input should be 'read' or 'write'"}
    ]
    assert client.get("/v1/agents", headers=headers).json() == []
    both = client.post("/v1/agents", json={"spec_yaml": spec, "spec": {}}, headers=headers)
    assert both.status_code == 422 and "exactly one" in str(both.json()["errors"])


def test_create_agent_then_run_it_through_the_worker(client: TestClient, world: World) -> None:
    headers = auth(world)
    created = client.post("/v1/agents", json={"spec_yaml": agent_yaml()}, headers=headers)
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1 and created.json()["changed"] is True
    again = client.post("/v1/agents", json={"spec_yaml": agent_yaml()}, headers=headers)
    assert again.json()["changed"] is False

    started = client.post("/v1/runs", json={"agent": "helper", "input": "hi"}, headers=headers)
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]
    run = wait_finished(client, run_id, headers)
    assert run["status"] == "succeeded", run
    assert run["output"] == "hello from the model"
    assert run["trigger"] == "api"
    assert [s["kind"] for s in run["steps"]] == ["model"]
    usage = client.get("/v1/usage", params={"group_by": "agent"}, headers=headers).json()
    assert usage["rows"][0]["key"] == "helper"
    assert usage["rows"][0]["input_tokens"] == run["input_tokens"]


def test_runs_are_private_to_their_owner(client: TestClient, world: World) -> None:
    alice, bob = auth(world), auth(world, "bob")
    client.post("/v1/agents", json={"spec_yaml": agent_yaml()}, headers=alice)
    run_id = client.post("/v1/runs", json={"agent": "helper"}, headers=alice).json()["id"]
    assert client.get(f"/v1/runs/{run_id}", headers=bob).status_code == 404
    assert client.post(f"/v1/runs/{run_id}/cancel", headers=bob).status_code == 404
    forbidden = client.post("/v1/runs", json={"agent": "helper"}, headers=bob)
    assert forbidden.status_code == 403
    assert client.get(f"/v1/runs/{run_id}", headers=auth(world, "admin")).status_code == 200


def test_bad_requests_get_problem_details(client: TestClient, world: World) -> None:
    headers = auth(world)
    missing = client.post("/v1/runs", json={}, headers=headers)
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["path"] == "body.agent"
    unknown = client.post("/v1/runs", json={"agent": "ghost"}, headers=headers)
    assert unknown.status_code == 404 and "ghost" in unknown.json()["detail"]
    assert client.get("/v1/usage?group_by=planet", headers=headers).status_code == 422
    assert client.get("/v1/nope", headers=headers).status_code == 404


def wait_finished(client: TestClient, run_id: str, headers: dict[str, str]) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        run: dict[str, Any] = client.get(f"/v1/runs/{run_id}", headers=headers).json()
        if run["status"] in ("succeeded", "failed", "cancelled"):
            return run
        time.sleep(0.02)
    raise AssertionError(f"run {run_id} did not finish")


def test_agent_list_pages_by_name_after_the_policy(client: TestClient, world: World) -> None:
    alice = auth(world)
    for name in ("delta", "alpha", "echo", "bravo", "charlie"):
        created = client.post("/v1/agents", json={"spec_yaml": agent_yaml(name)}, headers=alice)
        assert created.status_code == 201, created.text
    pages = [
        [a["name"] for a in client.get(f"/v1/agents?limit=2&offset={o}", headers=alice).json()]
        for o in (0, 2, 4, 6)
    ]
    assert pages == [["alpha", "bravo"], ["charlie", "delta"], ["echo"], []]
    assert client.get("/v1/agents?limit=0", headers=alice).status_code == 422
    assert client.get("/v1/agents?offset=-1", headers=alice).status_code == 422
