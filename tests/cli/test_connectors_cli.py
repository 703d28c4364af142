"""``meshclaw connector list`` says when a settings connector belongs to no org."""

from __future__ import annotations

import json

from tests.cli.conftest import WorldCli


def test_a_settings_connector_naming_no_org_is_reported_not_dropped(world_cli: WorldCli) -> None:
    connectors = {
        "ghost": {"command": "ghost-server", "org": "no-such-org"},
        "plain": {"command": "plain-server"},
    }
    result = world_cli(
        "connector", "list", "--json", env={"MESHCLAW_CONNECTORS": json.dumps(connectors)}
    )

    assert result.exit_code == 0, result.output
    assert [c["name"] for c in json.loads(result.stdout)] == ["plain"]
    warning = " ".join(result.stderr.split())
    assert "settings connector 'ghost' names org 'no-such-org', which does not exist" in warning
