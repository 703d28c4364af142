"""What ``meshclaw policy explain`` prints: whole policy texts when piped, and a tool an admin
has not approved named as such rather than as a typo."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.cli.test_agent_cli import Invoke, flat, home, meshclaw, seeded
from tests.connectors.conftest import FIXTURE_SERVER

__all__ = ["home", "meshclaw", "seeded"]  # fixtures used by the tests below

# One line well past the 80 columns Rich assumes when stdout is not a terminal.
LONG_CONDITION = 'when { context.trigger == "manual" && context.run_id != "' + "x" * 80 + '" };'


def _admin_token(seeded: Invoke) -> str:
    created = seeded("token", "create", "--user", "carol", "--org", "acme")
    assert created.exit_code == 0, created.output
    return created.stdout.strip()


def test_piped_explain_prints_each_deciding_policy_whole(seeded: Invoke, tmp_path: Path) -> None:
    policy = tmp_path / "org.cedar"
    policy.write_text(
        '@id("org.no-long-titles")\n'
        'forbid (principal, action == Action::"tool.write", resource in Connector::"notes")\n'
        f"{LONG_CONDITION}\n"
    )
    admin = _admin_token(seeded)
    saved = seeded("policy", "set", str(policy), "--token", admin)
    assert saved.exit_code == 0, saved.output

    note = '{"title": "standup", "body": "done"}'
    denied = seeded("policy", "explain", "daily-notes", "--tool", "notes.write", "--args", note)
    assert denied.exit_code == 1
    assert "forbidden by org.no-long-titles" in flat(denied.stdout)
    assert LONG_CONDITION in denied.stdout.splitlines()  # one line, not cut at 80 columns

    shown = seeded("policy", "show")
    assert shown.exit_code == 0 and LONG_CONDITION in shown.stdout.splitlines()


def test_explain_names_a_tool_waiting_for_approval(seeded: Invoke) -> None:
    admin = _admin_token(seeded)
    added = seeded(
        "connector", "add", "fx", "--command", sys.executable, "--arg", str(FIXTURE_SERVER),
        "--token", admin,
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert seeded("connector", "tools", "fx", "--token", admin).exit_code == 0  # seen, pending

    pending = seeded("policy", "explain", "daily-notes", "--tool", "fx.echo")
    assert pending.exit_code == 2
    message = flat(pending.stderr)
    assert "fx.echo is not approved yet" in message
    assert "meshclaw connector approve fx --tool echo" in message

    typo = seeded("policy", "explain", "daily-notes", "--tool", "fx.nope")
    assert typo.exit_code == 2 and "no tool 'fx.nope'" in flat(typo.stderr)
