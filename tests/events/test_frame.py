"""Columnar loading: same verdicts as the typed reader, line numbers across blocks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from meshclaw.events import (
    EventReader,
    ReadReport,
    Run,
    fingerprint,
    iter_frames,
    load_frame,
    map_frames,
)
from meshclaw.events._frame import LINE_BY_LINE_BYTES
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


def _mixed(n: int) -> list[Any]:
    """``n`` good events of every kind with texts, and bad lines spread among them."""
    rows: list[Any] = []
    for i in range(n):
        run = {"agent": "a1", "run": f"r{i // 4}"}
        if i % 4 == 0:
            rows.append(ev("run", f"e{i}", **run, trigger="cron", status="ok",
                           ended_at="2026-01-05T10:05:00.250+01:00",
                           task=f"Summarise ticket OPS-{i % 13} for the team"))  # fmt: skip
        elif i % 4 == 1:
            rows.append(ev("llm_call", f"e{i}", **run, provider="p", model="m", input_tokens=i,
                           output_tokens=2, prompt=f"a  b a w{i % 5} c"))  # fmt: skip
        elif i % 4 == 2:
            rows.append(ev("tool_call", f"e{i}", **run, tool="mail.send", action="write",
                           target=f"mail:{i}", status="ok", recipients=["u2"]))  # fmt: skip
        else:
            rows.append(ev("outcome", f"e{i}", **run, type="mail_sent", ref=f"mail:{i}",
                           beneficiary="u2", verified=True, ts="2026-01-05T11:00:00Z"))  # fmt: skip
    bad: list[Any] = [
        "{broken",
        "",
        "   ",
        ev("run", "x1", **WHO, trigger="by-hand", ended_at="2026-01-05T10:05:00Z", status="ok"),
        {**ev("feedback", "x2", outcome="e3", by="u2", verdict="accepted"), "ts": "2026-01-05"},
        ev("llm_call", "x3", **WHO, provider="p", model="m", input_tokens=-1, output_tokens=1),
        ev("llm_call", "e5", **WHO, provider="p", model="m", input_tokens=1, output_tokens=1),
    ]
    for k, line in enumerate(bad):  # one bad line every n // len(bad) good ones
        rows.insert((k + 1) * n // len(bad) + k, line)
    return rows


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.jsonl"
    path.write_text(jsonl(_mixed(6000)))
    return path


def test_a_bad_line_in_a_big_block_is_reported_as_the_typed_reader_does(mixed: Path) -> None:
    assert mixed.stat().st_size > 3 * LINE_BY_LINE_BYTES  # the block is cut into pieces
    frame, report = load_frame(mixed)
    reader = EventReader(mixed)
    typed = list(reader)
    assert [str(p) for p in report.problems] == [str(p) for p in reader.report.problems]
    assert report.skipped == 5 and report.events == len(typed) == frame.height
    assert frame["id"].to_list() == [e.id for e in typed]


@pytest.mark.parametrize("block_bytes", [1 << 15, 1 << 25])
def test_projected_and_streamed_reads_match_the_full_read(mixed: Path, block_bytes: int) -> None:
    full, report = load_frame(mixed)
    columns = ["id", "ts", "kind", "task_minhash", "prompt_unique", "line"]
    projected, projected_report = load_frame(mixed, columns=columns, block_bytes=block_bytes)
    assert_frame_equal(projected, full.select(columns))
    assert [str(p) for p in projected_report.problems] == [str(p) for p in report.problems]
    streamed_report = ReadReport()
    heights = list(
        map_frames(mixed, lambda b: (b.columns, b.height), report=streamed_report,
                   columns=["line", "user"], block_bytes=block_bytes)
    )  # fmt: skip
    assert all(cols == ["line", "user"] for cols, _ in heights)
    assert sum(h for _, h in heights) == full.height + 1  # the duplicate id is kept here
    assert streamed_report.lines == report.lines
    assert [p.line for p in streamed_report.problems] == [p.line for p in report.problems[:-1]]


def test_text_features_and_times_are_what_the_typed_reader_sees(mixed: Path) -> None:
    frame, _ = load_frame(mixed)
    typed = {e.id: e for e in EventReader(mixed)}
    for row in frame.head(8).iter_rows(named=True):
        event = typed[row["id"]]
        assert row["ts"] == event.ts
        if isinstance(event, Run):
            assert row["ended_at"] == event.ended_at  # an offset and a fraction
            assert event.task_print is not None
            assert tuple(row["task_minhash"]) == event.task_print.minhash
        elif row["kind"] == "llm_call":
            assert (row["prompt_words"], row["prompt_unique"]) == (6, 5)  # "a  b a wN c"


def test_unknown_columns_are_refused(mixed: Path) -> None:
    with pytest.raises(ValueError, match="'task'"):
        load_frame(mixed, columns=["id", "task"])
    frame, _ = load_frame(mixed, columns=["prompt_hash"])
    assert frame.columns == ["prompt_hash"]


def test_an_empty_file_gives_an_empty_block_of_the_columns_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    blocks = list(iter_frames(path, report=ReadReport(), columns=["kind", "prompt_words"]))
    assert [b.columns for b in blocks] == [["kind", "prompt_words"]] and blocks[0].height == 0
