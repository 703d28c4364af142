"""``meshclaw agent ...`` end to end: the real Typer app on a real SQLite store."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from meshclaw.cli.main import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

Invoke = Callable[..., Result]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "var"


@pytest.fixture
def meshclaw(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, world_store: str | None
) -> Invoke:
    """Run ``meshclaw ARGS`` in-process on the test's store (SQLite under ``tmp_path``, or
    PostgreSQL in that pass); stderr is separate."""
    monkeypatch.chdir(tmp_path)
    env = {
        "MESHCLAW_HOME": str(home),
        "MESHCLAW_EMBEDDED_MODEL_SERVER": "false",
        "MESHCLAW_DATABASE_URL": world_store,
        "MESHCLAW_CONFIG": None,
        "MESHCLAW_TOKEN": None,
    }
    runner = CliRunner()

    def invoke(*args: str, env_extra: dict[str, str] | None = None) -> Result:
        return runner.invoke(app, list(args), env=env | (env_extra or {}))

    return invoke


@pytest.fixture
def seeded(meshclaw: Invoke) -> Invoke:
    """The demo org exists and ``<home>/cli-token`` holds alice's token."""
    result = meshclaw("demo", "seed")
    assert result.exit_code == 0, result.output
    return meshclaw


def ok_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def flat(text: str) -> str:
    """Rich wraps long lines at the console width; compare text with whitespace folded."""
    return " ".join(text.split())


def copy_example(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    target.write_text((EXAMPLES / name).read_text(encoding="utf-8"), encoding="utf-8")
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} must occur exactly once in {path.name}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def line_of(path: Path, fragment: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(n for n, line in enumerate(lines, start=1) if fragment in line)


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_validate_accepts_every_example(meshclaw: Invoke, tmp_path: Path, name: str) -> None:
    copy_example(tmp_path, name)

    result = meshclaw("agent", "validate", name)

    assert result.exit_code == 0, result.output
    assert flat(result.stdout) == f"valid: {name} (agent '{name.removesuffix('.yaml')}')"


def test_validate_json_for_a_valid_spec(meshclaw: Invoke) -> None:
    result = meshclaw("agent", "validate", str(EXAMPLES / "deploy-helper.yaml"), "--json")

    assert ok_json(result) == {"valid": True, "name": "deploy-helper"}


def test_validate_reports_each_problem_with_line_and_path(meshclaw: Invoke, tmp_path: Path) -> None:
    spec = copy_example(tmp_path, "deploy-helper.yaml")
    edit(
        spec,
        "  - name: deploy.trigger_pipeline\n    scope: write\n",
        "  - name: deploy.trigger_pipeline\n    scope: deploy\n",
    )
    edit(spec, "  timeout_seconds: 900", "  timeout_seconds: -1")

    result = meshclaw("agent", "validate", spec.name)  # relative: cwd is tmp_path

    assert result.exit_code == 2
    assert result.stdout == ""
    scope, timeout = line_of(spec, "scope: deploy"), line_of(spec, "timeout_seconds")
    assert flat(result.stderr) == (
        "error: deploy-helper.yaml: invalid agent spec (2 problem(s)): "
        f"line {scope}: tools[2].scope: Input should be 'read' or 'write' "
        f"line {timeout}: budget.timeout_seconds: Input should be greater than 0"
    )


def test_validate_reports_a_duplicate_key_with_line_and_path(
    meshclaw: Invoke, tmp_path: Path
) -> None:
    spec = copy_example(tmp_path, "deploy-helper.yaml")
    grant = "  - name: deploy.trigger_pipeline\n    scope: write\n"
    edit(spec, grant, grant + "    scope: read\n")
    duplicate = line_of(spec, "  - name: deploy.trigger_pipeline") + 2

    result = meshclaw("agent", "validate", spec.name)

    assert result.exit_code == 2
    assert f'line {duplicate}: tools[2].scope: YAML: found duplicate key "scope"' in flat(
        result.stderr
    )


def test_validate_json_lists_every_error(meshclaw: Invoke, tmp_path: Path) -> None:
    spec = copy_example(tmp_path, "ticket-updater.yaml")
    edit(spec, "  - name: tickets.*", "  - name: Tickets")
    edit(spec, "  - type: webhook", "  - type: pager")
    edit(spec, "  max_steps: 15", "  max_steps: 0")

    result = meshclaw("agent", "validate", str(spec), "--json")

    assert result.exit_code == 2
    assert json.loads(result.stdout) == {
        "valid": False,
        "errors": [
            {
                "path": "tools[0].name",
                "message": "must be 'connector.tool' or 'connector.*' (lower case)",
                "line": line_of(spec, "name: Tickets"),
            },
            {
                "path": "triggers[0].type",
                "message": "unknown type 'pager'; expected one of "
                "'manual', 'api', 'cron', 'webhook', 'chat', 'mail'",
                "line": line_of(spec, "type: pager"),
            },
            {
                "path": "budget.max_steps",
                "message": "Input should be greater than or equal to 1",
                "line": line_of(spec, "max_steps"),
            },
        ],
    }


def test_validate_a_file_that_does_not_exist(meshclaw: Invoke) -> None:
    result = meshclaw("agent", "validate", "nope.yaml")

    assert result.exit_code == 2
    assert "nope.yaml: invalid agent spec (1 problem(s)): <document>: cannot read file" in flat(
        result.stderr
    )


def test_validate_prints_messages_verbatim(meshclaw: Invoke, tmp_path: Path) -> None:
    spec = copy_example(tmp_path, "doc-publisher.yaml")
    edit(spec, "name: doc-publisher", "name: Doc_Publisher")

    result = meshclaw("agent", "validate", str(spec))

    assert result.exit_code == 2
    assert "String should match pattern '^[a-z][a-z0-9-]{1,62}$'" in result.stderr


def test_create_list_show_versions_diff(seeded: Invoke, tmp_path: Path) -> None:
    spec = copy_example(tmp_path, "mail-triage.yaml")

    created = ok_json(seeded("agent", "create", str(spec), "--json"))
    assert created["changed"] is True
    assert (created["name"], created["version"], created["owner"]) == ("mail-triage", 1, "alice")
    assert created["model"] == "scripted/scripted-demo"
    assert created["tools"] == [
        "mail.list_messages",
        "mail.search",
        "mail.read_message",
        "mail.move_message",
        "mail.flag_message",
        "mail.send",
    ]
    assert created["outcomes"] == ["mail_sent"]

    again = ok_json(seeded("agent", "create", str(spec), "--json"))
    assert (again["changed"], again["version"], again["id"]) == (False, 1, created["id"])

    edit(spec, "  max_steps: 40", "  max_steps: 30")
    changed = ok_json(seeded("agent", "create", str(spec), "--json"))
    assert (changed["changed"], changed["version"]) == (True, 2)

    listed = ok_json(seeded("agent", "list", "--json"))
    assert {a["name"]: a["version"] for a in listed} == {"daily-notes": 1, "mail-triage": 2}

    shown = ok_json(seeded("agent", "show", "mail-triage", "--json"))
    assert (shown["version"], shown["shown_version"]) == (2, 2)
    assert "  max_steps: 30\n" in shown["spec_yaml"]
    old = ok_json(seeded("agent", "show", "mail-triage", "--version", "1", "--json"))
    assert old["shown_version"] == 1
    assert "  max_steps: 40\n" in old["spec_yaml"]

    versions = ok_json(seeded("agent", "versions", "mail-triage", "--json"))
    assert [v["version"] for v in versions] == [1, 2]
    assert set(versions[0]) == {"version", "spec_hash", "created_by", "created_at"}
    assert versions[0]["spec_hash"] != versions[1]["spec_hash"]

    diff = ok_json(seeded("agent", "diff", "mail-triage", "1", "2", "--json"))
    assert (diff["agent"], diff["old"], diff["new"]) == ("mail-triage", 1, 2)
    changes = [line for line in diff["diff"].splitlines() if line[:1] in "+-"]
    assert changes == ["--- v1", "+++ v2", "-  max_steps: 40", "+  max_steps: 30"]


def test_human_output_of_create_and_diff(seeded: Invoke, tmp_path: Path) -> None:
    spec = copy_example(tmp_path, "standup-scheduler.yaml")

    first = seeded("agent", "create", str(spec))
    same = seeded("agent", "create", str(spec))
    edit(spec, "  max_steps: 12", "  max_steps: 8")
    second = seeded("agent", "create", str(spec))
    diff = seeded("agent", "diff", "standup-scheduler", "1", "2")

    assert [r.exit_code for r in (first, same, second, diff)] == [0, 0, 0, 0]
    assert flat(first.stdout) == "saved standup-scheduler version 1"
    assert flat(same.stdout) == "standup-scheduler unchanged (version 1)"
    assert flat(second.stdout) == "saved standup-scheduler version 2"
    assert "-  max_steps: 12" in diff.stdout
    assert "+  max_steps: 8" in diff.stdout


def test_create_an_invalid_spec_saves_nothing(seeded: Invoke, tmp_path: Path) -> None:
    spec = copy_example(tmp_path, "doc-publisher.yaml")
    edit(spec, "    scope: write", "    scope: admin")

    result = seeded("agent", "create", str(spec), "--json")

    assert result.exit_code == 2
    assert f"line {line_of(spec, 'scope: admin')}: tools[0].scope:" in flat(result.stderr)
    assert [a["name"] for a in ok_json(seeded("agent", "list", "--json"))] == ["daily-notes"]


def test_create_for_another_user_is_refused(seeded: Invoke, tmp_path: Path) -> None:
    issued = seeded("token", "create", "--user", "bob", "--org", "acme")
    assert issued.exit_code == 0, issued.output
    bob_token = issued.stdout.strip()

    result = seeded("agent", "create", str(EXAMPLES / "mail-triage.yaml"), "--token", bob_token)

    assert result.exit_code == 2
    assert "you can only create agents that you own" in flat(result.stderr)


def test_the_token_can_come_from_the_environment(seeded: Invoke, tmp_path: Path) -> None:
    carol = seeded("token", "create", "--user", "carol", "--org", "acme").stdout.strip()
    (tmp_path / "var" / "cli-token").unlink()  # no fallback to alice's token

    created = ok_json(
        seeded(
            "agent",
            "create",
            str(EXAMPLES / "deploy-helper.yaml"),
            "--json",
            env_extra={"MESHCLAW_TOKEN": carol},
        )
    )

    assert (created["name"], created["owner"]) == ("deploy-helper", "alice")


def test_an_owner_that_does_not_exist(seeded: Invoke, tmp_path: Path) -> None:
    spec = copy_example(tmp_path, "doc-publisher.yaml")
    edit(spec, "owner: alice", "owner: mallory")

    result = seeded("agent", "create", str(spec))

    assert result.exit_code == 2
    assert "owner: no user 'mallory' in this org" in flat(result.stderr)


def test_unknown_agent_and_version(seeded: Invoke) -> None:
    missing = seeded("agent", "show", "nope", "--json")
    no_version = seeded("agent", "show", "daily-notes", "--version", "7", "--json")
    bad_diff = seeded("agent", "diff", "daily-notes", "1", "7")

    assert [r.exit_code for r in (missing, no_version, bad_diff)] == [2, 2, 2]
    assert "no agent 'nope'" in flat(missing.stderr)
    assert "no version 7" in flat(no_version.stderr)
    assert missing.stdout == no_version.stdout == ""


def test_a_missing_token_is_a_clear_error(meshclaw: Invoke) -> None:
    result = meshclaw("agent", "list", "--json")

    assert result.exit_code == 2
    assert result.stdout == ""
    assert flat(result.stderr) == (
        "error: no API token: pass --token, set MESHCLAW_TOKEN, or run `meshclaw demo seed`"
    )


def test_a_wrong_token_is_refused(seeded: Invoke) -> None:
    result = seeded("agent", "list", "--token", "mc_not-a-real-token")

    assert result.exit_code == 2
    assert flat(result.stderr) == "error: invalid or revoked API token"


def test_validate_needs_no_token_or_store(meshclaw: Invoke, home: Path) -> None:
    result = meshclaw("agent", "validate", str(EXAMPLES / "mail-triage.yaml"), "--json")

    assert ok_json(result)["valid"] is True
    assert not home.exists()
