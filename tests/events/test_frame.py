"""Columnar loading: same verdicts as the typed reader, line numbers across blocks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from meshclaw.events import EventReader, fingerprint, load_frame
from tests.events.test_reader import WHO, ev, good_events, jsonl


def many(n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        rows.append(
            ev("llm_call", f"c{i}", **WHO, provider="p", model="m", input_tokens=i,
               output_tokens=1, prompt=f"word{i % 7} filler filler filler")
        )  # fmt: skip
    return rows


def test_loads_every_kind_with_features_instead_of_texts(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text(jsonl(good_events()))
    frame, report = load_frame(path)
    assert report.events == 5 and report.skipped == 0
    assert frame["kind"].to_list() == ["run", "llm_call", "tool_call", "outcome", "feedback"]
    assert frame["line"].to_list() == [1, 2, 3, 4, 5]
    assert "task" not in frame.columns and "prompt" not in frame.columns
    run = frame.row(0, named=True)
    assert tuple(run["task_minhash"]) == fingerprint("Summarise ticket OPS-12").minhash
    assert frame.row(1, named=True)["prompt_words"] == 4
    assert frame.schema["ts"] == pl.Datetime("us", "UTC")
    assert frame.row(2, named=True)["recipients"] == ["u2"]


@pytest.mark.parametrize("block_bytes", [64, 1 << 20])
def test_bad_lines_are_reported_with_the_same_numbers_as_the_typed_reader(
    tmp_path: Path, block_bytes: int
) -> None:
    rows: list[Any] = [
        *many(30),
        '{"v": 1, "kind": "run", "id": "x1"',
        ev("run", "x2", **WHO, trigger="by-hand", ended_at="2026-01-05T10:05:00Z", status="ok"),
        *many(3),  # duplicate ids c0..c2
        ev("tool_call", "x4", **WHO, tool="mail.send", action="write", status="ok"),
        {**ev("feedback", "x6", outcome="e4", by="u2", verdict="accepted"),
         "ts": "2026-01-05T10:00:00"},
        "",
        ev("llm_call", "x9", **WHO, provider="p", model="m", input_tokens="12", output_tokens=1),
        *many(40)[35:],
    ]  # fmt: skip
    path = tmp_path / "bad.jsonl"
    path.write_text(jsonl(rows).rstrip("\n"))  # and no newline at the end
    frame, report = load_frame(path, block_bytes=block_bytes)
    reader = EventReader(path)
    typed = list(reader)
    assert sorted(p.line for p in report.problems) == sorted(p.line for p in reader.report.problems)
    assert sorted(p.line for p in report.problems) == [31, 32, 33, 34, 35, 36, 37, 39]
    assert report.events == len(typed) == frame.height == 35
    assert report.lines == reader.report.lines == 44
    assert frame["id"].n_unique() == frame.height


def test_an_empty_file_gives_an_empty_frame(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    frame, report = load_frame(path)
    assert frame.height == 0 and report.events == 0 and "task_minhash" in frame.columns


def test_progress_reaches_the_file_size(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text(jsonl(many(500)))
    seen: list[tuple[int, int]] = []
    load_frame(path, progress=lambda done, total: seen.append((done, total)), block_bytes=4096)
    assert len(seen) > 3 and seen[-1] == (path.stat().st_size, path.stat().st_size)
    assert json.loads(path.read_text().splitlines()[0])["id"] == "c0"
