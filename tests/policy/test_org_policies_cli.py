"""``meshclaw policy show|set|versions|diff``: the caller's org's own policies."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_agent_cli import Invoke, flat, home, meshclaw, ok_json, seeded

__all__ = ["home", "meshclaw", "seeded"]  # fixtures used below

NO_CRON = (
    '@id("org.no-cron-writes")\n'
    'forbid (principal, action == Action::"tool.write", resource)\n'
    'when { context.trigger == "cron" };\n'
)


def test_set_show_versions_and_diff(seeded: Invoke, tmp_path: Path) -> None:
    carol = seeded("token", "create", "--user", "carol", "--org", "acme").stdout.strip()
    policy = tmp_path / "org.cedar"
    policy.write_text(NO_CRON)

    refused = seeded("policy", "set", str(policy))  # alice, an employee
    assert refused.exit_code == 2 and "policy.manage denied" in flat(refused.stderr)

    saved = ok_json(seeded("policy", "set", str(policy), "--note", "no cron", "--token", carol,
                           "--json"))  # fmt: skip
    assert saved["version"] == 1 and saved["changed"]
    again = seeded("policy", "set", str(policy), "--token", carol)
    assert again.exit_code == 0 and "unchanged: version 1" in flat(again.stdout)

    policy.write_text(NO_CRON + "when { context.nope };\n")
    bad = seeded("policy", "set", str(policy), "--token", carol)
    assert bad.exit_code == 2
    assert "org.cedar: invalid policy set" in flat(bad.stderr) and "line 4" in flat(bad.stderr)

    shown = ok_json(seeded("policy", "show", "--json"))  # alice reads her org's rules
    assert shown == {"policies": NO_CRON.strip(), "version": 1}
    effective = ok_json(seeded("policy", "show", "--all", "--json"))["policies"]
    assert "tenant.isolation" in effective and "org.no-cron-writes" in effective
    text = flat(seeded("policy", "show").stdout)
    assert "org policies, version 1" in text

    listed = ok_json(seeded("policy", "versions", "--json"))
    assert [(v["version"], v["created_by"], v["note"]) for v in listed] == [(1, "carol", "no cron")]
    diff = json.loads(seeded("policy", "diff", "0", "1", "--json").stdout)["diff"]
    assert '+@id("org.no-cron-writes")' in diff
    missing = seeded("policy", "diff", "1", "9")
    assert missing.exit_code == 2 and "no version 9" in flat(missing.stderr)
