"""The "Usage & outcomes" and leaderboard pages, through the real app on a temp store.

Each person signs in with ``POST /ui/login`` in their own client (their own cookies);
forms send the session's CSRF token from the page, as a browser would.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meshclaw.accounts.service import Caller
from meshclaw.api.app import create_app
from tests.analytics._insights import InsightsOrg, insights_org
from tests.conftest import World

PASSWORD = "correct horse battery"
USD = 1_000_000_000


@pytest.fixture
def org(make_world: Callable[..., World]) -> InsightsOrg:
    return insights_org(make_world)


@pytest.fixture
def sign_in(org: InsightsOrg) -> Iterator[Callable[[Caller], TestClient]]:
    """A signed-in client per person (each its own cookie jar)."""
    app = create_app(org.world.platform)
    clients: list[TestClient] = []

    def open_as(who: Caller) -> TestClient:
        org.world.platform.signin.set_password(who.user_id, PASSWORD)
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        signed = client.post(
            "/ui/login",
            data={"handle": who.handle, "password": PASSWORD, "next": "/ui/"},
            follow_redirects=False,
        )
        assert signed.status_code == 303, signed.text
        return client

    yield open_as
    for client in clients:
        client.__exit__(None, None, None)


def figure(html: str, name: str) -> dict[str, Any]:
    """The Plotly figure a page embeds for ``app.js`` to draw."""
    found = re.search(rf'<script type="application/json" id="figure-{name}">(.*?)</script>', html)
    assert found, f"no figure {name}"
    data: dict[str, Any] = json.loads(found.group(1))
    return data


def csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found
    return found.group(1)


def options(html: str) -> list[str]:
    select = re.search(r'<select id="scope".*?</select>', html, re.S)
    assert select
    return re.findall(r'<option value="([^"]+)"', select.group(0))


def test_the_charts_change_when_a_beneficiary_accepts(
    org: InsightsOrg, sign_in: Callable[[Caller], TestClient]
) -> None:
    alice, eng0 = org.alice, org.eng[1]
    org.spend(alice, 2 * USD)
    outcome_id = org.outcome(alice, eng0)
    as_alice = sign_in(alice)

    before = as_alice.get("/ui/insights", params={"period": "week"})
    assert before.status_code == 200
    cost = figure(before.text, "cost")["data"][0]
    assert cost["y"][-1] == 2.0 and cost["y"][:-1] == [0.0] * 11
    recorded, accepted = figure(before.text, "outcomes")["data"]
    assert (recorded["name"], recorded["y"][-1]) == ("Recorded", 1)
    assert (accepted["name"], accepted["y"][-1]) == ("Accepted (credited)", 0)
    assert figure(before.text, "cpo")["data"][0]["y"][-1] is None
    assert f'href="/ui/insights/outcomes/{outcome_id}"' in before.text
    # The numbers are in a table too, for screen readers and with JavaScript off.
    assert '<th scope="col" class="num">Cost per accepted outcome</th>' in before.text
    assert re.search(r'<td class="num">\$2\.00</td>\s*<td class="num">1</td>', before.text)

    as_eng0 = sign_in(eng0)
    page = as_eng0.get(f"/ui/insights/outcomes/{outcome_id}")
    assert page.status_code == 200 and 'value="accepted"' in page.text
    done = as_eng0.post(
        f"/ui/insights/outcomes/{outcome_id}/feedback",
        data={"csrf": csrf(page.text), "verdict": "accepted", "note": "saved me an hour"},
    )
    assert done.status_code == 200 and done.url.path == f"/ui/insights/outcomes/{outcome_id}"
    assert "Your verdict was recorded: accepted." in done.text
    assert '<span class="badge credited">credited</span>' in done.text
    assert "saved me an hour" in done.text
    assert org.world.platform.outcomes.get(alice, outcome_id).state == "credited"

    after = as_alice.get("/ui/insights", params={"period": "week"})
    assert figure(after.text, "outcomes")["data"][1]["y"][-1] == 1
    assert figure(after.text, "cpo")["data"][0]["y"][-1] == 2.0
    assert figure(after.text, "cost")["data"][0]["y"][-1] == 2.0


def test_a_day_view_has_thirty_points(
    org: InsightsOrg, sign_in: Callable[[Caller], TestClient]
) -> None:
    page = sign_in(org.alice).get("/ui/insights", params={"period": "day"})
    assert len(figure(page.text, "cost")["data"][0]["x"]) == 30
    assert "the last 30 days" in page.text
    bad = sign_in(org.eng[1]).get("/ui/insights", params={"period": "year"})
    assert bad.status_code == 400 and "unknown period" in bad.text
    assert bad.headers["content-type"].startswith("text/html")


def test_an_employee_sees_only_their_own_scope(
    org: InsightsOrg, sign_in: Callable[[Caller], TestClient]
) -> None:
    w = org.world
    eng_team, ops_team = org.alice.team_id, w.bob.team_id
    as_alice = sign_in(org.alice)
    assert options(as_alice.get("/ui/insights").text) == ["me"]
    for scope in ("org", f"team:{ops_team}", f"team:{eng_team}"):
        refused = as_alice.get("/ui/insights", params={"scope": scope})
        assert refused.status_code == 403, scope
        assert "<h1>Not allowed</h1>" in refused.text

    as_lead = sign_in(org.lead)
    assert options(as_lead.get("/ui/insights").text) == ["me", f"team:{eng_team}"]
    assert as_lead.get("/ui/insights", params={"scope": "org"}).status_code == 403
    assert as_lead.get("/ui/insights", params={"scope": f"team:{ops_team}"}).status_code == 403
    for who in org.eng:
        org.spend(who, USD)
    team = as_lead.get("/ui/insights", params={"scope": f"team:{eng_team}"})
    assert team.status_code == 200
    assert figure(team.text, "cost")["data"][0]["y"][-1] == 5.0

    as_admin = sign_in(w.admin)
    assert options(as_admin.get("/ui/insights").text) == ["me", f"team:{eng_team}", "org"]
    small = as_admin.get("/ui/insights", params={"scope": f"team:{ops_team}"})
    assert small.status_code == 403 and "groups smaller than 5 are not shown" in small.text
    assert as_admin.get("/ui/insights", params={"scope": "org"}).status_code == 200


def test_the_owner_cannot_accept_their_own_outcome(
    org: InsightsOrg, sign_in: Callable[[Caller], TestClient]
) -> None:
    outcome_id = org.outcome(org.alice, org.eng[1])
    as_alice = sign_in(org.alice)
    page = as_alice.get(f"/ui/insights/outcomes/{outcome_id}")
    assert page.status_code == 200
    assert 'value="accepted"' not in page.text  # no buttons for the owner
    assert "eng0" in page.text and "mail_sent" in page.text and "delivered" in page.text
    tried = as_alice.post(
        f"/ui/insights/outcomes/{outcome_id}/feedback",
        data={"csrf": csrf(page.text), "verdict": "accepted"},
    )
    assert "It earns no credit" in tried.text
    assert "acceptance is kept as evidence but never counts" in tried.text
    assert org.world.platform.outcomes.get(org.alice, outcome_id).state == "unaccepted"
    chart = figure(as_alice.get("/ui/insights").text, "outcomes")
    assert chart["data"][1]["y"][-1] == 0


def test_bad_feedback_is_answered_beside_the_form(
    org: InsightsOrg, sign_in: Callable[[Caller], TestClient]
) -> None:
    outcome_id = org.outcome(org.alice, org.eng[1])
    as_eng0 = sign_in(org.eng[1])
    page = as_eng0.get(f"/ui/insights/outcomes/{outcome_id}")
    token = csrf(page.text)
    url = f"/ui/insights/outcomes/{outcome_id}/feedback"
    long_note = as_eng0.post(url, data={"csrf": token, "verdict": "rejected", "note": "x" * 2001})
    assert long_note.status_code == 422
    assert 'aria-invalid="true" aria-describedby="note-error"' in long_note.text
    assert "at most 2000 fit" in long_note.text
    no_verdict = as_eng0.post(url, data={"csrf": token, "verdict": "maybe"})
    assert no_verdict.status_code == 422 and "Choose Accept or Reject." in no_verdict.text
    forged = as_eng0.post(url, data={"csrf": "nope", "verdict": "accepted"})
    assert forged.status_code == 403
    assert org.world.platform.outcomes.get(org.alice, outcome_id).feedback == []
    # Someone in the org who did not receive it: the service's refusal, on the page.
    stranger = sign_in(org.world.admin)
    admin_page = stranger.get(f"/ui/insights/outcomes/{outcome_id}")
    refused = stranger.post(url, data={"csrf": csrf(admin_page.text), "verdict": "accepted"})
    assert refused.status_code == 403
    assert "only someone who received this outcome can judge it" in refused.text


def test_another_org_cannot_see_or_judge_an_outcome(
    org: InsightsOrg, sign_in: Callable[[Caller], TestClient]
) -> None:
    outcome_id = org.outcome(org.alice, org.eng[1])
    accounts = org.world.platform.accounts
    other = accounts.create_org("globex")
    mallory = accounts.caller_for(accounts.create_user(other.id, "mallory"))
    as_mallory = sign_in(mallory)
    page = as_mallory.get(f"/ui/insights/outcomes/{outcome_id}")
    assert page.status_code == 404 and "<h1>Not found</h1>" in page.text
    token = csrf(as_mallory.get("/ui/insights").text)
    judged = as_mallory.post(
        f"/ui/insights/outcomes/{outcome_id}/feedback", data={"csrf": token, "verdict": "accepted"}
    )
    assert judged.status_code == 404
    assert org.world.platform.outcomes.get(org.alice, outcome_id).feedback == []
    # Nor can a colleague who is neither owner nor beneficiary read it.
    assert sign_in(org.eng[2]).get(f"/ui/insights/outcomes/{outcome_id}").status_code == 404


def test_signed_out_visitors_are_sent_to_sign_in(org: InsightsOrg) -> None:
    with TestClient(create_app(org.world.platform)) as client:
        for path in ("/ui/insights", "/ui/leaderboard", "/ui/insights/outcomes/out_x"):
            response = client.get(path, follow_redirects=False)
            assert response.status_code == 303
            assert response.headers["location"].startswith("/ui/login?next=")


def test_leaderboard_ranks_teams_and_only_opted_in_people(
    org: InsightsOrg, sign_in: Callable[[Caller], TestClient]
) -> None:
    w = org.world
    alice, eng0 = org.alice, org.eng[1]
    org.spend(alice, 3 * USD)
    org.spend(eng0, 1 * USD)
    org.outcome(alice, eng0, accept=True)
    org.outcome(eng0, alice, accept=True)
    org.outcome(w.bob, alice, accept=True)  # ops has one person: never shown as a group

    as_alice = sign_in(alice)
    board = as_alice.get("/ui/leaderboard")
    assert board.status_code == 200
    rows = re.findall(r"<tr>\s*<td class=\"num\">(\d+)</td>\s*<th scope=\"row\">(\w+)", board.text)
    assert rows == [("1", "eng")]
    assert ">ops<" not in board.text and "$4.00" in board.text and "$2.00" in board.text
    assert "People who opted in" not in board.text  # individual boards are off
    assert as_alice.get("/ui/leaderboard", params={"by": "user"}).status_code == 403

    w.platform.analytics.update_settings(w.admin, individual_boards=True)
    first = as_alice.get("/ui/leaderboard", params={"by": "user"})
    assert first.status_code == 200 and "Nobody who opted in" in first.text

    as_eng0 = sign_in(eng0)
    form = as_eng0.get("/ui/leaderboard").text
    saved = as_eng0.post("/ui/leaderboard/opt-in", data={"csrf": csrf(form), "choice": "in"})
    assert saved.status_code == 200 and saved.url.query == b"by=user&saved=in"
    assert "Saved: you appear on the individual leaderboard." in saved.text
    people = as_alice.get("/ui/leaderboard", params={"by": "user"}).text
    assert re.findall(r'<th scope="row">(\w+)', people) == ["eng0"]
    assert ">alice<" not in people

    form = as_alice.get("/ui/leaderboard").text
    missing = as_alice.post("/ui/leaderboard/opt-in", data={"csrf": csrf(form)})
    assert missing.status_code == 422 and 'aria-describedby="choice-error"' in missing.text
    as_alice.post("/ui/leaderboard/opt-in", data={"csrf": csrf(form), "choice": "in"})
    people = as_alice.get("/ui/leaderboard", params={"by": "user"}).text
    assert sorted(re.findall(r'<th scope="row">(\w+)', people)) == ["alice", "eng0"]
    token = csrf(as_eng0.get("/ui/leaderboard").text)
    as_eng0.post("/ui/leaderboard/opt-in", data={"csrf": token, "choice": "out"})
    people = as_alice.get("/ui/leaderboard", params={"by": "user"}).text
    assert re.findall(r'<th scope="row">(\w+)', people) == ["alice"]
