"""``/metrics`` never crosses orgs: a person sees their org's series; the operator's
scrape token sees every org's."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from meshclaw.api.app import create_app
from meshclaw.providers.scripted import ScriptedServer
from tests.conftest import World, agent_yaml

SCRAPE_TOKEN = "scrape-" + "x" * 40


def _orgs_in(text: str) -> set[str]:
    """The ``org`` label of every sample in a Prometheus exposition."""
    return {
        sample.labels.get("org", "<none>")
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def two_orgs(
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[World, dict[str, str]]:
    """Acme ran an agent and has a team budget; globex has an org budget. Bearer tokens
    of acme's admin and employee and of globex's admin and auditor."""
    digest = hashlib.sha256(SCRAPE_TOKEN.encode()).hexdigest()
    monkeypatch.setenv("MESHCLAW_TELEMETRY__METRICS_SCRAPE_TOKEN_SHA256", digest)
    server = scripted({"turns": [{"reply": {"content": "done"}}]})
    world = make_world(server.base_url)
    world.save_agent(agent_yaml(name="acme-helper"))
    assert world.run("acme-helper").status == "succeeded"
    platform = world.platform
    platform.budgets.set(world.admin, scope="team", name="eng", metric="calls", period="day",
                         hard_cap="10", soft_cap=None)  # fmt: skip
    globex = platform.accounts.create_org("globex")
    accounts = platform.accounts
    mallory = accounts.caller_for(accounts.create_user(globex.id, "mallory", role="platform_admin"))
    gus = accounts.create_user(globex.id, "gus", role="auditor")
    platform.budgets.set(mallory, scope="org", name="", metric="calls", period="day",
                         hard_cap="5", soft_cap=None)  # fmt: skip
    tokens = {
        "acme_admin": accounts.issue_token(world.admin.user_id, "t"),
        "acme_employee": accounts.issue_token(world.alice.user_id, "t"),
        "globex_admin": accounts.issue_token(mallory.user_id, "t"),
        "globex_auditor": accounts.issue_token(gus.id, "t"),
        "globex": globex.id,
    }
    return world, tokens


def _get(client: TestClient, token: str) -> Any:
    return client.get("/metrics", headers={"Authorization": f"Bearer {token}"})


def test_each_org_sees_only_its_own_series(two_orgs: tuple[World, dict[str, str]]) -> None:
    world, tokens = two_orgs
    acme, globex = world.alice.org_id, tokens["globex"]
    with TestClient(create_app(world.platform)) as client:
        mine = _get(client, tokens["acme_admin"])
        theirs = _get(client, tokens["globex_admin"])
        audited = _get(client, tokens["globex_auditor"])
        refused = _get(client, tokens["acme_employee"])
    assert mine.status_code == 200 and _orgs_in(mine.text) == {acme}
    assert 'agent="acme-helper"' in mine.text and "meshclaw_runs_total" in mine.text
    for seen in (theirs, audited):
        assert seen.status_code == 200 and _orgs_in(seen.text) == {globex}
        assert 'scope="org"' in seen.text
        for acme_id in (acme, str(world.alice.team_id), "acme-helper", 'name="eng"'):
            assert acme_id not in seen.text
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert "metrics.read denied" in refused.json()["detail"]


def test_the_operator_scrape_token_sees_every_org(two_orgs: tuple[World, dict[str, str]]) -> None:
    world, tokens = two_orgs
    with TestClient(create_app(world.platform)) as client:
        scrape = _get(client, SCRAPE_TOKEN)
        wrong = _get(client, SCRAPE_TOKEN + "x")
        anonymous = client.get("/metrics")
    assert scrape.status_code == 200
    assert _orgs_in(scrape.text) == {world.alice.org_id, tokens["globex"]}
    # anything else is an ordinary bearer token, and this one is not valid
    assert wrong.status_code == 401 and anonymous.status_code == 401


def test_without_the_setting_no_bearer_opens_every_org(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    assert world.platform.settings.telemetry.metrics_scrape_token_sha256 is None
    with TestClient(create_app(world.platform)) as client:
        assert _get(client, SCRAPE_TOKEN).status_code == 401
        assert _get(client, "").status_code == 401
