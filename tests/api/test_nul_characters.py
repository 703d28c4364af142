"""A NUL character anywhere in a request is a clear 400 on both engines (PostgreSQL keeps
none in text, SQLite would): in the path, the query, a JSON body or a form. Found by the
API contract test on the PostgreSQL pass, where ``GET /v1/outcomes?state=%00`` was a 500.
An unknown outcome state is a 400 naming the states (it used to match nothing)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from meshclaw.api.app import create_app
from meshclaw.outcomes._rules import STATES
from tests.conftest import World


@pytest.fixture
def client(make_world: Callable[..., World]) -> Iterator[tuple[TestClient, dict[str, str]]]:
    world = make_world()
    token = world.platform.accounts.issue_token(world.admin.user_id, "t")
    with TestClient(create_app(world.platform)) as client:
        yield client, {"Authorization": f"Bearer {token}"}


def _refused(response: object, where: str) -> None:
    assert response.status_code == 400, response.text  # type: ignore[attr-defined]
    problem = response.json()  # type: ignore[attr-defined]
    assert problem["status"] == 400
    assert f"request's {where} holds a NUL character" in problem["detail"]


def test_nul_in_path_or_query_is_a_400(client: tuple[TestClient, dict[str, str]]) -> None:
    http, auth = client
    _refused(http.get("/v1/outcomes?state=%00", headers=auth), "path or query")
    _refused(http.get("/v1/outcomes?st%00ate=x", headers=auth), "path or query")
    _refused(http.get("/v1/agents/help%00er", headers=auth), "path or query")
    # "%2500" is the text "%00", not a NUL: on to the state check.
    text = http.get("/v1/outcomes?state=%2500", headers=auth)
    assert text.status_code == 400 and "state must be one of" in text.json()["detail"]


def test_nul_in_a_body_is_a_400_and_nothing_is_stored(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    http, auth = client
    _refused(http.post("/v1/teams", json={"name": "ops\u0000x"}, headers=auth), "body")
    _refused(
        http.post(
            "/v1/teams",
            content=b"name=ops%00x",
            headers=auth | {"Content-Type": "application/x-www-form-urlencoded"},
        ),
        "body",
    )
    teams = http.get("/v1/teams", headers=auth).json()
    assert not [t for t in teams if t["name"].startswith("ops") and t["name"] != "ops"]
    # An escaped backslash before "u0000" is text, not a NUL; and "%00" in JSON is text.
    made = http.post("/v1/teams", json={"name": "ops\\u0000 %00"}, headers=auth)
    assert made.status_code == 201, made.text


def test_an_unknown_outcome_state_is_a_400_naming_the_states(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    http, auth = client
    bad = http.get("/v1/outcomes", params={"state": "weird"}, headers=auth)
    assert bad.status_code == 400
    assert all(state in bad.json()["detail"] for state in STATES)
    for state in STATES:
        assert http.get("/v1/outcomes", params={"state": state}, headers=auth).status_code == 200


def test_a_nul_the_store_refuses_is_still_a_400_and_other_refusals_a_500(
    make_world: Callable[..., World],
) -> None:
    """The net behind the door: a NUL that reached PostgreSQL some other way (psycopg's
    ``DataError``) is the sender's 400; any other refused value is a 500 of ours."""
    from sqlalchemy.exc import DataError

    app = create_app(make_world().platform)

    def refused(message: str) -> Callable[[], None]:
        def route() -> None:
            raise DataError("INSERT ...", {}, Exception(message))

        return route

    app.add_api_route("/nul", refused("PostgreSQL text fields cannot contain NUL (0x00) bytes"))
    app.add_api_route("/other", refused("numeric field overflow"))
    with TestClient(app, raise_server_exceptions=False) as http:
        nul = http.get("/nul")
        assert nul.status_code == 400 and "NUL character" in nul.json()["detail"]
        other = http.get("/other")
        assert other.status_code == 500 and "overflow" not in other.text


def test_a_page_with_a_nul_is_an_error_page(client: tuple[TestClient, dict[str, str]]) -> None:
    http, _ = client
    page = http.get("/ui/agents?q=%00")
    assert page.status_code == 400
    assert page.headers["content-type"].startswith("text/html")
    assert "NUL character" in page.text


def test_a_body_in_many_chunks_is_checked_whole_and_handed_on_unchanged(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    """The middleware reads every chunk before it decides; the route reads them all."""
    http, auth = client

    def chunked(*parts: bytes) -> Iterator[bytes]:
        yield from parts

    made = http.post(
        "/v1/teams",
        content=chunked(b'{"name": "sa', b'les"}'),
        headers=auth | {"Content-Type": "application/json"},
    )
    assert made.status_code == 201 and made.json()["name"] == "sales", made.text
    split = http.post(
        "/v1/teams",
        content=chunked(b'{"name": "x\\u00', b'00"}'),
        headers=auth | {"Content-Type": "application/json"},
    )
    _refused(split, "body")
