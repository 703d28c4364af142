"""``meshclaw leaderboard`` and ``meshclaw report`` on event files, through the real Typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from meshclaw.cli.main import app
from tests.analytics._history import Org


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def history(tmp_path: Path) -> Path:
    org = Org()
    for i in range(2):
        org.feedback(org.outcome("alice", type="deploy", hours=i), "bob", "accepted", hours=i + 1)
    org.feedback(org.outcome("bob", beneficiary="carol", value=3.0), "carol", "accepted")
    undone = org.outcome("carol", team="t2", beneficiary="alice")
    org.feedback(undone, "alice", "accepted")
    org.feedback(undone, "system", "rolled_back", hours=40)
    org.outcome("dave", team="t2", verified=False)
    org.feedback("ghost", "bob", "accepted")
    return org.write(tmp_path / "events.jsonl", extra_lines=["{broken", "[1, 2]"])


def test_leaderboard_json_is_exactly_the_documented_shape(history: Path, tmp_path: Path) -> None:
    result = _invoke("leaderboard", str(history), "--json", "--cache-dir", str(tmp_path / "c"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "entries": [
            {"rank": 1, "user": "bob", "score": 3.0},
            {"rank": 2, "user": "alice", "score": round(1 + 2**-0.5, 6)},
        ]
    }
    assert "2 malformed line(s) skipped" in result.stderr
    assert "line 22:" in result.stderr and "line 23:" in result.stderr
    assert "1 feedback event(s) for unknown outcomes" in result.stderr
    assert "unknown outcome ghost" in result.stderr


def test_leaderboard_top_team_board_and_table(history: Path, tmp_path: Path) -> None:
    cache = ["--cache-dir", str(tmp_path / "c")]
    top = _invoke("leaderboard", str(history), "--top", "1", "--json", *cache)
    assert json.loads(top.stdout) == {"entries": [{"rank": 1, "user": "bob", "score": 3.0}]}
    teams = _invoke("leaderboard", str(history), "--by", "team", "--json", *cache)
    assert [e["team"] for e in json.loads(teams.stdout)["entries"]] == ["t1"]
    table = _invoke("leaderboard", str(history), *cache)
    assert table.exit_code == 0 and "bob" in table.stdout and "3.000" in table.stdout


def test_leaderboard_withholds_credit_of_open_findings(history: Path, tmp_path: Path) -> None:
    findings = tmp_path / "findings.json"
    findings.write_text(json.dumps({"users": [
        {"user": "bob", "flagged": True, "score": 0.9, "findings": []},
        {"user": "alice", "flagged": True, "score": 0.7, "findings": [], "status": "dismissed"},
    ]}))  # fmt: skip
    args = ("leaderboard", str(history), "--findings", str(findings), "--no-cache")
    board = json.loads(_invoke(*args, "--json").stdout)
    assert board["entries"][0]["user"] == "alice"
    assert board["entries"][1] == {"rank": 2, "user": "bob", "score": 0.0}
    assert "pending review" in _invoke(*args).stdout


def test_report_json(history: Path, tmp_path: Path) -> None:
    result = _invoke("report", str(history), "--json", "--cache-dir", str(tmp_path / "c"))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["input"]["skipped"] == 2
    assert [p["line"] for p in report["input"]["problems"]] == [22, 23]
    assert report["input"]["unknown_feedback"] == [{"line": 21, "id": "e21", "outcome": "ghost"}]
    totals = report["totals"]
    assert (totals["outcomes"], totals["eligible"], totals["accepted"], totals["durable"]) == (
        5, 4, 4, 3,
    )  # fmt: skip
    assert totals["credited"] == 3 and totals["active"] == 2 and totals["people"] == 4
    assert totals["acceptance_rate"] == 1.0 and totals["durability_rate"] == 0.75
    assert totals["cost_usd"] == pytest.approx(0.05)
    assert totals["cost_per_outcome"] == round(0.05 / 3, 6)
    t1, t2 = report["teams"]
    assert (t1["team"], t1["credited"], t1["active"]) == ("t1", 3, 2)
    assert (t2["team"], t2["credited"], t2["cost_per_outcome"]) == ("t2", 0, None)
    (week,) = report["weeks"]
    assert week["week_ending"] == "2026-03-06T17:00:00Z"
    assert (week["people"], week["active"], week["adoption_rate"]) == (4, 2, 0.5)
    assert week["active_by_team"] == {"t1": 2}
    assert report["period"]["cutoff"] == "Friday 17:00 UTC"


def test_report_table(history: Path, tmp_path: Path) -> None:
    result = _invoke(
        "report", str(history), "--no-cache", "--cutoff-weekday", "0", "--cutoff-hour", "9"
    )
    assert result.exit_code == 0, result.output
    assert "By team" in result.stdout and "Weekly adoption" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("leaderboard", "missing.jsonl"),
        ("report", "{file}", "--cutoff-hour", "24"),
        ("leaderboard", "{file}", "--by", "agent"),
        ("leaderboard", "{file}", "--weights", "{file}"),
    ],
)
def test_bad_input_exits_2(history: Path, args: tuple[str, ...]) -> None:
    result = _invoke(*(a.replace("{file}", str(history)) for a in args), "--no-cache")
    assert result.exit_code == 2, result.output
    assert "error:" in result.stderr


def test_an_empty_or_all_garbage_file_gives_an_empty_board(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert json.loads(_invoke("leaderboard", str(empty), "--json", "--no-cache").stdout) == {
        "entries": []
    }
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("nope\n\x00\x01\n{}\n")
    result = _invoke("report", str(garbage), "--json", "--no-cache")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["input"]["skipped"] == 3
    table = _invoke("report", str(garbage), "--no-cache")
    assert table.exit_code == 0, table.output
    assert "3 malformed line(s) skipped; no events; weeks end" in " ".join(table.stdout.split())


def test_scan_runs_the_integrity_engine_on_the_same_file(history: Path) -> None:
    result = _invoke("leaderboard", str(history), "--scan", "--json", "--no-cache")
    assert result.exit_code == 0, result.output
    # Three people are too few for any detector to be confident: nothing is withheld.
    assert [e["user"] for e in json.loads(result.stdout)["entries"]] == ["bob", "alice"]
