"""``/v1/connectors`` in-process against a real store and the fixture MCP server."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from meshclaw.api.app import create_app
from tests.conftest import World
from tests.connectors.conftest import FIXTURE_SERVER


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    return make_world()


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.platform)) as client:
        yield client


def bearer(world: World, who: str) -> dict[str, str]:
    caller = getattr(world, who)
    token = world.platform.accounts.issue_token(caller.user_id, "test")
    return {"Authorization": f"Bearer {token}"}


def test_connector_routes_need_a_token(client: TestClient) -> None:
    for method, path in [
        ("GET", "/v1/connectors"),
        ("POST", "/v1/connectors"),
        ("DELETE", "/v1/connectors/x"),
        ("GET", "/v1/connectors/x/tools"),
        ("POST", "/v1/connectors/x/approve"),
        ("POST", "/v1/connectors/x/test"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 401, path
        assert response.headers["content-type"] == "application/problem+json"


def test_add_list_tools_approve_and_test_over_http(client: TestClient, world: World) -> None:
    admin, alice = bearer(world, "admin"), bearer(world, "alice")
    body = {"name": "fx", "config": {"command": sys.executable, "args": [str(FIXTURE_SERVER)]}}
    assert client.post("/v1/connectors", json=body, headers=alice).status_code == 403
    created = client.post("/v1/connectors", json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["source"] == "store"
    duplicate = client.post("/v1/connectors", json=body, headers=admin)
    assert duplicate.status_code == 409

    invalid = client.post("/v1/connectors", json={"name": "x", "config": {}}, headers=admin)
    assert invalid.status_code == 422
    assert any("command" in e["message"] for e in invalid.json()["errors"])

    tools = client.get("/v1/connectors/fx/tools", headers=alice)
    assert tools.status_code == 200, tools.text
    echo = next(t for t in tools.json() if t["tool"] == "echo")
    assert echo["status"] == "pending" and echo["definition"]["description"]

    approve = {"tools": ["echo"], "expected_hash": echo["definition_hash"]}
    assert client.post("/v1/connectors/fx/approve", json=approve, headers=alice).status_code == 403
    approved = client.post("/v1/connectors/fx/approve", json=approve, headers=admin)
    assert approved.status_code == 200, approved.text
    assert approved.json()[0]["status"] == "approved"

    probe = client.post("/v1/connectors/fx/test", headers=alice).json()
    assert probe["ok"] and probe["approved"] == 1 and probe["error"] is None
    listed = client.get("/v1/connectors", headers=alice).json()
    assert listed[0]["tools"]["approved"] == 1

    assert client.get("/v1/connectors/nope/tools", headers=alice).status_code == 404
    assert client.delete("/v1/connectors/fx", headers=admin).status_code == 204
    assert client.get("/v1/connectors", headers=alice).json() == []
