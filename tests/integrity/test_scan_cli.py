"""``meshclaw integrity scan``: the exact JSON shape, the table, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meshclaw.cli.main import app
from meshclaw.events import write_events
from tests.integrity.builder import Org, Person
from tests.integrity.test_detectors import GAMERS, A, build


@pytest.fixture(scope="module")
def history_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    org = Org(seed=3)
    build(org)
    path = tmp_path_factory.mktemp("scan") / "events.jsonl"
    write_events(path, org.rows)
    return path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_json_output_has_exactly_the_documented_shape(history_file: Path) -> None:
    code, out, _ = invoke("integrity", "scan", str(history_file), "--json")
    assert code == 0
    doc = json.loads(out)
    assert list(doc) == ["users"]
    users = {json.loads(line)["user"] for line in history_file.read_text().splitlines()}
    assert sorted(u["user"] for u in doc["users"]) == sorted(users)
    for entry in doc["users"]:
        assert list(entry) == ["user", "flagged", "score", "findings"]
        assert isinstance(entry["flagged"], bool)
        assert isinstance(entry["score"], float) and 0.0 <= entry["score"] <= 1.0
        assert entry["flagged"] == (entry["score"] >= 0.5)
        for finding in entry["findings"]:
            assert list(finding) == ["detector", "evidence"]
            assert isinstance(finding["evidence"], dict) and finding["evidence"]
    flagged = {u["user"]: u for u in doc["users"] if u["flagged"]}
    assert GAMERS["cron_churn"].user in flagged
    assert "cron_churn" in [f["detector"] for f in flagged[GAMERS["cron_churn"].user]["findings"]]


def test_malformed_lines_are_reported_on_stderr_and_the_scan_goes_on(tmp_path: Path) -> None:
    org = Org(seed=4)
    people = [Person(f"u{i}", "t", "engineer") for i in range(6)]
    for p in people:
        org.honest(p, people, weeks=1)
    path = tmp_path / "events.jsonl"
    write_events(path, org.rows)
    lines = path.read_text().splitlines()
    lines.insert(2, "{not json")
    lines.insert(6, json.dumps({"v": 1, "kind": "run", "id": "zz"}))
    path.write_text("\n".join(lines) + "\n")
    code, out, err = invoke("integrity", "scan", str(path), "--json")
    assert code == 0
    assert len(json.loads(out)["users"]) == 6
    assert "2 malformed line(s) skipped" in err
    assert "line 3:" in err and "line 7:" in err


def test_table_lists_flagged_people_with_their_detectors(history_file: Path) -> None:
    code, out, _ = invoke("integrity", "scan", str(history_file))
    assert code == 0
    assert "Integrity scan" in out and GAMERS["padded_prompts"].user in out
    table = out.split("Integrity scan")[1].split(" events from ")[0]
    assert A[10].user not in table  # honest people are not listed without --all


def test_bad_input_exits_2(tmp_path: Path) -> None:
    code, _, err = invoke("integrity", "scan", str(tmp_path / "missing.jsonl"), "--json")
    assert code == 2 and "no such file" in err
    code, _, err = invoke("integrity", "scan", str(tmp_path))
    assert code == 2 and "is a directory: pass one event file" in err
    (tmp_path / "e.jsonl").write_text("")
    code, _, err = invoke("integrity", "scan", str(tmp_path / "e.jsonl"), "--threshold", "0")
    assert code == 2 and "--threshold" in err


def test_an_empty_history_scans_to_no_users(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    code, out, _ = invoke("integrity", "scan", str(path), "--json")
    assert code == 0 and json.loads(out) == {"users": []}


def test_record_then_review_through_the_cli(
    history_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, world_store: str | None
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {
        "MESHCLAW_HOME": str(tmp_path / "var"),
        "MESHCLAW_EMBEDDED_MODEL_SERVER": "false",
        "MESHCLAW_DATABASE_URL": world_store,
        "MESHCLAW_CONFIG": None,
        "MESHCLAW_TOKEN": None,
    }
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, list(args), env=env)
        return result.exit_code, result.stdout, result.stderr

    assert run("demo", "seed")[0] == 0
    code, auditor_token, _ = run("token", "create", "--user", "dave", "--org", "acme")
    assert code == 0
    code, alice_token, _ = run("token", "create", "--user", "alice", "--org", "acme")
    auditor, alice = auditor_token.strip(), alice_token.strip()
    code, _, err = run(
        "integrity", "scan", str(history_file), "--json", "--record", "--token", alice
    )
    assert code == 2 and "auditors" in err
    code, out, err = run(
        "integrity", "scan", str(history_file), "--json", "--record", "--token", auditor
    )
    assert code == 0 and "opened" in err
    flagged = [u["user"] for u in json.loads(out)["users"] if u["flagged"]]
    code, out, _ = run("integrity", "findings", "--json", "--token", auditor)
    queue = json.loads(out)["findings"]
    assert {f["subject"] for f in queue} == set(flagged)
    first = queue[0]["id"]
    code, _, err = run("integrity", "review", first, "dismiss", "--token", auditor)
    assert code == 2 and "reason" in err
    code, out, _ = run("integrity", "review", first, "dismiss", "--reason", "checked", "--json",
                       "--token", auditor)  # fmt: skip
    assert code == 0 and json.loads(out)["status"] == "dismissed"
    code, out, _ = run("integrity", "findings", "--status", "dismissed", "--token", auditor)
    assert code == 0 and "dismissed" in out and "Findings" in out
    code, out, _ = run(
        "integrity", "findings", "--status", "dismissed", "--json", "--token", auditor
    )
    assert [f["id"] for f in json.loads(out)["findings"]] == [first]
    code, out, _ = run("integrity", "findings", "--json", "--token", alice)
    assert json.loads(out) == {"findings": []}  # nobody's findings but one's own
