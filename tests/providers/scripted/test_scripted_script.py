from __future__ import annotations

import json
from pathlib import Path
from textwrap import dedent

import pytest

from meshclaw.errors import ConfigError
from meshclaw.providers.scripted import Script, load_script

EXAMPLE = dedent(
    """
    models: [scripted-small, scripted-large]
    mode: sequence
    api_key: null
    turns:
      - reply:
          content: "Let me check the time."
          tool_calls:
            - name: clock.now
              arguments: {tz: UTC}
          reasoning_tokens: 0
          cached_tokens: 0
          finish_reason: null
        delay_ms: 0
        errors_before:
          - {status: 429, message: "rate limited", retry_after: 0}
          - {status: 500}
          - {malformed: true}
      - reply: {content: "Done."}
    """
)


def test_documented_example_loads() -> None:
    script = load_script(EXAMPLE)
    assert script.models == ["scripted-small", "scripted-large"]
    first = script.turns[0]
    assert first.reply.tool_calls[0].arguments_json() == '{"tz": "UTC"}'
    assert first.reply.effective_finish_reason() == "tool_calls"
    assert [e.status for e in first.errors_before] == [429, 500, None]
    assert script.turns[1].reply.effective_finish_reason() == "stop"


def test_defaults() -> None:
    script = load_script("turns:\n  - reply: {content: hi}\n")
    assert script.models == ["scripted"]
    assert script.mode == "sequence"
    assert script.api_key is None


def test_json_text_and_files_load(tmp_path: Path) -> None:
    data = {"mode": "match", "turns": [{"match": {"any": True}, "reply": {"content": "ok"}}]}
    assert load_script(json.dumps(data)).mode == "match"
    json_file = tmp_path / "script.json"
    json_file.write_text(json.dumps(data, indent=2), encoding="utf-8")
    assert load_script(json_file) == load_script(str(json_file))
    yaml_file = tmp_path / "script.yaml"
    yaml_file.write_text(EXAMPLE, encoding="utf-8")
    assert isinstance(load_script(yaml_file), Script)


def test_api_key_is_hidden_in_reprs() -> None:
    script = load_script("api_key: s3cret\nturns:\n  - reply: {content: hi}\n")
    assert "s3cret" not in repr(script)
    assert script.api_key is not None
    assert script.api_key.get_secret_value() == "s3cret"


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("models: []\nturns: []\n", "models", "at least 1"),
        ("turns:\n  - reply: {}\n", "turns[0].reply", "content or tool_calls"),
        ("turns:\n  - reply: {content: 3}\n", "turns[0].reply.content", "string"),
        (
            "turns:\n  - reply: {tool_calls: [{name: ''}]}\n",
            "turns[0].reply.tool_calls[0].name",
            "at least 1",
        ),
        ("turns:\n  - reply: {content: a, contnet: b}\n", "turns[0].reply.contnet", "Extra"),
        (
            "turns:\n  - reply: {content: a}\n    errors_before: [{message: x}]\n",
            "turns[0].errors_before[0]",
            "status",
        ),
        (
            "turns:\n  - reply: {content: a}\n    errors_before: [{status: 200}]\n",
            "turns[0].errors_before[0].status",
            "400",
        ),
        ("turns:\n  - reply: {content: a}\n    delay_ms: -1\n", "turns[0].delay_ms", "0"),
        (
            "mode: match\nturns:\n  - {reply: {content: a}, match: {any: true}}\n"
            "  - reply: {content: b}\n",
            "turns[1].match",
            "match mode",
        ),
        (
            "turns:\n  - {reply: {content: a}, match: {any: true}}\n",
            "turns[0].match",
            "mode: match",
        ),
        (
            "mode: match\nturns:\n  - {reply: {content: a}, match: {last_user: '('}}\n",
            "turns[0].match.last_user",
            "invalid regex",
        ),
        (
            "mode: match\nturns:\n  - {reply: {content: a}, match: {}}\n",
            "turns[0].match",
            "exactly one",
        ),
        ("mode: chaos\nturns:\n  - reply: {content: a}\n", "mode", "sequence"),
    ],
)
def test_invalid_scripts_name_the_field_path(text: str, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_script(text)
    problems = str(caught.value).splitlines()[1:]
    assert any(p.strip().startswith(f"{path}:") and message in p for p in problems), problems


def test_invalid_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("turns:\n  - reply: {content: 3}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid model script"):
        load_script(bad)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("turns: [unclosed\n  x: y\n", "not valid YAML"),
        ('{"turns": [}', "not valid JSON"),
        ("- just\n- a list\n", "must be a mapping"),
        ("a: 1\na: 2\n", "not valid YAML"),
    ],
)
def test_unparsable_scripts(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_script(text)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read model script"):
        load_script(str(tmp_path / "nope.yaml"))
