"""The scan reads a file block by block, projected to the detectors' columns, folding
each block on the reading threads: the same history and findings as one whole frame."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from polars.testing import assert_frame_equal

from meshclaw.events import ReadReport, load_frame, map_frames, write_events
from meshclaw.integrity import scan_file, scan_frame
from meshclaw.integrity._history import HISTORY_COLUMNS, HistoryBuilder, build_history
from tests.integrity.builder import Org
from tests.integrity.test_detectors import build


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    org = Org(seed=5)
    build(org)
    out = tmp_path_factory.mktemp("streamed") / "h.jsonl"
    write_events(out, org.rows)
    return out


def test_many_small_blocks_build_the_history_of_the_whole_frame(path: Path) -> None:
    whole = build_history(load_frame(path)[0])
    builder = HistoryBuilder()
    for block in map_frames(
        path, lambda b: b, report=ReadReport(), columns=HISTORY_COLUMNS, block_bytes=1 << 16
    ):
        builder.add(block)
    streamed = builder.finish()
    assert path.stat().st_size > 20 * (1 << 16)
    # A run's repeated prompts are counted per block: the one count that may differ.
    runs = streamed.runs.drop("distinct_prompts").sort("run")
    assert_frame_equal(runs, whole.runs.drop("distinct_prompts").sort("run"))
    for name, key in (("outcomes", "id"), ("users", "user"), ("writes", "id")):
        assert_frame_equal(getattr(streamed, name).sort(key), getattr(whole, name).sort(key))
    reads = ["user", "run", "target", "ts"]
    assert_frame_equal(streamed.reads.sort(reads), whole.reads.sort(reads))


def test_scan_file_finds_what_a_whole_frame_scan_finds_and_says_it_the_same_way(
    path: Path,
) -> None:
    first = scan_file(path)
    assert first.flagged  # the module's gamers
    again = scan_file(path)
    assert json.dumps(again.to_json()) == json.dumps(first.to_json())  # evidence included
    frame, report = load_frame(path)
    whole = scan_frame(frame, report=report)
    assert whole.to_json() == first.to_json()
