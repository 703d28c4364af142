"""The first read of a file: streamed block by block into the analytics tables, with the
same tables, scores and read report as reducing the whole validated frame at once."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from meshclaw import analytics
from meshclaw.events import load_frame
from tests.analytics._history import Org


@pytest.fixture
def history(tmp_path: Path) -> Path:
    org = Org()
    people = [("alice", "t1"), ("bob", "t1"), ("carol", "t2"), ("dave", "t2")]
    for i in range(240):
        user, team = people[i % 4]
        other = people[(i + 1) % 4][0]
        outcome = org.outcome(user, team, beneficiary=other, hours=i / 7, value=1 + i % 3)
        org.feedback(outcome, other, "accepted" if i % 5 else "rejected", hours=i / 7 + 2)
        if i % 11 == 0:
            org.feedback(outcome, "system", "reverted", hours=i / 7 + 30)
    path = org.write(tmp_path / "events.jsonl")
    lines = path.read_text().splitlines()
    repeated = lines[500]  # an id seen before, later in the file
    lines[700:700] = [repeated, "{broken", "", json.dumps({"v": 1, "kind": "run"})]
    path.write_text("\n".join(lines) + "\n")
    return path


def _whole_frame_tables(path: Path) -> dict[str, pl.DataFrame]:
    frame, _ = load_frame(path)
    tables = analytics.tables_from_frame(frame)
    outcomes, feedback, activity = pl.collect_all(
        [tables.outcomes, tables.feedback, tables.activity]
    )
    return {"outcomes": outcomes, "feedback": feedback, "activity": activity}


@pytest.mark.parametrize("block_bytes", [1 << 13, 1 << 25])
def test_streamed_first_read_equals_reducing_the_whole_frame(
    history: Path, tmp_path: Path, block_bytes: int
) -> None:
    loaded = analytics.load_history(history, cache_dir=tmp_path / "c", block_bytes=block_bytes)
    assert not loaded.cached
    want = _whole_frame_tables(history)
    assert_frame_equal(loaded.tables.outcomes.collect(), want["outcomes"])
    assert_frame_equal(loaded.tables.feedback.collect(), want["feedback"])
    key = ["team", "user", "hour"]
    assert_frame_equal(
        loaded.tables.activity.collect().sort(key), want["activity"].sort(key), rel_tol=1e-12
    )
    _, report = load_frame(history)
    assert [str(p) for p in loaded.report.problems] == [str(p) for p in report.problems]
    assert (loaded.report.events, loaded.report.lines) == (report.events, report.lines)
    assert [p.line for p in report.problems] == [702, 704, 701]  # a repeated id: reported last

    board = analytics.leaderboard(analytics.compute_credit(loaded.tables))
    cached = analytics.load_history(history, cache_dir=tmp_path / "c")
    assert cached.cached
    again = analytics.leaderboard(analytics.compute_credit(cached.tables))
    assert again.to_json() == board.to_json() and len(board.entries) == 4
