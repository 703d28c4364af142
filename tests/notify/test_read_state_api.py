"""Read state over the API: ``read`` per item and ``unread`` counts in
``GET /v1/notifications``, ``unread=true``, the org view's ``recipient``, and
``POST``/``DELETE /v1/notifications/{id}/read`` and ``POST /v1/notifications/read-all``
(all, or ``through`` the newest the caller saw): a notification not addressed to the
caller is a 404 whoever asks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from meshclaw.accounts.service import Caller
from meshclaw.api.app import create_app
from tests.conftest import World
from tests.notify.test_notification_reading import add, seeded

PROBLEM = "application/problem+json"


@dataclass
class Api:
    client: TestClient
    ids: dict[str, str]
    auditor: Caller
    mallory: Caller
    world: World

    def as_(self, who: Caller) -> dict[str, str]:
        token = self.world.platform.accounts.issue_token(who.user_id, "t")
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api(make_world: Callable[..., World], database_url: str) -> Iterator[Api]:
    world = make_world(database_url=database_url)
    auditor, mallory, ids = seeded(world)
    with TestClient(create_app(world.platform)) as client:
        yield Api(client=client, ids=ids, auditor=auditor, mallory=mallory, world=world)


def test_marking_read_and_unread_and_the_unread_filter(api: Api) -> None:
    alice, ids = api.as_(api.world.alice), api.ids
    client = api.client
    page = client.get("/v1/notifications", headers=alice).json()
    assert page["unread"] == 3 and [n["read"] for n in page["notifications"]] == [False] * 3
    assert page["notifications"][0]["read_at"] is None

    marked = client.post(f"/v1/notifications/{ids['alice_new']}/read", headers=alice)
    assert marked.status_code == 200, marked.text
    body = marked.json()
    assert (body["id"], body["read"], body["subject"]) == (ids["alice_new"], True, "alice new")
    assert body["read_at"] is not None
    unread = client.get("/v1/notifications", params={"unread": "true"}, headers=alice).json()
    assert [n["id"] for n in unread["notifications"]] == [ids["both"], ids["alice_old"]]
    assert (unread["total"], unread["unread"]) == (2, 2)

    again = client.delete(f"/v1/notifications/{ids['alice_new']}/read", headers=alice)
    assert again.status_code == 200
    assert (again.json()["read"], again.json()["read_at"]) == (False, None)
    assert client.get("/v1/notifications", headers=alice).json()["unread"] == 3

    done = client.post("/v1/notifications/read-all", headers=alice)
    assert done.status_code == 200 and done.json() == {"marked": 3, "unread": 0}
    left = client.get("/v1/notifications", params={"unread": True}, headers=alice).json()
    assert left["total"] == 0 and left["notifications"] == []
    # Bob's copies are his: still unread.
    bob = client.get("/v1/notifications", headers=api.as_(api.world.bob)).json()
    assert bob["unread"] == 2


def test_someone_elses_notification_is_not_found_for_everyone(api: Api) -> None:
    ids, client = api.ids, api.client
    for who in (api.world.bob, api.world.admin, api.auditor, api.mallory):
        headers = api.as_(who)
        for method in ("POST", "DELETE"):
            answer = client.request(method, f"/v1/notifications/{ids['alice_new']}/read",
                                    headers=headers)  # fmt: skip
            assert answer.status_code == 404, (who.handle, method, answer.text)
            assert (
                answer.json()["detail"] == f"no notification {ids['alice_new']!r} addressed to you"
            )
    alice = api.as_(api.world.alice)
    assert client.post(f"/v1/notifications/{ids['globex']}/read", headers=alice).status_code == 404
    assert client.post("/v1/notifications/ntf_none/read", headers=alice).status_code == 404
    assert client.post(f"/v1/notifications/{ids['alice_new']}/read").status_code == 401
    assert client.post("/v1/notifications/read-all").status_code == 401
    assert client.get("/v1/notifications", headers=alice).json()["unread"] == 3


def test_the_org_view_filters_by_recipient_with_reasons(api: Api) -> None:
    ids, client = api.ids, api.client
    root = api.as_(api.world.admin)
    for name in ("bob", api.world.bob.user_id):
        page = client.get("/v1/notifications", params={"scope": "org", "recipient": name},
                          headers=root).json()  # fmt: skip
        assert [n["id"] for n in page["notifications"]] == [ids["both"], ids["bob"]]
        assert [n["read"] for n in page["notifications"]] == [None, None]  # not root's
        assert page["unread"] == 0
    unknown = client.get("/v1/notifications", params={"scope": "org", "recipient": "zed"},
                         headers=root)  # fmt: skip
    assert unknown.status_code == 400
    assert "nobody in your org has the handle or user id 'zed'" in unknown.json()["detail"]
    mine = client.get("/v1/notifications", params={"recipient": "bob"}, headers=root)
    assert mine.status_code == 400 and "use it with scope org" in mine.json()["detail"]
    refused = client.get("/v1/notifications", params={"scope": "org", "recipient": "bob"},
                         headers=api.as_(api.world.alice))  # fmt: skip
    assert refused.status_code == 403
    assert "notification.read denied" in refused.json()["detail"]
    other = client.get("/v1/notifications", params={"scope": "org", "recipient": "alice"},
                       headers=api.as_(api.mallory))  # fmt: skip
    assert other.status_code == 400  # no alice in globex: nothing of acme's shows
    assert ids["alice_new"] not in other.text


def test_read_all_through_the_newest_seen_leaves_what_arrived_since_unread(api: Api) -> None:
    alice, client, world = api.as_(api.world.alice), api.client, api.world
    seen = client.get("/v1/notifications", headers=alice).json()
    newest = seen["notifications"][0]["id"]
    assert newest == api.ids["alice_new"] and seen["unread"] == 3
    arrived = add(world, world.alice.org_id, [world.alice.user_id], "arrived since", 5)

    done = client.post("/v1/notifications/read-all", json={"through": newest}, headers=alice)
    assert done.status_code == 200, done.text
    assert done.json() == {"marked": 3, "unread": 1}
    left = client.get("/v1/notifications", params={"unread": True}, headers=alice).json()
    assert [n["id"] for n in left["notifications"]] == [arrived]
    # An empty body is no bound, as before the bound existed.
    assert client.post("/v1/notifications/read-all", json={}, headers=alice).json() == {
        "marked": 1,
        "unread": 0,
    }


def test_a_bad_through_is_refused_with_a_reason_and_marks_nothing(api: Api) -> None:
    alice, client, ids = api.as_(api.world.alice), api.client, api.ids
    for through in (ids["bob"], ids["globex"], "ntf_none"):
        refused = client.post("/v1/notifications/read-all", json={"through": through},
                              headers=alice)  # fmt: skip
        assert refused.status_code == 404, refused.text
        assert refused.headers["content-type"] == PROBLEM
        assert refused.json()["detail"] == f"no notification {through!r} addressed to you"
    for body, path in (
        ({"through": ""}, "body.through"),
        ({"through": "n" * 41}, "body.through"),
        ({"through": 7}, "body.through"),
        ({"until": ids["alice_new"]}, "body.until"),
    ):
        invalid = client.post("/v1/notifications/read-all", json=body, headers=alice)
        assert invalid.status_code == 422, (body, invalid.text)
        assert invalid.headers["content-type"] == PROBLEM
        assert path in [e["path"] for e in invalid.json()["errors"]], invalid.json()
    assert client.get("/v1/notifications", headers=alice).json()["unread"] == 3


def test_the_openapi_declares_the_bound_and_its_errors(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    operation = document["paths"]["/v1/notifications/read-all"]["post"]
    assert not operation["requestBody"].get("required", False)
    body = document["components"]["schemas"]["ReadAllIn"]
    assert body["additionalProperties"] is False
    assert "newest notification you saw" in body["properties"]["through"]["description"]
    for status in ("404", "422"):
        declared = operation["responses"][status]
        assert "through" in declared["description"]
        assert PROBLEM in declared["content"]
