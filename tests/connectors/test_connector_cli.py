"""``meshclaw connector ...`` end to end: the real CLI, a real store, a real MCP server."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from meshclaw.cli.main import app
from meshclaw.config import Settings
from meshclaw.platform import Platform
from tests.connectors.conftest import FIXTURE_SERVER


class Cli:
    def __init__(self, tmp_path: Path, store: str | None = None) -> None:
        self.home = tmp_path / "var"
        self.store = store
        self.env = {
            "MESHCLAW_HOME": str(self.home),
            "MESHCLAW_EMBEDDED_MODEL_SERVER": "false",
            "MESHCLAW_DATABASE_URL": store,
            "MESHCLAW_CONFIG": None,
            "MESHCLAW_TOKEN": None,
        }
        self.runner = CliRunner()

    def __call__(self, *args: str, token: str | None = None) -> Result:
        env = dict(self.env)
        if token is not None:
            env["MESHCLAW_TOKEN"] = token
        return self.runner.invoke(app, list(args), env=env)

    def json(self, *args: str, token: str | None = None) -> Any:
        result = self(*args, "--json", token=token)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, world_store: str | None
) -> tuple[Cli, str]:
    """A seeded demo store, and a platform admin's (carol's) token."""
    monkeypatch.chdir(tmp_path)
    run = Cli(tmp_path, world_store)
    assert run("demo", "seed").exit_code == 0
    created = run("token", "create", "--user", "carol", "--org", "acme")
    assert created.exit_code == 0, created.output
    return run, created.stdout.strip()


def test_add_tools_approve_and_test_a_connector(cli: tuple[Cli, str]) -> None:
    run, admin = cli
    added = run.json(
        "connector", "add", "fx", "--command", sys.executable, "--arg", str(FIXTURE_SERVER),
        token=admin,
    )  # fmt: skip
    assert added["transport"] == "stdio" and added["source"] == "store"

    listed = run.json("connector", "list")
    assert [c["name"] for c in listed] == ["fx"]
    assert listed[0]["tools"] == {}

    tools = run.json("connector", "tools", "fx")
    by_name = {t["tool"]: t for t in tools}
    assert by_name["fx.echo"]["status"] == "pending"
    assert by_name["fx.echo"]["action"] == "read" and by_name["fx.save"]["action"] == "write"
    assert len(by_name["fx.echo"]["definition_hash"]) == 64

    report = run.json("connector", "test", "fx")
    assert report["ok"] and report["tools"] == len(tools) and report["approved"] == 0
    assert report["server"]["name"] == "fixture" and report["server"]["protocol"]

    # Only a platform admin approves; alice (the demo's CLI token) may not.
    denied = run("connector", "approve", "fx", "--tool", "echo")
    assert denied.exit_code == 2
    assert "only a platform admin may approve" in denied.stderr

    stale = run("connector", "approve", "fx", "--tool", "echo", "--hash", "0" * 64, token=admin)
    assert stale.exit_code == 2 and "review it again" in stale.stderr
    echo_hash = by_name["fx.echo"]["definition_hash"]
    approved = run.json(
        "connector", "approve", "fx", "--tool", "echo", "--hash", echo_hash, token=admin
    )
    assert [(t["tool"], t["status"]) for t in approved] == [("fx.echo", "approved")]
    assert run.json("connector", "list")[0]["tools"] == {"approved": 1, "pending": 6}

    human = run("connector", "tools", "fx", "--no-refresh")
    assert human.exit_code == 0 and "fx.echo" in human.stdout and "approved" in human.stdout


def test_bad_input_gets_clear_errors_and_exit_codes(cli: tuple[Cli, str]) -> None:
    run, admin = cli
    no_command = run("connector", "add", "fx", token=admin)
    assert no_command.exit_code == 2
    assert "a stdio connector needs 'command'" in no_command.stderr
    bad_name = run("connector", "add", "Bad.Name", "--command", "x", token=admin)
    assert bad_name.exit_code == 2 and "must be lower case" in bad_name.stderr
    not_admin = run("connector", "add", "fx", "--command", "x")
    assert not_admin.exit_code == 2 and "only a platform admin" in not_admin.stderr
    missing = run("connector", "tools", "nope")
    assert missing.exit_code == 2 and "no connector 'nope'" in missing.stderr

    added = run("connector", "add", "gone", "--command", "/nonexistent/server", token=admin)
    assert added.exit_code == 0, added.output
    failed = run("connector", "test", "gone")
    assert failed.exit_code == 1
    assert "cannot connect to MCP server 'gone'" in failed.stdout
    assert run("connector", "add", "gone", "--command", "x", token=admin).exit_code == 2
    assert run("connector", "remove", "gone", token=admin).exit_code == 0
    assert run.json("connector", "list") == []


def test_serve_reports_missing_settings(cli: tuple[Cli, str]) -> None:
    run, _ = cli
    result = run("connector", "serve", "mail")
    assert result.exit_code == 2
    assert "MESHCLAW_MAIL_IMAP_HOST (field required)" in " ".join(result.stderr.split())
    unknown = run("connector", "serve", "nope")
    assert unknown.exit_code == 2 and "no built-in MCP server 'nope'" in unknown.stderr


def test_add_a_builtin_server_by_name(cli: tuple[Cli, str]) -> None:
    run, admin = cli
    added = run.json(
        "connector", "add", "mail", "--builtin", "mail",
        "--env", "MESHCLAW_MAIL_IMAP_HOST=imap.acme.test",
        "--credentials", "mail",
        "--credential-env", "MESHCLAW_MAIL_USERNAME=username",
        "--credential-env", "MESHCLAW_MAIL_PASSWORD=password",
        token=admin,
    )  # fmt: skip
    assert added["target"] == f"{sys.executable} -m meshclaw.connectors.servers mail"
    unknown = run("connector", "add", "x", "--builtin", "nope", token=admin)
    assert unknown.exit_code == 2 and "no built-in MCP server 'nope'" in unknown.stderr


def test_another_orgs_admin_neither_sees_nor_touches_the_connector(cli: tuple[Cli, str]) -> None:
    run, admin = cli
    added = run("connector", "add", "fx", "--command", sys.executable, token=admin)
    assert added.exit_code == 0, added.output
    platform = Platform(
        Settings(home=run.home, database_url=run.store, embedded_model_server=False)
    )
    try:
        globex = platform.accounts.create_org("globex")
        mallory = platform.accounts.create_user(globex.id, "mallory", role="platform_admin")
        other = platform.accounts.issue_token(mallory.id, "cli")
    finally:
        platform.close()
    assert run.json("connector", "list", token=other) == []
    for command in (("tools", "fx"), ("test", "fx"), ("approve", "fx", "--all"), ("remove", "fx")):
        refused = run("connector", *command, token=other)
        assert refused.exit_code == 2 and "no " in refused.stderr and "'fx'" in refused.stderr
    # globex may have an fx of its own; acme's is untouched.
    assert run("connector", "add", "fx", "--command", "x", token=other).exit_code == 0
    assert [c["target"] for c in run.json("connector", "list", token=admin)] == [sys.executable]
