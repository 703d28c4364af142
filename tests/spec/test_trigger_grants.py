"""A chat or mail trigger is checked against the spec's grants when the spec is validated:
the agent must be able to read what starts it, on the channel it is started from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meshclaw.cli.main import app
from meshclaw.errors import SpecError, SpecIssue
from meshclaw.spec import dump_spec, parse_spec
from meshclaw.spec.checks import trigger_problems
from meshclaw.spec.loader import parse_stored_spec
from meshclaw.spec.models import AgentSpec

# Line numbers below are 1-based lines of this text; keep them in step when editing it.
CHAT = """\
name: helper
owner: alice
model: {provider: scripted, model: test-model}
instructions: Help in chat.
tools:
  - name: chat.read_thread
    scope: read
  - name: chat.reply_in_thread
    scope: write
    targets: ["chat:#deploys"]
triggers:
  - type: manual
  - type: chat
    channel: "#deploys"
"""


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} must occur exactly once"
    return text.replace(old, new)


def issues_of(text: str) -> list[SpecIssue]:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "agent.yaml")
    return info.value.issues


def test_a_chat_trigger_with_a_read_grant_on_its_channel_is_valid() -> None:
    assert parse_spec(CHAT).triggers[1].type == "chat"
    # Targets naming the channel with or without '#', or a wildcard grant, also do.
    scoped = edit(CHAT, "    scope: read\n", '    scope: read\n    targets: ["chat:deploy*"]\n')
    assert parse_spec(scoped).tools[0].targets == ["chat:deploy*"]
    assert parse_spec(edit(CHAT, "name: chat.read_thread", "name: chat.*")).tools[0].name


def test_a_chat_trigger_without_a_read_grant_is_an_error_at_the_trigger() -> None:
    text = edit(CHAT, "  - name: chat.read_thread\n    scope: read\n", "")
    assert issues_of(text) == [
        SpecIssue(
            path="triggers[1].connector",
            message=(
                "the agent may not read connector 'chat'; grant 'chat.read_channel' or "
                "'chat.read_thread' or 'chat.*' in tools"
            ),
            line=11,  # the trigger's item: `connector` is left to its default
        )
    ]


def test_a_mail_trigger_without_a_read_grant_points_at_its_connector_line() -> None:
    text = edit(CHAT, '    channel: "#deploys"\n', "")
    text = edit(text, "  - type: chat\n", "  - type: mail\n    connector: mailbox\n")
    assert issues_of(text) == [
        SpecIssue(
            path="triggers[1].connector",
            message=(
                "the agent may not read connector 'mailbox'; grant 'mailbox.read_message' "
                "or 'mailbox.*' in tools"
            ),
            line=14,
        )
    ]
    granted = edit(text, "tools:\n", "tools:\n  - {name: mailbox.read_message}\n")
    assert parse_spec(granted).triggers[1].type == "mail"


def test_a_read_grant_whose_targets_leave_out_the_channel_is_an_error_at_the_channel() -> None:
    targets = '    targets: ["chat:#help", "ticket:*"]\n'
    text = edit(CHAT, "    scope: read\n", "    scope: read\n" + targets)
    assert issues_of(text) == [
        SpecIssue(
            path="triggers[1].channel",
            message=(
                "channel '#deploys' is outside the targets of the agent's read grant on "
                "connector 'chat' (tools[0] 'chat.read_thread': 'chat:#help', 'ticket:*'); "
                "add 'chat:#deploys' to its targets"
            ),
            line=15,
        )
    ]


MAIL = """\
name: triage
owner: alice
model: {provider: scripted, model: test-model}
instructions: Triage the mail.
tools:
  - name: mail.read_message
    scope: read
    targets: ["folder:INBOX", "folder:Support/*"]
  - name: mail.send
    scope: write
    targets: ["mail:*@acme.example"]
triggers:
  - type: mail
    folder: Invoices
"""


def test_a_mail_trigger_whose_folder_is_outside_the_read_grants_targets_is_an_error() -> None:
    assert issues_of(MAIL) == [
        SpecIssue(
            path="triggers[0].folder",
            message=(
                "folder 'Invoices' is outside the targets of the agent's read grant on "
                "connector 'mail' (tools[0] 'mail.read_message': 'folder:INBOX', "
                "'folder:Support/*'); add 'folder:Invoices' to its targets"
            ),
            line=14,
        )
    ]
    # Folders the targets cover (globs, case-insensitive), or a grant without targets.
    assert parse_spec(edit(MAIL, "folder: Invoices", "folder: Support/Billing")).triggers
    assert parse_spec(edit(MAIL, "folder: Invoices", "folder: inbox")).triggers
    assert parse_spec(edit(MAIL, '    targets: ["folder:INBOX", "folder:Support/*"]\n', ""))


def test_recipient_targets_of_a_mail_wildcard_grant_do_not_cover_a_folder() -> None:
    # ``mail:`` targets are the addresses mail is sent to; a folder is ``folder:<name>``.
    text = edit(MAIL, "  - name: mail.read_message\n    scope: read\n", "")
    text = edit(text, '    targets: ["folder:INBOX", "folder:Support/*"]\n', "")
    text = edit(text, "name: mail.send", "name: mail.*")
    text = edit(text, "    folder: Invoices\n", "")  # the default folder: INBOX
    (issue,) = issues_of(text)
    assert (issue.path, issue.line) == ("triggers[0].folder", 10)  # the trigger's item
    assert issue.message.startswith("folder 'INBOX' is outside the targets")
    assert issue.message.endswith(
        "(tools[0] 'mail.*': 'mail:*@acme.example'); add 'folder:INBOX' to its targets"
    )
    allowed = edit(text, '["mail:*@acme.example"]', '["mail:*@acme.example", "folder:INBOX"]')
    assert parse_spec(allowed).triggers[0].type == "mail"


def test_every_trigger_problem_is_reported_at_once() -> None:
    text = edit(CHAT, "  - name: chat.read_thread\n    scope: read\n", "")
    text += "  - {type: chat, channel: help}\n  - {type: mail, folder: Invoices}\n"
    assert [(i.path, i.line) for i in issues_of(text)] == [
        ("triggers[1].connector", 11),
        ("triggers[2].connector", 13),
        ("triggers[3].connector", 14),
    ]


def test_a_stored_version_from_before_the_check_still_loads() -> None:
    # Stored versions are never re-validated against newer rules: runs of them go on,
    # and the trigger is refused at poll time instead (tests/triggers).
    old = AgentSpec.model_validate(
        {
            "name": "helper",
            "owner": "alice",
            "model": {"provider": "scripted", "model": "m"},
            "instructions": "x",
            "triggers": [{"type": "chat", "channel": "#help"}],
        }
    )
    assert trigger_problems(old) != []
    assert parse_stored_spec(dump_spec(old)) == old


def test_agent_validate_reports_the_trigger_with_its_line(tmp_path: Path) -> None:
    spec = tmp_path / "agent.yaml"
    spec.write_text(edit(CHAT, "  - name: chat.read_thread\n    scope: read\n", ""), "utf-8")
    result = CliRunner().invoke(app, ["agent", "validate", str(spec), "--json"])
    assert result.exit_code == 2
    (error,) = json.loads(result.stdout)["errors"]
    assert (error["path"], error["line"]) == ("triggers[1].connector", 11)
    plain = CliRunner().invoke(app, ["agent", "validate", str(spec)])
    assert plain.exit_code == 2
    printed = " ".join((plain.stdout + plain.stderr).split())  # Rich wraps long lines
    assert "line 11: triggers[1].connector: the agent may not read connector 'chat'" in printed
