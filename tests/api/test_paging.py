"""Lists that grow are paged (``offset`` skips, ``limit`` caps, out-of-range values are a
422), and paging through them returns every row once: outcomes, who looked at my
numbers, pending approvals. Rows share timestamps on purpose: the order breaks ties by
id, so no page skips or repeats one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meshclaw.analytics.models import AnalyticsView
from meshclaw.api.app import create_app
from meshclaw.clock import utcnow
from meshclaw.ids import new_id
from meshclaw.outcomes.models import Outcome
from tests.conftest import World

ROWS = 7


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    world = make_world()
    world.save_agent(
        "name: helper\nowner: alice\nmodel: {provider: scripted, model: m}\n"
        "instructions: x\ntools: []\nbudget: {max_steps: 3, timeout_seconds: 30}\n"
    )
    run = world.platform.runs.create(world.alice, "helper", "x")
    same_time = utcnow()
    with world.platform.db.session() as session:
        for n in range(ROWS):
            session.add(
                Outcome(
                    id=new_id("out"), org_id=world.alice.org_id, team_id=world.alice.team_id,
                    user_id=world.alice.user_id, agent_id=run.agent_id, run_id=run.id,
                    tool="mail.send", type="mail_sent", ref=f"mail {n}",
                    beneficiaries=[world.bob.user_id], created_at=same_time,
                )
            )  # fmt: skip
            session.add(
                AnalyticsView(
                    id=new_id("anv"), org_id=world.alice.org_id, viewer_id=world.admin.user_id,
                    subject_id=world.alice.user_id, reason=f"look {n}", created_at=same_time,
                )
            )  # fmt: skip
    return world


def _pages(client: TestClient, path: str, auth: dict[str, str], size: int) -> list[Any]:
    seen: list[Any] = []
    offset = 0
    while True:
        page = client.get(path, params={"limit": size, "offset": offset}, headers=auth)
        assert page.status_code == 200, page.text
        rows = page.json()
        assert len(rows) <= size
        seen += rows
        if len(rows) < size:
            return seen
        offset += size


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
def test_paging_returns_every_row_once(world: World, size: int) -> None:
    platform = world.platform
    alice = {"Authorization": f"Bearer {platform.accounts.issue_token(world.alice.user_id, 't')}"}
    bob = {"Authorization": f"Bearer {platform.accounts.issue_token(world.bob.user_id, 't')}"}
    with TestClient(create_app(platform)) as client:
        mine = _pages(client, "/v1/outcomes", alice, size)
        assert sorted(o["ref"] for o in mine) == sorted(f"mail {n}" for n in range(ROWS))
        assert len({o["id"] for o in mine}) == ROWS
        whole = client.get("/v1/outcomes", params={"limit": 100}, headers=alice).json()
        assert [o["id"] for o in mine] == [o["id"] for o in whole]  # the same order
        to_review = client.get(
            "/v1/outcomes", params={"to_review": "true", "offset": 5}, headers=bob
        ).json()
        assert len(to_review) == ROWS - 5

        views = _pages(client, "/v1/analytics/views", alice, size)
        assert sorted(v["reason"] for v in views) == sorted(f"look {n}" for n in range(ROWS))

        assert _pages(client, "/v1/approvals", alice, size) == []  # none pending here


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/outcomes", {"offset": -1}),
        ("/v1/outcomes", {"limit": 0}),
        ("/v1/analytics/views", {"limit": 501}),
        ("/v1/approvals", {"offset": "x"}),
        ("/v1/agents/helper/versions", {"limit": 0}),
    ],
)
def test_out_of_range_paging_is_a_422_naming_the_parameter(
    world: World, path: str, params: dict[str, Any]
) -> None:
    token = world.platform.accounts.issue_token(world.alice.user_id, "t")
    with TestClient(create_app(world.platform)) as client:
        bad = client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
    assert bad.status_code == 422
    assert any(next(iter(params)) in e["path"] for e in bad.json()["errors"])
