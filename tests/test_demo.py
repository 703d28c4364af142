"""`make run`'s demo: the stand-in apps, the demo org's connectors, a real outcome.

``meshclaw serve --demo`` in a subprocess (as `make run` starts it, on a free port, the
demo's own scripted model): ticket-updater from examples/ resolves OPS-1 in the local
GitHub-shaped tracker, the tracker has the change, and the run's outcome is verified by
reading the ticket back. A second start keeps the state and adds nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshclaw.demo_apps import DemoApps
from meshclaw.demo_apps._mail import dovecot_binary
from tests.serve_process import serve_demo

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DEMO_MAIL_SERVER = ROOT / "scripts" / "demo-mail-server"


def _wait_for_run(http: httpx.Client, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        run: dict[str, Any] = http.get(f"/v1/runs/{run_id}").json()
        if run["status"] not in ("queued", "running") or time.monotonic() > deadline:
            return run
        time.sleep(0.1)  # polling the API for the run's end, bounded by the deadline


def _outcomes_of(http: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    """The run's outcomes, once the run says they are recorded (``outcomes_settled_at``:
    verification reads the tracker after the run's end)."""
    deadline = time.monotonic() + 30
    while not http.get(f"/v1/runs/{run_id}").json()["outcomes_settled_at"]:
        assert time.monotonic() < deadline, f"the outcomes of {run_id} were never recorded"
        time.sleep(0.1)  # polling the API, bounded by the deadline
    return [o for o in http.get("/v1/outcomes").json() if o["run_id"] == run_id]


def _ticket(home: Path, output: list[str], number: int) -> dict[str, Any]:
    """The ticket as the stand-in tracker serves it (GitHub's REST shape)."""
    url = next(re.search(r"GitHub REST fake at (\S+)", x) for x in output if "GitHub REST" in x)
    assert url is not None
    token = json.loads((home / "demo-apps" / "secrets.json").read_text())["tickets-token"]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url.group(1), headers=headers, timeout=10) as tracker:
        issue: dict[str, Any] = tracker.get(f"/repos/acme/ops/issues/{number}").json()
        issue["comment_list"] = tracker.get(f"/repos/acme/ops/issues/{number}/comments").json()
    return issue


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_make_run_demo_resolves_a_ticket_in_the_stand_in_with_a_verified_outcome(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    home = tmp_path / "var"
    env = os.environ | {
        "MESHCLAW_HOME": str(home),
        "MESHCLAW_CONFIG": str(tmp_path / "absent.toml"),
        "MESHCLAW_WEB__OPEN_BROWSER": "false",
    }
    env.pop("MESHCLAW_PROVIDERS", None)
    spec = (EXAMPLES / "ticket-updater.yaml").read_text()
    # As root, dovecot's user cannot reach pytest's tmp_path: the maildirs go elsewhere.
    digest = hashlib.sha256(str((home / "demo-apps" / "mail").resolve()).encode()).hexdigest()
    request.addfinalizer(
        lambda: shutil.rmtree(
            Path(tempfile.gettempdir()) / f"meshclaw-demo-mail-{digest[:12]}", ignore_errors=True
        )
    )

    with serve_demo(env, tmp_path) as (address, output):
        printed = "".join(output)
        assert "demo apps (state under" in printed
        for connector in ("tickets", "chat", "calendar", "docs", "deploy", "mail"):
            assert re.search(rf"^  {connector} +\S", printed, re.M), printed
        assert "not ready" not in printed, printed
        secrets = json.loads((home / "demo-apps" / "secrets.json").read_text())
        assert not [s for s in secrets.values() if s in printed]  # no secret in the output

        token = (home / "cli-token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=address, headers=headers, timeout=30) as http:
            connectors = {c["name"]: c for c in http.get("/v1/connectors").json()}
            assert connectors["tickets"]["tools"] == {"approved": 9}, connectors["tickets"]
            created = http.post("/v1/agents", json={"spec_yaml": spec})
            assert created.status_code == 201, created.text
            started = http.post(
                "/v1/runs", json={"agent": "ticket-updater", "input": "OPS ticket 1 changed"}
            )
            assert started.status_code == 202, started.text
            run = _wait_for_run(http, started.json()["id"])
            assert run["status"] == "succeeded", run
            tools = [s["name"] for s in run["steps"] if s["kind"] == "tool"]
            assert tools[:2] == ["tickets.get_ticket", "tickets.resolve"], run["steps"]

            issue = _ticket(home, output, 1)
            assert (issue["state"], issue["state_reason"]) == ("closed", "completed")
            assert "Resolved by ticket-updater" in issue["comment_list"][-1]["body"]

            [outcome] = _outcomes_of(http, run["id"])
            assert outcome["type"] == "ticket_resolved"
            assert outcome["verified"] is True, outcome
            assert outcome["ref"] == "acme/ops#1"
            assert "reported by bob" in outcome["verification"]["checked"]

    # The tracker's state is kept under the demo home; a second start adds nothing twice.
    kept = json.loads((home / "demo-apps" / "tickets.json").read_text())
    assert kept["repos"]["acme/ops"][0]["state"] == "closed"
    with serve_demo(env, tmp_path) as (address, output):
        assert "seeded the demo org" not in "".join(output)
        assert _ticket(home, output, 1)["state"] == "closed"
        with httpx.Client(base_url=address, headers=headers, timeout=30) as http:
            names = [c["name"] for c in http.get("/v1/connectors").json()]
            assert sorted(names) == ["calendar", "chat", "deploy", "docs", "mail", "tickets"]
            assert all(c["tools"].keys() == {"approved"} for c in http.get("/v1/connectors").json())


def test_without_dovecot_the_demo_runs_without_mail_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("meshclaw.demo_apps._mail.dovecot_binary", lambda: None)
    with DemoApps(tmp_path / "demo-apps", only=["tickets", "mail"]) as apps:
        assert [s.connector for s in apps.running] == ["tickets"]
        assert apps.skipped["mail"].startswith("dovecot is not installed (Debian: apt-get")
        assert apps.summary()[-1].startswith("mail      not started: dovecot is not installed")
    assert apps.running == []


def test_make_run_sees_to_the_demo_mailbox_before_it_serves() -> None:
    planned = subprocess.run(
        ["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    mail = next(i for i, line in enumerate(planned) if "scripts/demo-mail-server" in line)
    serve = next(i for i, line in enumerate(planned) if "meshclaw serve --demo" in line)
    assert mail < serve


@pytest.mark.skipif(dovecot_binary() is None, reason="dovecot is not installed here")
def test_with_dovecot_installed_the_mail_server_step_does_nothing() -> None:
    done = subprocess.run(["sh", str(DEMO_MAIL_SERVER)], capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_without_dovecot_the_step_installs_nothing_when_told_not_to_and_says_so(
    tmp_path: Path,
) -> None:
    # This machine's dovecot, out of sight: not on PATH, not where Debian puts it.
    script = tmp_path / "demo-mail-server"
    script.write_text(DEMO_MAIL_SERVER.read_text().replace("/usr/sbin/dovecot", "/nonexistent"))
    env = {"PATH": "/usr/bin:/bin", "MESHCLAW_DEMO_INSTALL_MAIL": "no"}
    assert shutil.which("dovecot", path=env["PATH"]) is None
    done = subprocess.run(["sh", str(script)], capture_output=True, text=True, env=env)
    assert done.returncode == 0
    assert done.stderr == (
        "note: dovecot is not installed and MESHCLAW_DEMO_INSTALL_MAIL=no: "
        "the demo starts without its mailbox\n"
    )
