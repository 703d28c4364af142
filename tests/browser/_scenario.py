"""The browser suite's scenario: a mail an agent sends only after its owner approved it.

Everything here is real MeshClaw configuration, nothing is mocked: the scripted model
(match mode, so any number of runs replay it), the built-in ``mail`` MCP server against
dovecot (IMAP) and aiosmtpd (SMTP) on loopback, an org policy file whose approval gate
holds every ``mail.send`` for a person, and the ``mail_sent`` outcome whose verifier reads
the SMTP evidence. The mail goes to ``fiona@acme.test``, a person of the demo org whose
user name is her address, so the outcome's beneficiary is someone other than the owner.

Also here: a small event history (event format v1) in which one person splits a task
into many outcomes on one ticket in a day, for the real integrity scan.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENEFICIARY = "fiona@acme.test"
"""The person the agent's mail goes to; her user name is her address (see module doc)."""
SUBJECT = "Weekly on-call report"
MODEL = "scripted-browser"

SCRIPT: dict[str, Any] = {
    "models": [MODEL],
    "mode": "match",
    "turns": [
        # After the approved send: the mail server's evidence names the Message-ID.
        {
            "match": {"last_tool": "(?i)message_id"},
            "reply": {"content": f"Sent the on-call report to {BENEFICIARY}."},
        },
        {
            "match": {"last_tool": "(?i)(denied|refused|expired)"},
            "reply": {"content": "Understood: the report was not sent."},
        },
        # After the clock: send the report (the policy holds this for approval). The delays
        # make the run take long enough for the trace page to show steps arriving after it
        # loaded (the test checks that the held call appears without a reload).
        {
            "match": {"last_tool": r"\d{4}-\d{2}-\d{2}T"},
            "delay_ms": 700,
            "reply": {
                "content": "Mailing the report now.",
                "tool_calls": [
                    {
                        "name": "mail.send",
                        "arguments": {
                            "to": [BENEFICIARY],
                            "subject": SUBJECT,
                            "body": "Quiet week: two pages, both resolved within SLO.",
                        },
                    }
                ],
            },
        },
        {
            "match": {"last_user": "."},
            "delay_ms": 1200,
            "reply": {
                "content": "Checking the date first.",
                "tool_calls": [{"name": "clock.now", "arguments": {"tz": "UTC"}}],
            },
        },
    ],
}

POLICY = """\
// Browser suite: every mail an agent sends waits for a person's approval.
@id("approval.mail-send")
forbid (principal is Agent, action == Action::"tool.write", resource == Tool::"mail.send")
when { !context.approved };
"""

DESCRIPTION = "Mails the weekly on-call report to the support lead."
INSTRUCTIONS = "Check the date with clock.now, then mail the on-call report with mail.send."


def agent_yaml(name: str) -> str:
    """The spec the builder form is filled with, as YAML (the API test posts it)."""
    return f"""\
apiVersion: meshclaw/v1
name: {name}
description: {DESCRIPTION}
owner: alice
model: {{provider: scripted, model: {MODEL}}}
instructions: {INSTRUCTIONS}
tools:
  - {{name: clock.now, scope: read}}
  - name: mail.send
    scope: write
    arguments: {{to: ["*@acme.test"]}}
budget: {{max_steps: 8, timeout_seconds: 60}}
outcomes:
  - {{type: mail_sent}}
"""


def split_task_history(path: Path, *, subject: str, peers: list[str]) -> Path:
    """A week in which ``subject`` turns one ticket into a dozen credited slices in a day
    (the ``split_tasks`` pattern) while ``peers`` each resolve different tickets."""
    start = datetime(2026, 1, 6, 9, tzinfo=UTC)  # a Tuesday
    lines: list[dict[str, Any]] = []

    def add(kind: str, user: str, at: datetime, **fields: Any) -> None:
        event_id = f"{kind[:2]}{len(lines)}"
        base = {"v": 1, "kind": kind, "id": event_id, "org": "acme", "team": "t", "user": user}
        lines.append(base | {"ts": at.isoformat().replace("+00:00", "Z")} | fields)

    def work(user: str, at: datetime, ref: str) -> None:
        run = f"run-{user}-{len(lines)}"
        add("run", user, at, agent=f"agent-{user}", run=run, trigger="manual",
            ended_at=(at + timedelta(minutes=2)).isoformat().replace("+00:00", "Z"),
            status="ok")  # fmt: skip
        add("outcome", user, at + timedelta(minutes=1), agent=f"agent-{user}", run=run,
            type="ticket_resolved", ref=ref, beneficiary="external", verified=True)  # fmt: skip

    for p, peer in enumerate(peers):
        for i in range(3):
            work(peer, start + timedelta(hours=i, minutes=p), f"OPS-{100 + 10 * p + i}")
    for i in range(12):
        work(subject, start + timedelta(minutes=20 * i), "OPS-7")
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path
