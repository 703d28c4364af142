"""Malformed or partial histories still scan: no texts, no feedback, no run events,
unknown fields, shuffled lines, duplicated ids."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from meshclaw.events import write_events
from meshclaw.integrity import scan_file
from tests.integrity.builder import Org
from tests.integrity.test_detectors import GAMERS, build


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    org = Org(seed=3)
    build(org)
    return org.rows


def scan(tmp_path: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    path = tmp_path / "h.jsonl"
    write_events(path, rows)
    result = scan_file(path)
    return {"result": result, "flagged": set(result.flagged)}


def test_shuffled_lines_and_unknown_fields_change_nothing(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    ordered = scan(tmp_path, rows)
    shuffled = [{**r, "x_source": {"system": "litellm"}} for r in rows]
    random.Random(0).shuffle(shuffled)
    again = scan(tmp_path, shuffled)
    assert again["flagged"] == ordered["flagged"]
    scores = {u.user: u.score for u in ordered["result"].users}
    assert {u.user: u.score for u in again["result"].users} == scores


def test_without_texts_the_text_detectors_are_silent_and_the_rest_still_work(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    bare = [{k: v for k, v in r.items() if k not in ("task", "prompt", "output")} for r in rows]
    out = scan(tmp_path, bare)
    detectors = {f.detector for u in out["result"].users for f in u.findings}
    assert "padded_prompts" not in detectors and "repeated_tasks" not in detectors
    for name in ("cron_churn", "self_addressed", "split_tasks", "reverted_outcomes"):
        assert GAMERS[name].user in out["flagged"], name


def test_without_feedback_or_run_events_everyone_is_still_scored(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    partial = [r for r in rows if r["kind"] not in ("feedback", "run")]
    out = scan(tmp_path, partial)
    users = {r["user"] for r in partial}
    assert {u.user for u in out["result"].users} == users
    detectors = {f.detector for u in out["result"].users for f in u.findings}
    assert "cron_churn" not in detectors  # triggers are on run events
    assert GAMERS["split_tasks"].user in out["flagged"]


def test_duplicated_and_broken_lines_are_reported_with_line_numbers(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    path = tmp_path / "h.jsonl"
    lines = [json.dumps(r) for r in rows[:400]]
    lines.insert(10, lines[3])  # line 11 repeats line 4's id
    lines.insert(20, '{"v": 1, "kind": "outcome"')  # line 21 is cut short
    path.write_text("\n".join(lines) + "\n")
    result = scan_file(path)
    problems = {p.line: p.message for p in result.report.problems}
    assert sorted(problems) == [11, 21]
    assert problems[11].startswith("duplicate id")
    assert result.report.events == 400
