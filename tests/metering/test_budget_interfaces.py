"""Budgets over the API and the CLI, and usage by period over the API."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from meshclaw.api.app import create_app
from meshclaw.cli.main import app
from tests.conftest import World


def bearer(world: World, who: str) -> dict[str, str]:
    caller = getattr(world, who)
    token = world.platform.accounts.issue_token(caller.user_id, "test")
    return {"Authorization": f"Bearer {token}"}


def test_budgets_and_usage_over_http(ran_world: World) -> None:
    with TestClient(create_app(ran_world.platform)) as client:
        admin, alice = bearer(ran_world, "admin"), bearer(ran_world, "alice")
        assert client.get("/v1/budgets").status_code == 401
        body = {
            "scope": "team",
            "name": "eng",
            "metric": "cost",
            "period": "month",
            "hard_cap": "2",
        }
        assert client.put("/v1/budgets", json=body, headers=alice).status_code == 403
        created = client.put("/v1/budgets", json=body, headers=admin)
        assert created.status_code == 200, created.text
        assert created.json()["hard_cap"] == "$2"
        assert created.json()["spent"] != "$0"  # the run already spent this month
        bad = client.put("/v1/budgets", json=body | {"period": "year"}, headers=admin)
        assert bad.status_code == 400
        listed = client.get("/v1/budgets", headers=alice).json()
        assert [b["name"] for b in listed] == ["eng"]
        usage = client.get(
            "/v1/usage", params={"group_by": "model", "period": "month"}, headers=admin
        ).json()
        assert usage["period"] == "month" and usage["rows"][0]["period"].endswith("-01")
        dry = client.post("/v1/usage/reprice", json={"dry_run": True}, headers=admin)
        assert dry.status_code == 200 and dry.json()["examined"] == 2
        gone = client.delete(f"/v1/budgets/{created.json()['id']}", headers=admin)
        assert gone.status_code == 204
        assert client.get("/v1/budgets", headers=admin).json() == []


def test_budget_cli(ran_world: World) -> None:
    platform = ran_world.platform
    env = {
        "MESHCLAW_HOME": str(platform.settings.home),
        "MESHCLAW_EMBEDDED_MODEL_SERVER": "false",
        "MESHCLAW_DATABASE_URL": platform.settings.resolved_database_url(),
        "MESHCLAW_CONFIG": None,
        "MESHCLAW_TOKEN": platform.accounts.issue_token(ran_world.admin.user_id, "cli"),
    }
    runner = CliRunner()
    made = runner.invoke(
        app,
        [
            "budget",
            "set",
            "agent",
            "helper",
            "--metric",
            "calls",
            "--period",
            "minute",
            "--hard",
            "60",
            "--json",
        ],
        env=env,
    )
    assert made.exit_code == 0, made.output
    budget = json.loads(made.stdout)
    assert (budget["scope"], budget["name"], budget["hard_cap"]) == ("agent", "helper", "60 calls")
    listed = runner.invoke(app, ["budget", "list", "--json"], env=env)
    assert [b["id"] for b in json.loads(listed.stdout)] == [budget["id"]]
    assert runner.invoke(app, ["budget", "list"], env=env).exit_code == 0
    bad = runner.invoke(app, ["budget", "set", "planet", "x", "--hard", "1"], env=env)
    assert bad.exit_code == 2
    assert runner.invoke(app, ["budget", "delete", budget["id"]], env=env).exit_code == 0
