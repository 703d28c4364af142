"""A too-short password is bad input (422, with the field), not a conflict (409)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from meshclaw.accounts.directory import InvalidFields
from meshclaw.accounts.signin import MIN_PASSWORD_LENGTH
from meshclaw.api.app import create_app
from tests.accounts.passwords import cheap_hashing
from tests.conftest import World


def test_a_short_password_names_the_field(
    make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    cheap_hashing(monkeypatch)
    world = make_world()
    with pytest.raises(InvalidFields) as raised:
        world.platform.signin.set_password(world.alice.user_id, "x" * (MIN_PASSWORD_LENGTH - 1))
    assert raised.value.http_status == 422
    assert raised.value.fields == {
        "password": f"a password needs at least {MIN_PASSWORD_LENGTH} characters"
    }

    # Over HTTP, any route that sets one answers a problem with the field's path.
    app = create_app(world.platform)

    @app.post("/test/password")
    def set_password() -> None:
        world.platform.signin.set_password(world.alice.user_id, "short")

    with TestClient(app) as client:
        response = client.post("/test/password")
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"] == [
        {"path": "body.password", "message": raised.value.fields["password"]}
    ]
