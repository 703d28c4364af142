"""``meshclaw policy ...`` end to end on a real store with the demo org."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meshclaw.cli.main import app
from meshclaw.errors import PermissionDenied
from meshclaw.providers.scripted import ScriptedServer
from tests.cli.test_agent_cli import Invoke, flat, home, meshclaw, ok_json, seeded
from tests.conftest import World, agent_yaml, store_url_of

__all__ = ["home", "meshclaw", "seeded"]  # fixtures used by the tests below


def test_explain_allowed_denied_and_held_calls(seeded: Invoke) -> None:
    note = '{"title": "standup", "body": "done"}'
    allowed = seeded("policy", "explain", "daily-notes", "--tool", "notes.write", "--args", note)
    assert allowed.exit_code == 0, allowed.output
    assert "allow: permitted by spec.grant notes.write write" in flat(allowed.stdout)

    held = seeded(
        "policy",
        "explain",
        "daily-notes",
        "--tool",
        "notes.write",
        "--args",
        note,
        "--untrusted",
        "--json",
    )
    assert held.exit_code == 1
    data = json.loads(held.stdout)
    assert data["needs_approval"] and data["policies"] == ["approval.write-after-untrusted"]
    assert (
        "context.untrusted_content_seen" in data["policy_texts"]["approval.write-after-untrusted"]
    )

    denied = seeded("policy", "explain", "daily-notes", "--tool", "notes.list")
    assert denied.exit_code == 1
    assert "deny by default" in flat(denied.stdout)

    model = ok_json(seeded("policy", "explain", "daily-notes", "--model", "--json"))
    assert model["allowed"] and model["checks"][0]["action"] == "model.invoke"


def test_explain_rejects_bad_input(seeded: Invoke) -> None:
    both = seeded("policy", "explain", "daily-notes", "--tool", "notes.write", "--model")
    assert both.exit_code == 2 and "exactly one of" in flat(both.stderr)
    bad_args = seeded("policy", "explain", "daily-notes", "--tool", "notes.write", "--args", "[1]")
    assert bad_args.exit_code == 2 and "JSON object" in flat(bad_args.stderr)
    unknown = seeded("policy", "explain", "daily-notes", "--tool", "mail.send")
    assert unknown.exit_code == 2 and "no tool 'mail.send'" in flat(unknown.stderr)


def test_validate_reports_policy_and_line(meshclaw: Invoke, tmp_path: Path) -> None:
    good = tmp_path / "good.cedar"
    good.write_text(
        '@id("org.no-cron-deploys")\nforbid (principal, action == Action::"tool.write",'
        ' resource in Connector::"deploy")\nwhen { context.trigger == "cron" };\n'
    )
    assert meshclaw("policy", "validate", str(good)).exit_code == 0
    bad = tmp_path / "bad.cedar"
    bad.write_text(
        good.read_text() + '\n@id("org.typo")\npermit (principal, action, resource)\n'
        "when { context.untrusted };\n"
    )
    result = meshclaw("policy", "validate", str(bad))
    assert result.exit_code == 2
    assert "line 5: org.typo: for policy `org.typo`, attribute `untrusted`" in flat(result.stderr)
    data = json.loads(meshclaw("policy", "validate", str(bad), "--json").stdout)
    assert not data["valid"] and {e["line"] for e in data["errors"]} == {5}
    missing = meshclaw("policy", "validate", str(tmp_path / "nope.cedar"))
    assert missing.exit_code == 2 and "cannot read policy file" in flat(missing.stderr)


def test_show_and_schema(seeded: Invoke) -> None:
    compiled = ok_json(seeded("policy", "show", "daily-notes", "--json"))["policies"]
    assert '@id("spec.grant notes.write write")' in compiled
    active = ok_json(seeded("policy", "show", "--all", "--json"))["policies"]
    assert '@id("tenant.isolation")' in active
    own = ok_json(seeded("policy", "show", "--json"))
    assert own == {"policies": "", "version": 0}  # the demo org has none of its own
    schema = ok_json(seeded("policy", "schema", "--json"))["schema"]
    assert 'action "tool.argument"' in schema


def test_an_invalid_policy_file_stops_the_platform(meshclaw: Invoke, tmp_path: Path) -> None:
    bad = tmp_path / "org.cedar"
    bad.write_text("permit (principal, action, resource) when { 1 + };\n")
    result = meshclaw("policy", "show", env_extra={"MESHCLAW_POLICY_FILE": str(bad)})
    assert result.exit_code == 2
    assert "org.cedar: invalid policy set" in flat(result.stderr)
    assert "line 1" in flat(result.stderr)


def test_policy_over_the_api(make_world: Callable[..., World]) -> None:
    from fastapi.testclient import TestClient

    from meshclaw.api.app import create_app

    world = make_world()
    world.save_agent(agent_yaml())
    accounts = world.platform.accounts

    def auth(who: str) -> dict[str, str]:
        user_id = getattr(world, who).user_id
        return {"Authorization": f"Bearer {accounts.issue_token(user_id, 'test')}"}

    with TestClient(create_app(world.platform)) as client:
        body = {"agent": "helper", "tool": "notes.write", "arguments": {"title": "t", "body": "b"}}
        ok = client.post("/v1/policy/explain", json=body, headers=auth("alice")).json()
        assert ok["allowed"] and ok["checks"][0]["action"] == "tool.write"
        held = client.post(
            "/v1/policy/explain", json=body | {"untrusted": True}, headers=auth("alice")
        ).json()
        assert held["needs_approval"] and "approval.write-after-untrusted" in held["policy_texts"]
        model = client.post("/v1/policy/explain", json={"agent": "helper"}, headers=auth("bob"))
        assert model.json()["allowed"]  # any employee may read the org's agents
        missing = client.post(
            "/v1/policy/explain",
            json={"agent": "helper", "tool": "mail.send"},
            headers=auth("alice"),
        )
        assert missing.status_code == 404
        bad = {"policies": '@id("x")\nforbid (principal, action, resource) when { context.nope };'}
        assert (
            client.post("/v1/policy/validate", json=bad, headers=auth("alice")).status_code == 403
        )
        checked = client.post("/v1/policy/validate", json=bad, headers=auth("admin")).json()
        assert not checked["valid"] and {e["line"] for e in checked["errors"]} == {1}
        assert client.post("/v1/policy/explain", json=body).status_code == 401


def test_the_install_policy_file_is_the_operators_and_applies_to_every_org(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from meshclaw.api.app import create_app
    from meshclaw.config import Settings
    from meshclaw.platform import Platform

    world = make_world()
    world.save_agent(agent_yaml())
    accounts = world.platform.accounts
    globex = accounts.create_org("globex")
    eve = accounts.caller_for(accounts.create_user(globex.id, "eve", role="platform_admin"))
    world.save_agent(agent_yaml().replace("owner: alice", "owner: eve"), eve)
    policy_file = tmp_path / "install.cedar"
    policy_file.write_text(
        '@id("install.no-runs")\nforbid (principal, action == Action::"run.start", resource);\n'
    )
    settings = Settings(
        home=world.platform.settings.home,
        database_url=world.platform.settings.database_url,
        embedded_model_server=False,
        policy_file=policy_file,
    )
    restarted = Platform(settings, apply_migrations=False)  # read when a process starts
    try:
        for caller in (world.alice, eve):
            with pytest.raises(PermissionDenied, match=r"install\.no-runs"):
                restarted.runs.create(caller, "helper")
        root = {"Authorization": f"Bearer {accounts.issue_token(world.admin.user_id, 't')}"}
        with TestClient(create_app(restarted)) as client:
            # No org's admin reloads (or sees as their own) what applies to every org.
            assert client.post("/v1/policy/reload", headers=root).status_code in (404, 405)
            assert client.get("/v1/policy", headers=root).json()["policies"] == ""
    finally:
        restarted.close()


def test_why_explains_a_recorded_step_under_todays_policies(
    scripted: Callable[[dict[str, object]], ScriptedServer],
    make_world: Callable[..., World],
    tmp_path: Path,
) -> None:
    server = scripted(
        {
            "turns": [
                {
                    "reply": {
                        "tool_calls": [
                            {"name": "notes.write", "arguments": {"title": "t", "body": "b"}}
                        ]
                    }
                },
                {"reply": {"content": "done"}},
            ]
        }
    )
    world = make_world(server.base_url)
    world.save_agent(agent_yaml())
    run = world.run("helper")
    assert run.status == "succeeded", run.error
    runner = CliRunner()
    org = tmp_path / "org.cedar"
    org.write_text(
        '@id("org.no-notes")\nforbid (principal, action, resource in Connector::"notes");\n'
    )
    env = {
        "MESHCLAW_HOME": str(tmp_path / "var"),
        "MESHCLAW_EMBEDDED_MODEL_SERVER": "false",
        "MESHCLAW_DATABASE_URL": store_url_of(tmp_path),
        "MESHCLAW_CONFIG": None,
        "MESHCLAW_TOKEN": world.platform.accounts.issue_token(world.alice.user_id, "cli"),
    }
    same = runner.invoke(app, ["policy", "why", run.id, "2", "--json"], env=env)
    assert same.exit_code == 0, same.output
    data = json.loads(same.stdout)
    assert data["allowed"] and data["recorded"].startswith("allow")
    assert data["checks"][0]["context"]["untrusted_content_seen"] is False
    stricter = runner.invoke(
        app, ["policy", "why", run.id, "2"], env=env | {"MESHCLAW_POLICY_FILE": str(org)}
    )
    text = flat(stricter.stdout)
    assert "recorded: allow" in text and "forbidden by org.no-notes" in text
    missing = runner.invoke(app, ["policy", "why", run.id, "99"], env=env)
    assert missing.exit_code == 2 and "no step 99" in flat(missing.stderr)
    model = runner.invoke(app, ["policy", "why", run.id, "1", "--json"], env=env)
    assert json.loads(model.stdout)["checks"][0]["action"] == "model.invoke"
