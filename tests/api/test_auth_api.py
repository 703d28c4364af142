"""Sign-in over HTTP: the session cookie, CSRF on unsafe requests, and your own API tokens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meshclaw.api.app import create_app
from meshclaw.api.deps import CSRF_HEADER, SESSION_COOKIE
from tests.accounts.passwords import cheap_hashing
from tests.conftest import World

PASSWORD = "correct horse battery staple"
PROBLEM = "application/problem+json"


@pytest.fixture
def world(make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch) -> World:
    cheap_hashing(monkeypatch)
    world = make_world()
    for who in (world.alice, world.bob):
        world.platform.signin.set_password(who.user_id, PASSWORD)
    return world


@pytest.fixture
def clients(world: World) -> Iterator[Callable[[], TestClient]]:
    """New clients with their own cookie jars (one browser each), closed after the test."""
    app = create_app(world.platform)
    opened: list[TestClient] = []

    def open_client() -> TestClient:
        client = TestClient(app)
        client.__enter__()
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.__exit__(None, None, None)


def login(client: TestClient, handle: str = "alice") -> dict[str, Any]:
    response = client.post("/v1/auth/login", json={"handle": handle, "password": PASSWORD})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(world: World, who: str = "alice") -> dict[str, str]:
    caller = getattr(world, who)
    return {"Authorization": f"Bearer {world.platform.accounts.issue_token(caller.user_id, 't')}"}


def assert_problem(response: Any, status: int, detail: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    if detail is not None:
        assert detail in body["detail"], body


# -- login and the cookie -----------------------------------------------------------------


def test_login_sets_an_httponly_samesite_session_cookie(
    clients: Callable[[], TestClient], world: World
) -> None:
    client = clients()
    response = client.post("/v1/auth/login", json={"handle": "alice", "password": PASSWORD})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == world.alice.user_id and body["role"] == "employee"
    assert body["handle"] == "alice" and len(body["csrf_token"]) >= 24
    cookie = response.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "samesite=lax" in cookie.lower() and "max-age=43200" in cookie.lower()
    secret = client.cookies[SESSION_COOKIE]
    # The cookie's secret is never echoed in the body (scripts must not read it).
    assert secret not in response.text and body["csrf_token"] != secret


def test_bad_logins_are_one_401_problem_and_set_no_cookie(
    clients: Callable[[], TestClient],
) -> None:
    client = clients()
    for body in (
        {"handle": "alice", "password": "wrong password, long enough"},
        {"handle": "nobody", "password": PASSWORD},
        {"handle": "root", "password": PASSWORD},  # exists, has no password
    ):
        response = client.post("/v1/auth/login", json=body)
        assert_problem(response, 401, "unknown user or wrong password")
        assert "set-cookie" not in response.headers
    for bad in ({}, {"handle": "alice"}, {"handle": "", "password": "x"},
                {"handle": "alice", "password": PASSWORD, "admin": True}):  # fmt: skip
        assert_problem(client.post("/v1/auth/login", json=bad), 422)
    assert not client.cookies


def test_the_cookie_authenticates_safe_requests(clients: Callable[[], TestClient]) -> None:
    client = clients()
    assert_problem(client.get("/v1/me"), 401)
    login(client)
    me = client.get("/v1/me")
    assert me.status_code == 200 and me.json()["handle"] == "alice"
    assert client.get("/v1/agents").status_code == 200
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, "forged")
    assert_problem(client.get("/v1/me"), 401, "session has ended")


@pytest.mark.parametrize(
    "send",
    [None, "wrong-token", ""],
    ids=["no-csrf-header", "wrong-csrf-header", "empty-csrf-header"],
)
def test_unsafe_cookie_requests_need_the_csrf_token(
    clients: Callable[[], TestClient], world: World, send: str | None
) -> None:
    client = clients()
    login(client)
    headers = {} if send is None else {CSRF_HEADER: send}
    for method, path, body in [
        ("POST", "/v1/tokens", {"name": "laptop"}),
        ("DELETE", "/v1/tokens/tok_x", None),
        ("POST", "/v1/auth/logout", None),
        ("PUT", "/v1/analytics/opt-in", {"opt_in": True}),
    ]:
        response = client.request(method, path, json=body, headers=headers)
        assert_problem(response, 403, "CSRF")
    assert world.platform.accounts.tokens(world.alice) == []  # nothing was done
    assert client.get("/v1/me").status_code == 200  # and the session is still open


def test_with_the_csrf_token_unsafe_cookie_requests_go_through(
    clients: Callable[[], TestClient],
) -> None:
    alice, bob = clients(), clients()
    csrf = login(alice)["csrf_token"]
    bob_csrf = login(bob, "bob")["csrf_token"]
    # Another session's token is not this session's token.
    assert_problem(alice.post("/v1/tokens", json={"name": "x"}, headers={CSRF_HEADER: bob_csrf}),
                   403)  # fmt: skip
    created = alice.post("/v1/tokens", json={"name": "laptop"}, headers={CSRF_HEADER: csrf})
    assert created.status_code == 201, created.text
    assert created.json()["secret"].startswith("mc_")


def test_bearer_requests_need_no_csrf_token(
    clients: Callable[[], TestClient], world: World
) -> None:
    client = clients()
    created = client.post("/v1/tokens", json={"name": "ci"}, headers=bearer(world))
    assert created.status_code == 201, created.text
    basic = client.get("/v1/me", headers={"Authorization": "Basic YWxpY2U6eA=="})
    assert_problem(basic, 401)


def test_logout_ends_the_session_and_clears_the_cookie(
    clients: Callable[[], TestClient], world: World
) -> None:
    client, other_browser = clients(), clients()
    csrf = login(client)["csrf_token"]
    login(other_browser)
    secret = client.cookies[SESSION_COOKIE]
    response = client.post("/v1/auth/logout", headers={CSRF_HEADER: csrf})
    assert response.status_code == 204, response.text
    cleared = response.headers["set-cookie"].lower()
    assert cleared.startswith(f"{SESSION_COOKIE}=") and "max-age=0" in cleared
    assert SESSION_COOKIE not in client.cookies
    client.cookies.set(SESSION_COOKIE, secret)  # a copy of the old cookie is worthless
    assert_problem(client.get("/v1/me"), 401, "session has ended")
    assert other_browser.get("/v1/me").status_code == 200
    # A bearer caller can call logout too: there is no session to end.
    assert client.post("/v1/auth/logout", headers=bearer(world)).status_code == 204
    assert_problem(clients().post("/v1/auth/logout"), 401)


# -- API tokens -----------------------------------------------------------------------------


def test_tokens_are_listed_created_and_revoked_by_their_owner_only(
    clients: Callable[[], TestClient], world: World
) -> None:
    client = clients()
    alice, bob = bearer(world), bearer(world, "bob")
    created = client.post("/v1/tokens", json={"name": "laptop"}, headers=alice)
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    assert set(created.json()) == {"secret"}
    listed = client.get("/v1/tokens", headers=alice).json()
    assert [t["name"] for t in listed] == ["laptop", "t"]  # newest first
    assert all(set(t) == {"id", "name", "created_at", "last_used_at", "revoked_at"}
               for t in listed)  # fmt: skip
    assert secret not in client.get("/v1/tokens", headers=alice).text
    laptop = listed[0]["id"]
    assert [t["name"] for t in client.get("/v1/tokens", headers=bob).json()] == ["t"]

    mine = {"Authorization": f"Bearer {secret}"}
    assert client.get("/v1/me", headers=mine).json()["handle"] == "alice"
    used = client.get("/v1/tokens", headers=alice).json()[0]
    assert used["id"] == laptop and used["last_used_at"] is not None

    # Someone else's token reads as not found, and stays valid.
    for who in (bob, bearer(world, "admin")):
        assert_problem(client.delete(f"/v1/tokens/{laptop}", headers=who), 404)
    assert client.get("/v1/me", headers=mine).status_code == 200
    assert_problem(client.delete("/v1/tokens/tok_nonexistent", headers=alice), 404)

    revoked = client.delete(f"/v1/tokens/{laptop}", headers=alice)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert_problem(client.get("/v1/me", headers=mine), 401, "invalid or revoked")
    again = client.delete(f"/v1/tokens/{laptop}", headers=alice)  # idempotent
    assert again.status_code == 200
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]


def test_token_names_are_validated(clients: Callable[[], TestClient], world: World) -> None:
    client = clients()
    for bad in ({}, {"name": ""}, {"name": "x" * 201}, {"name": "ok", "owner": "bob"}):
        assert_problem(client.post("/v1/tokens", json=bad, headers=bearer(world)), 422)
