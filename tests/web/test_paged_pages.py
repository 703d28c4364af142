"""The approvals inbox and the insights page's outcome list are paged with the shared
pager (``_pager.html``): following "Next page" from the first page shows every row once,
rows sharing a timestamp included (ties break by id), and odd query values fall back to
the first page instead of failing."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from html import unescape

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from meshclaw.api.app import create_app
from meshclaw.clock import utcnow
from meshclaw.ids import new_id
from meshclaw.outcomes.models import Outcome
from meshclaw.policy.models import Approval
from meshclaw.store.models import Run
from tests.accounts.passwords import cheap_hashing
from tests.conftest import World

PASSWORD = "a long test password"
OUTCOMES = 23
HELD = 27


@pytest.fixture
def alice(
    make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    cheap_hashing(monkeypatch)
    world = make_world()
    world.save_agent(
        "name: helper\nowner: alice\nmodel: {provider: scripted, model: m}\n"
        "instructions: x\ntools: []\nbudget: {max_steps: 3, timeout_seconds: 30}\n"
    )
    run = world.platform.runs.create(world.alice, "helper", "x")
    same_time = utcnow()
    with world.platform.db.session() as session:
        session.execute(update(Run).where(Run.id == run.id).values(status="waiting_approval"))
        for n in range(OUTCOMES):
            session.add(
                Outcome(
                    id=new_id("out"), org_id=world.alice.org_id, team_id=world.alice.team_id,
                    user_id=world.alice.user_id, agent_id=run.agent_id, run_id=run.id,
                    tool="mail.send", type="mail_sent", ref=f"mail-{n}-ref",
                    beneficiaries=[world.bob.user_id], created_at=same_time,
                )
            )  # fmt: skip
        for n in range(HELD):
            session.add(
                Approval(
                    id=new_id("apr"), org_id=world.alice.org_id, run_id=run.id,
                    agent_id=run.agent_id, owner_id=world.alice.user_id, step_seq=n,
                    tool_call_id=f"call-{n}", tool="mail.send", action="tool.write",
                    arguments={"to": f"held-{n}-call@example.com"}, arguments_hash="0" * 64,
                    reason="needs a person", requested_at=same_time,
                    expires_at=same_time + timedelta(hours=1),
                )
            )  # fmt: skip
    world.platform.signin.set_password(world.alice.user_id, PASSWORD)
    with TestClient(create_app(world.platform), follow_redirects=False) as client:
        signed = client.post(
            "/ui/login", data={"handle": "alice", "password": PASSWORD, "next": "/ui/"}
        )
        assert signed.status_code == 303, signed.text
        yield client


def _walk(client: TestClient, path: str, pattern: str, pages_label: str) -> tuple[list[str], int]:
    """Every match of ``pattern`` on the page at ``path`` and the pages its "Next page"
    link leads to; and how many pages that was."""
    seen: list[str] = []
    pages = 0
    url: str | None = path
    while url is not None:
        page = client.get(url)
        assert page.status_code == 200, page.text
        pages += 1
        seen += re.findall(pattern, page.text)
        nav = re.search(
            f'<nav class="actions" aria-label="{pages_label}">(.*?)</nav>', page.text, re.S
        )
        following = re.search(r'<a href="([^"]+)">Next page</a>', nav.group(1)) if nav else None
        url = unescape(following.group(1)) if following else None
        if pages > 1:
            assert nav is not None and "Previous page" in nav.group(1)
    return seen, pages


def test_the_approvals_inbox_pages_through_every_held_call_once(alice: TestClient) -> None:
    first = alice.get("/ui/approvals").text
    assert f"{HELD} held calls" in first and "(showing 1\N{EN DASH}25)" in first
    seen, pages = _walk(
        alice, "/ui/approvals", r"held-(\d+)-call@", "Pages of calls waiting for a decision"
    )
    assert pages == 2
    assert sorted(map(int, seen)) == list(range(HELD))  # no gaps, no repeats

    small, pages = _walk(
        alice,
        "/ui/approvals?limit=10",
        r"held-(\d+)-call@",
        "Pages of calls waiting for a decision",
    )
    assert pages == 3 and sorted(map(int, small)) == list(range(HELD))
    assert small == seen  # the same order whatever the page size

    last = alice.get("/ui/approvals", params={"limit": "10", "offset": "20"}).text
    assert "(showing 21\N{EN DASH}27)" in last and "Next page" not in last
    # Odd values show the first page; past the end still leads back.
    odd = alice.get("/ui/approvals", params={"limit": "7", "offset": "x"})
    assert odd.status_code == 200 and "(showing 1\N{EN DASH}25)" in odd.text
    beyond = alice.get("/ui/approvals", params={"offset": "500"}).text
    assert "Nothing more on this page." in beyond and "Previous page" in beyond


def test_the_insights_page_pages_through_my_outcomes(alice: TestClient) -> None:
    first = alice.get("/ui/insights").text
    assert "My outcomes, newest first" in first and "(showing 1\N{EN DASH}10)" in first
    seen, pages = _walk(alice, "/ui/insights", r"mail-(\d+)-ref", "Pages of my outcomes")
    assert pages == 3
    assert sorted(map(int, seen)) == list(range(OUTCOMES))
    whole, _ = _walk(alice, "/ui/insights?limit=50", r"mail-(\d+)-ref", "Pages of my outcomes")
    assert whole == seen
    # The links keep the chosen scope and period.
    week = alice.get("/ui/insights", params={"period": "month", "offset": "10"}).text
    assert "(showing 11\N{EN DASH}20)" in week
    assert "period=month&amp;limit=10&amp;offset=20" in week
    assert "period=month&amp;limit=10&amp;offset=0" in week
