from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from meshclaw.connectors.servers import SERVERS, build_server
from meshclaw.errors import SpecError, SpecIssue
from meshclaw.outcomes import resolve_type
from meshclaw.spec import AgentSpec, dump_spec, load_spec, parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))

# Line numbers below are 1-based lines of this text; keep them in step when editing it.
BASE = """\
apiVersion: meshclaw/v1
name: triage
owner: alice
model:
  provider: scripted
  model: scripted-demo
instructions: Sort the inbox.
tools:
  - name: mail.read
    scope: read
  - name: mail.move
    scope: write
    targets: ["mail:acme/inbox/*"]
triggers:
  - type: manual
  - type: cron
    schedule: "0 9 * * 1-5"
budget:
  max_steps: 10
  max_cost_usd_per_run: 0.25
outcomes:
  - type: mail_sent
"""


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} must occur exactly once"
    return text.replace(old, new)


def issues_of(text: str) -> list[SpecIssue]:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "agent.yaml")
    assert info.value.source == "agent.yaml"
    return info.value.issues


def test_the_base_spec_is_valid() -> None:
    spec = parse_spec(BASE)

    assert spec.name == "triage"
    assert spec.budget.max_cost_usd_per_run == Decimal("0.25")


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_every_example_validates(path: Path) -> None:
    spec = load_spec(path)

    assert f"{spec.name}.yaml" == path.name
    assert spec.owner == "alice"
    assert (spec.model.provider, spec.model.model) == ("scripted", "scripted-demo")
    assert spec.outcomes, "an example should claim the outcome it produces"
    assert path.read_text(encoding="utf-8").startswith("# "), "header comment"


def test_the_examples_are_the_documented_five() -> None:
    assert [p.stem for p in EXAMPLE_FILES] == [
        "deploy-helper",
        "doc-publisher",
        "mail-triage",
        "standup-scheduler",
        "ticket-updater",
    ]


def test_examples_grant_what_their_header_promises() -> None:
    deploy = load_spec(EXAMPLES / "deploy-helper.yaml")
    scopes = {g.name: g.scope for g in deploy.tools}
    assert scopes == {
        "deploy.list_changes": "read",
        "deploy.pipeline_status": "read",
        "deploy.trigger_pipeline": "write",
        "chat.read_thread": "read",  # its chat trigger reads the channel (docs/triggers.md)
        "chat.reply_in_thread": "write",
    }, "no merge, open_change or rollback"
    reply = deploy.grant_for("chat.reply_in_thread")
    assert reply is not None and reply.targets == ["chat:#deploys"]
    assert deploy.grant_for("chat.post_message") is None
    assert [t.type for t in deploy.triggers] == ["chat"]

    mail = load_spec(EXAMPLES / "mail-triage.yaml")
    scopes = {g.name: g.scope for g in mail.tools}
    assert scopes == {
        "mail.list_messages": "read",
        "mail.search": "read",
        "mail.read_message": "read",
        "mail.move_message": "write",
        "mail.flag_message": "write",
        "mail.send": "write",
    }, "never reply"
    move, flag = mail.grant_for("mail.move_message"), mail.grant_for("mail.flag_message")
    assert move is not None and move.arguments == {"folder": ["INBOX"], "to_folder": ["later"]}
    assert flag is not None and flag.arguments == {"folder": ["INBOX"], "flag": ["flagged"]}
    send = mail.grant_for("mail.send")
    assert send is not None and send.targets == ["mail:platform-team@acme.example"]

    tickets = load_spec(EXAMPLES / "ticket-updater.yaml")
    grant = tickets.grant_for("tickets.update")
    assert grant is not None and grant.name == "tickets.*" and grant.targets == ["ticket:OPS-*"]
    assert [t.type for t in tickets.triggers] == ["webhook"]


REQUIRED_SETTINGS = {
    "calendar": ("URL", "USERNAME", "PASSWORD"),
    "chat": ("TOKEN",),
    "deploy": ("REPO", "PIPELINE_URL"),
    "docs": ("URL",),
    "mail": ("IMAP_HOST", "USERNAME", "PASSWORD"),
    "tickets": ("REPO", "TOKEN"),
}


def builtin_tools(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    """Each built-in server's tool names, as it lists them (placeholder settings)."""
    tools: dict[str, set[str]] = {}
    for name in SERVERS:
        for setting in REQUIRED_SETTINGS[name]:
            monkeypatch.setenv(f"MESHCLAW_{name.upper()}_{setting}", "placeholder")
        listed = asyncio.run(build_server(name).list_tools())
        tools[name] = {t.name for t in listed}
    return tools


def test_examples_name_tools_the_built_in_servers_have(monkeypatch: pytest.MonkeyPatch) -> None:
    tools = builtin_tools(monkeypatch)

    unknown = [
        (path.name, grant.name)
        for path in EXAMPLE_FILES
        for grant in load_spec(path).tools
        if grant.name.split(".", 1)[1] not in {*tools[grant.name.split(".", 1)[0]], "*"}
    ]

    assert unknown == []


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_examples_grant_a_tool_that_earns_their_outcome_and_its_verification_read(
    path: Path,
) -> None:
    spec = load_spec(path)
    for claim in spec.outcomes:
        kind = resolve_type(claim)
        assert [t for t in kind.tools if spec.grant_for(t) is not None], kind.name
        if kind.verify_tool is not None:
            assert spec.grant_for(kind.verify_tool) is not None, kind.verify_tool


MISTAKES = [
    # (id, old text, new text, path, line, part of the message)
    ("bad name", "name: triage", "name: Triage_Bot", "name", 2, "should match pattern"),
    ("unknown key", "outcomes:\n", "colour: blue\noutcomes:\n", "colour", 21, "Extra inputs"),
    (
        "unknown nested key",
        '    targets: ["mail:acme/inbox/*"]\n',
        '    targets: ["mail:acme/inbox/*"]\n    scopes: [write]\n',
        "tools[1].scopes",
        14,
        "Extra inputs",
    ),
    ("wrong scope", "scope: write", "scope: admin", "tools[1].scope", 12, "'read' or 'write'"),
    ("bad tool name", "name: mail.move", "name: mail_move", "tools[1].name", 11, "connector.tool"),
    ("upper-case tool", "name: mail.read", "name: Mail.Read", "tools[0].name", 9, "lower case"),
    ("bad cron", '"0 9 * * 1-5"', '"0 9 * *"', "triggers[1].schedule", 17, "five-field cron"),
    (
        "unknown trigger type",
        "type: manual",
        "type: pager",
        "triggers[0].type",
        15,
        "unknown type 'pager'; expected one of 'manual', 'api', 'cron'",
    ),
    ("trigger without type", "- type: manual", "- {}", "triggers[0].type", 15, "Field required"),
    (
        "negative budget",
        "max_steps: 10",
        "max_steps: -3",
        "budget.max_steps",
        19,
        "greater than or equal to 1",
    ),
    (
        "negative cost",
        "max_cost_usd_per_run: 0.25",
        "max_cost_usd_per_run: -0.25",
        "budget.max_cost_usd_per_run",
        20,
        "greater than 0",
    ),
    ("wrong type", "max_steps: 10", "max_steps: ten", "budget.max_steps", 19, "valid integer"),
    (
        "missing required field",
        "instructions: Sort the inbox.\n",
        "",
        "instructions",
        1,
        "Field required",
    ),
    ("missing nested field", "  model: scripted-demo\n", "", "model.model", 4, "Field required"),
    (
        "missing trigger field",
        '    schedule: "0 9 * * 1-5"\n',
        "",
        "triggers[1].schedule",
        16,
        "Field required",
    ),
    ("wrong apiVersion", "meshclaw/v1", "meshclaw/v2", "apiVersion", 1, "'meshclaw/v1'"),
    (
        "duplicate key",
        "owner: alice\n",
        "owner: alice\nowner: bob\n",
        "owner",
        4,
        'duplicate key "owner"',
    ),
    (
        "duplicate nested key",
        "    scope: write\n",
        "    scope: write\n    scope: read\n",
        "tools[1].scope",
        13,
        'duplicate key "scope"',
    ),
    (
        "duplicate tool grant",
        "name: mail.move",
        "name: mail.read",
        "tools[1].name",
        11,
        "tool 'mail.read' is granted twice (first at tools[0])",
    ),
    ("YAML syntax error", "  provider: scripted", "  provider: [scripted", "", 6, "YAML: "),
    ("tab indentation", "  max_steps: 10", "\tmax_steps: 10", "", 19, "YAML: "),
]


@pytest.mark.parametrize(
    ("old", "new", "path", "line", "message"),
    [case[1:] for case in MISTAKES],
    ids=[case[0] for case in MISTAKES],
)
def test_each_mistake_is_reported_with_path_and_line(
    old: str, new: str, path: str, line: int, message: str
) -> None:
    [issue] = issues_of(edit(BASE, old, new))

    assert (issue.path, issue.line) == (path, line)
    assert message in issue.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- name: triage\n- owner: alice\n", "a spec must be a YAML mapping, not a list"),
        ("just some words\n", "a spec must be a YAML mapping, not a scalar"),
        ("", "the spec is empty"),
        ("# only a comment\n", "the spec is empty"),
    ],
    ids=["list", "scalar", "empty", "comment only"],
)
def test_a_document_that_is_not_a_mapping(text: str, message: str) -> None:
    [issue] = issues_of(text)

    assert (issue.path, issue.line, issue.message) == ("", 1, message)


def test_a_second_yaml_document_is_refused() -> None:
    [issue] = issues_of(BASE + "---\nname: other\n")

    assert (issue.path, issue.line) == ("", 23)
    assert "another document" in issue.message


def test_several_problems_are_reported_at_once_in_document_order() -> None:
    text = BASE
    for old, new in [
        ("name: triage", "name: Triage"),
        ("scope: write", "scope: admin"),
        ('"0 9 * * 1-5"', '"daily"'),
        ("max_steps: 10", "max_steps: 0"),
        ("outcomes:\n", "colour: blue\noutcomes:\n"),
    ]:
        text = edit(text, old, new)

    found = [(i.path, i.line) for i in issues_of(text)]

    assert found == [
        ("name", 2),
        ("tools[1].scope", 12),
        ("triggers[1].schedule", 17),
        ("budget.max_steps", 19),
        ("colour", 21),
    ]


def test_a_duplicate_grant_is_reported_with_other_problems() -> None:
    text = edit(edit(BASE, "name: mail.move", "name: mail.read"), "max_steps: 10", "max_steps: 0")

    found = [(i.path, i.line) for i in issues_of(text)]

    assert found == [("tools[1].name", 11), ("budget.max_steps", 19)]


def test_a_missing_field_points_at_the_first_key_after_a_header_comment() -> None:
    text = "# triage: sorts the inbox\n#\n\n" + edit(BASE, "instructions: Sort the inbox.\n", "")

    [issue] = issues_of(text)

    assert (issue.path, issue.line) == ("instructions", 4)


def test_error_text_lists_every_issue_with_its_line() -> None:
    text = edit(edit(BASE, "name: triage", "name: T"), "scope: write", "scope: admin")

    with pytest.raises(SpecError) as info:
        parse_spec(text, "agent.yaml")

    lines = str(info.value).splitlines()
    assert lines[0] == "agent.yaml: invalid agent spec (2 problem(s)):"
    assert lines[1].startswith("  line 2: name: ")
    assert lines[2] == "  line 12: tools[1].scope: Input should be 'read' or 'write'"


def test_load_spec_reports_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"

    with pytest.raises(SpecError) as info:
        load_spec(missing)

    [issue] = info.value.issues
    assert info.value.source == str(missing)
    assert (issue.path, issue.line) == ("", None)
    assert issue.message.startswith("cannot read file:")


def test_load_spec_reports_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(BASE.replace("Sort the inbox.", "Trier le courrier reçu.").encode("latin-1"))

    with pytest.raises(SpecError, match="cannot read file"):
        load_spec(latin1)


def test_yaml_scalars_reach_the_model_as_plain_values() -> None:
    text = edit(
        BASE,
        "  model: scripted-demo\n",
        "  model: scripted-demo\n"
        "  parameters:\n"
        "    stream: &on true\n"
        "    logprobs: *on\n"
        "    temperature: 0.5\n"
        "    stop: [END, 0x10]\n",
    )
    text = edit(text, "apiVersion", "description: 2024-01-01\napiVersion")

    spec = parse_spec(text)

    assert spec.model.parameters == {
        "stream": True,
        "logprobs": True,
        "temperature": 0.5,
        "stop": ["END", 16],
    }
    assert type(spec.model.parameters["logprobs"]) is bool
    assert spec.description == "2024-01-01"


def round_trip(spec: AgentSpec) -> None:
    canonical = dump_spec(spec)
    again = parse_spec(canonical)
    assert again == spec
    assert dump_spec(again) == canonical


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_examples_round_trip_through_the_canonical_dump(path: Path) -> None:
    round_trip(load_spec(path))


def test_awkward_strings_round_trip() -> None:
    text = edit(
        BASE,
        "instructions: Sort the inbox.\n",
        "instructions: |\n"
        "  Line one: with a colon, 'quotes' and \"double quotes\".\n"
        "    indented # not a comment\n"
        "  yes\n"
        "  null\n"
        "  ünïcödé — 你好\n",
    )
    text = edit(text, "apiVersion", "description: 'yes'\napiVersion")
    text = edit(text, "  - type: mail_sent\n", "  - type: mail_sent\n    description: '0123'\n")

    spec = parse_spec(text)

    assert spec.description == "yes"
    assert spec.outcomes[0].description == "0123"
    round_trip(spec)


def test_the_canonical_dump_writes_defaults_so_equal_specs_dump_equal() -> None:
    minimal = "name: triage\nowner: alice\nmodel: {provider: scripted, model: m}\ninstructions: x\n"
    explicit = (
        "apiVersion: meshclaw/v1\n"
        "name: triage\n"
        "description: ''\n"
        "owner: alice\n"
        "model:\n  provider: scripted\n  model: m\n  parameters: {}\n"
        "instructions: x\n"
        "tools: []\n"
        "triggers:\n  - type: manual\n"
        "budget:\n  max_steps: 20\n  timeout_seconds: 300\n"
        "outcomes: []\n"
    )

    canonical = dump_spec(parse_spec(minimal))

    assert canonical == dump_spec(parse_spec(explicit))
    assert canonical.splitlines()[:3] == [
        "apiVersion: meshclaw/v1",
        "name: triage",
        "description: ''",
    ]
    assert "triggers:\n- type: manual\n" in canonical
    assert "budget:\n  max_steps: 20\n  timeout_seconds: 300.0\n" in canonical


DOC = Path(__file__).resolve().parents[2] / "docs" / "agent-spec.md"


def doc_blocks(language: str) -> list[str]:
    """The fenced code blocks of ``docs/agent-spec.md`` in one language."""
    parts = DOC.read_text(encoding="utf-8").split("```")
    return [part.removeprefix(language + "\n") for part in parts[1::2] if part.startswith(language)]


def test_the_documented_examples_behave_as_documented() -> None:
    annotated, invalid = doc_blocks("yaml")
    assert parse_spec(annotated).name == "ticket-updater"

    with pytest.raises(SpecError) as info:
        parse_spec(invalid, "ticket-updater.yaml")

    documented = next(b for b in doc_blocks("console") if "validate ticket-updater.yaml\n" in b)
    printed = str(info.value).splitlines()
    assert documented.splitlines()[1 : 1 + len(printed)] == ["error: " + printed[0], *printed[1:]]


def test_the_examples_readme_lists_every_example() -> None:
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")

    assert [p.name for p in EXAMPLE_FILES if f"]({p.name})" not in readme] == []
