"""Links to dashboard pages that leave the dashboard (mails) are built from the same path
as the page's route (``meshclaw.dashboard_paths``), so renaming the page cannot leave
mails pointing at nothing."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from fastapi import FastAPI, routing
from fastapi.testclient import TestClient
from starlette.routing import compile_path

from meshclaw import dashboard_paths
from meshclaw.api.app import create_app
from meshclaw.dashboard_paths import outcome_page
from meshclaw.web import insights
from tests.accounts.passwords import cheap_hashing
from tests.conftest import World
from tests.outcomes.test_feedback_requests import BASE, mailed, requests
from tests.outcomes.test_outcomes import Start, call

PASSWORD = "a long test password"


def endpoints_for(app: FastAPI, path: str, method: str = "GET") -> list[object]:
    """The endpoints of the app's routes (as served, with their prefixes) that ``path``
    reaches with ``method``."""
    found = []
    for route in routing.iter_route_contexts(app.routes):
        if route.path and method in (route.methods or ()):
            regex, _, _ = compile_path(route.path)
            if regex.fullmatch(path):
                found.append(route.endpoint)
    return found


def test_an_outcome_page_link_reaches_the_outcome_page_route(
    make_world: Callable[..., World],
) -> None:
    app = create_app(make_world().platform)
    assert endpoints_for(app, outcome_page("out_01abc")) == [insights.outcome_page]
    assert outcome_page("out_01abc", base_url="https://mc.example/") == (
        "https://mc.example/ui/insights/outcomes/out_01abc"
    )
    assert outcome_page("out/../x") == "/ui/insights/outcomes/out%2F..%2Fx"  # one segment


def test_the_feedback_request_links_the_page_the_app_serves(
    scripted: Start, make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    cheap_hashing(monkeypatch)
    world, _ = mailed(scripted, make_world, call("mail.send", to=["bob@acme.test"]))
    (request,) = requests(world)
    (outcome,) = world.platform.outcomes.list_outcomes(world.alice)
    page = outcome_page(outcome.id, base_url=BASE)
    assert page in request.body
    # The link, opened by bob (signed in), is his outcome's page.
    world.platform.signin.set_password(world.bob.user_id, PASSWORD)
    with TestClient(create_app(world.platform), follow_redirects=False) as bob:
        signed = bob.post("/ui/login", data={"handle": "bob", "password": PASSWORD, "org": "",
                                             "next": "/ui/"})  # fmt: skip
        assert signed.status_code == 303, signed.text
        opened = bob.get(page.removeprefix(BASE))
    assert opened.status_code == 200
    assert "Accept" in opened.text and re.search(r'name="verdict"', opened.text)


def test_the_mail_follows_the_path_when_it_changes(
    scripted: Start, make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    # One place to change: the request text takes the path from dashboard_paths.
    monkeypatch.setattr(dashboard_paths, "OUTCOME_PAGE", "/outcomes/{outcome_id}/page")
    world, _ = mailed(scripted, make_world, call("mail.send", to=["bob@acme.test"]))
    (request,) = requests(world)
    (outcome,) = world.platform.outcomes.list_outcomes(world.alice)
    assert f"{BASE}/ui/outcomes/{outcome.id}/page" in request.body
    assert "/ui/insights/outcomes/" not in request.body
