"""The demo model's script drives more than the ticket updater (see test_demo.py for that).

One ``meshclaw serve --demo`` (as `make run` starts it) for the module: each example the
server suggests trying, run with the input it prints, does real work in its stand-in —
a handbook page on WsgiDAV, a pipeline run for the git repository's head, a flag in
dovecot and a digest through aiosmtpd — and records a verified outcome of its type,
checked by the platform against the connector's answers.
"""

from __future__ import annotations

import hashlib
import json
import mailbox
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from imapclient import IMAPClient

from meshclaw.demo import DEMO_TRIES, try_commands
from meshclaw.demo_apps._mail import MAILBOX
from tests.serve_process import serve_demo
from tests.test_demo import EXAMPLES, _outcomes_of, _wait_for_run


@dataclass(frozen=True)
class Demo:
    home: Path
    output: str
    http: httpx.Client

    def secret(self, key: str) -> str:
        secrets: dict[str, str] = json.loads((self.home / "demo-apps/secrets.json").read_text())
        return secrets[key]

    def port(self, key: str) -> int:
        ports: dict[str, int] = json.loads((self.home / "demo-apps/ports.json").read_text())
        return ports[key]

    def printed_input(self, agent: str) -> str:
        """The input of the run command ``serve`` printed for ``agent``."""
        line = re.search(rf"meshclaw run {agent} --input (.+) -f$", self.output, re.M)
        assert line is not None, self.output
        [given] = shlex.split(line.group(1))
        return given

    def run(self, agent: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Create ``agent`` from examples/, run it with the printed input: (run, outcome)."""
        spec = (EXAMPLES / f"{agent}.yaml").read_text()
        created = self.http.post("/v1/agents", json={"spec_yaml": spec})
        assert created.status_code == 201, created.text
        started = self.http.post(
            "/v1/runs", json={"agent": agent, "input": self.printed_input(agent)}
        )
        assert started.status_code == 202, started.text
        run = _wait_for_run(self.http, started.json()["id"])
        assert run["status"] == "succeeded", run
        [outcome] = _outcomes_of(self.http, run["id"])
        assert outcome["type"] == next(t.outcome for t in DEMO_TRIES if t.agent == agent)
        return run, outcome


def _tools(run: dict[str, Any]) -> list[str]:
    """The tools the agent called (that worked): the steps before the model's answer, not
    the platform's verification read after it."""
    answer = max(s["seq"] for s in run["steps"] if s["kind"] == "model")
    return [
        s["name"]
        for s in run["steps"]
        if s["kind"] == "tool" and s["status"] == "ok" and s["seq"] < answer
    ]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    root = tmp_path_factory.mktemp("demo")
    home = root / "var"
    env = os.environ | {
        "MESHCLAW_HOME": str(home),
        "MESHCLAW_CONFIG": str(root / "absent.toml"),
        "MESHCLAW_WEB__OPEN_BROWSER": "false",
    }
    env.pop("MESHCLAW_PROVIDERS", None)
    # As root, dovecot's user cannot reach pytest's tmp_path: the maildirs go elsewhere.
    digest = hashlib.sha256(str((home / "demo-apps" / "mail").resolve()).encode()).hexdigest()
    try:
        with serve_demo(env, root) as (address, lines):
            output = "".join(lines)
            token = (home / "cli-token").read_text().strip()
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=address, headers=headers, timeout=30) as http:
                yield Demo(home, output, http)
    finally:
        shutil.rmtree(
            Path(tempfile.gettempdir()) / f"meshclaw-demo-mail-{digest[:12]}", ignore_errors=True
        )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_serve_prints_a_create_and_run_command_for_each_example_the_script_answers(
    demo: Demo,
) -> None:
    running = {m.group(1) for m in re.finditer(r"^  (\w+) +\S+.* at ", demo.output, re.M)}
    expected = [t for t in DEMO_TRIES if t.connector in running]
    assert len(expected) >= 3, demo.output  # tickets, docs, deploy at least
    for example in expected:
        assert f"meshclaw agent create examples/{example.agent}.yaml" in demo.output
        assert demo.printed_input(example.agent) == example.input
        assert (EXAMPLES / f"{example.agent}.yaml").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_doc_publisher_publishes_a_handbook_page_on_webdav_with_a_verified_outcome(
    demo: Demo,
) -> None:
    run, outcome = demo.run("doc-publisher")
    assert _tools(run) == ["docs.search_documents", "docs.write_document"], run["steps"]

    page = demo.home / "demo-apps/docs/share/handbook/how-to/runner-cleanup.md"
    assert page.read_text().startswith("# Build runner clean-up\n")
    # What WsgiDAV serves, as the handbook's readers see it.
    url = f"http://127.0.0.1:{demo.port('docs')}/handbook/how-to/runner-cleanup.md"
    served = httpx.get(url, auth=("handbook", demo.secret("docs-password")), timeout=10)
    assert served.status_code == 200 and served.text == page.read_text()

    assert outcome["type"] == "doc_published"
    assert outcome["verified"] is True, outcome
    assert outcome["ref"] == "/handbook/how-to/runner-cleanup.md"
    etag = served.headers["etag"]
    checked = outcome["verification"]["checked"]
    assert checked == f"/handbook/how-to/runner-cleanup.md is there at revision {etag}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_deploy_helper_runs_the_pipeline_for_mains_head_with_a_verified_outcome(
    demo: Demo,
) -> None:
    run, outcome = demo.run("deploy-helper")
    assert _tools(run) == ["deploy.list_changes", "deploy.trigger_pipeline"], run["steps"]

    assert outcome["type"] == "deploy"
    assert outcome["verified"] is True, outcome
    # The pipeline stand-in has the run, for the repository's head, and it succeeded.
    pipeline = f"http://127.0.0.1:{demo.port('deploy')}/pipelines/{outcome['ref']}"
    headers = {"Authorization": f"Bearer {demo.secret('pipeline-token')}"}
    record = httpx.get(pipeline, headers=headers, timeout=10).json()
    repo = demo.home / "demo-apps/deploy/app.git"
    head = subprocess.run(
        ["git", "rev-parse", "main"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert (record["ref"], record["commit"], record["status"]) == ("main", head, "success")
    assert outcome["verification"]["checked"] == (
        f"pipeline run {record['id']} succeeded for {head}"
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mail_triage_flags_the_outage_and_mails_a_digest_with_a_verified_outcome(
    demo: Demo,
) -> None:
    if not re.search(r"^  mail +dovecot", demo.output, re.M):
        pytest.skip("the demo runs without mail here (dovecot is not installed)")
    run, outcome = demo.run("mail-triage")
    tools = ["mail.search", "mail.read_message", "mail.flag_message", "mail.send"]
    assert _tools(run) == tools, run["steps"]

    # dovecot has bob's outage report flagged; aiosmtpd accepted the digest.
    imap = IMAPClient("127.0.0.1", port=demo.port("mail-imap"), ssl=False, timeout=10)
    imap.login(MAILBOX, demo.secret("mail-password"))
    try:
        imap.select_folder("INBOX", readonly=True)
        [flagged] = imap.search(["FLAGGED"])
        subject = imap.fetch([flagged], ["ENVELOPE"])[flagged][b"ENVELOPE"].subject
        assert subject == b"Checkout API returns 502 since 06:40"
    finally:
        imap.logout()
    [sent] = mailbox.mbox(demo.home / "demo-apps/mail/outgoing.mbox")
    assert sent["To"] == "platform-team@acme.example"
    assert "Checkout API returns 502" in sent.get_payload()

    assert outcome["type"] == "mail_sent"
    assert outcome["verified"] is True, outcome
    assert outcome["ref"] == sent["Message-ID"]
    assert outcome["verification"]["delivered"] == 1


def test_only_examples_whose_stand_in_runs_are_suggested() -> None:
    assert try_commands(["tickets", "chat"]) == [
        (
            ".venv/bin/meshclaw agent create examples/ticket-updater.yaml",
            ".venv/bin/meshclaw run ticket-updater --input 'OPS ticket 1 changed' -f",
        )
    ]
    agents = [run.split()[2] for _, run in try_commands(["docs", "deploy", "mail"])]
    assert agents == ["doc-publisher", "deploy-helper", "mail-triage"]
    assert try_commands([]) == []
