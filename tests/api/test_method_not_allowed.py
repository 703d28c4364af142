"""A 405 names every method the path supports (RFC 9110 §15.5.6), also when several
routes share the path (``GET`` and ``PUT /v1/policy`` are two routes), for the API (a
problem) and for dashboard pages (an HTML page)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from meshclaw.api.app import create_app
from tests.conftest import World


def allowed(header: str) -> list[str]:
    return [m.strip() for m in header.split(",")]


def test_405_lists_the_methods_of_every_route_on_the_path(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    token = world.platform.accounts.issue_token(world.admin.user_id, "t")
    with TestClient(create_app(world.platform), follow_redirects=False) as client:
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/v1/policy", headers=headers).status_code == 200
        refused = client.delete("/v1/policy", headers=headers)
        assert refused.status_code == 405
        assert refused.headers["content-type"] == "application/problem+json"
        assert allowed(refused.headers["allow"]) == ["GET", "PUT"]
        # A path with one route is unchanged; a parameterised path matches by pattern.
        one = client.put("/health")
        assert one.status_code == 405 and allowed(one.headers["allow"]) == ["GET"]
        run = client.patch("/v1/runs/run_x", headers=headers)
        assert run.status_code == 405 and allowed(run.headers["allow"]) == ["GET"]
        # A page: the same header on the HTML error page.
        page = client.delete("/ui/admin/policies")
        assert page.status_code == 405 and "text/html" in page.headers["content-type"]
        assert allowed(page.headers["allow"]) == ["GET", "POST"]


def test_a_literal_path_is_not_also_the_template_beside_it(
    make_world: Callable[..., World],
) -> None:
    """``/v1/outcomes/recheck`` is a path of its own (POST), not an outcome id for
    ``GET /v1/outcomes/{outcome_id}``: its 405 says POST, as the OpenAPI document does."""
    world = make_world()
    token = world.platform.accounts.issue_token(world.admin.user_id, "t")
    with TestClient(create_app(world.platform)) as client:
        refused = client.options(
            "/v1/outcomes/recheck", headers={"Authorization": f"Bearer {token}"}
        )
        assert refused.status_code == 405 and allowed(refused.headers["allow"]) == ["POST"]
        other = client.delete("/v1/outcomes/out_1", headers={"Authorization": f"Bearer {token}"})
        assert other.status_code == 405 and allowed(other.headers["allow"]) == ["GET"]
