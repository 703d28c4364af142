"""The typed streaming reader and the writer of event format v1."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshclaw.events import (
    EventReader,
    EventWriter,
    Feedback,
    LlmCall,
    Outcome,
    Run,
    ToolCall,
    fingerprint,
    loads,
    read_events,
    write_events,
)

BASE = {"v": 1, "ts": "2026-01-05T10:00:00Z", "org": "acme", "team": "t1", "user": "u1"}
WHO = {"agent": "a1", "run": "r1"}


def ev(kind: str, ident: str, **fields: Any) -> dict[str, Any]:
    return {**BASE, "kind": kind, "id": ident, **fields}


def good_events() -> list[dict[str, Any]]:
    return [
        ev("run", "e1", **WHO, trigger="manual", ended_at="2026-01-05T10:05:00+00:00",
           status="ok", task="Summarise ticket OPS-12", role="engineer"),
        ev("llm_call", "e2", **WHO, provider="openai", model="gpt-4.1", input_tokens=120,
           output_tokens=30, cost_usd=0.01, prompt="summarise ticket OPS-12 please"),
        ev("tool_call", "e3", **WHO, tool="mail.send", action="write", target="mail:thread/8",
           status="ok", recipients=["u2"]),
        ev("outcome", "e4", **WHO, type="mail_sent", ref="mail:thread/8", beneficiary="u2",
           verified=True, tool_call="e3"),
        ev("feedback", "e5", outcome="e4", by="u2", verdict="accepted"),
    ]  # fmt: skip


def jsonl(rows: list[Any]) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def test_reads_every_kind_as_typed_events() -> None:
    events, report = loads(jsonl(good_events()))
    assert [type(e) for e in events] == [Run, LlmCall, ToolCall, Outcome, Feedback]
    assert report.events == 5 and report.skipped == 0 and report.lines == 5
    run = events[0]
    assert isinstance(run, Run)
    assert run.ts == datetime(2026, 1, 5, 10, tzinfo=UTC)
    assert run.ended_at == datetime(2026, 1, 5, 10, 5, tzinfo=UTC)
    assert run.role == "engineer"
    assert isinstance(events[2], ToolCall) and events[2].recipients == ["u2"]


def test_texts_become_fingerprints_and_are_dropped_unless_retained() -> None:
    events, _ = loads(jsonl(good_events()))
    run, call = events[0], events[1]
    assert isinstance(run, Run) and isinstance(call, LlmCall)
    assert run.task is None and call.prompt is None
    assert run.task_print == fingerprint("Summarise ticket OPS-12")
    assert call.prompt_print is not None and call.prompt_print.words == 3  # "please" is a stop word
    kept, _ = read_events(io.BytesIO(jsonl(good_events()).encode()), retain_texts=True)
    assert isinstance(kept[0], Run) and kept[0].task == "Summarise ticket OPS-12"
    assert kept[0].task_print is not None


def test_malformed_lines_are_reported_with_line_numbers_and_skipped() -> None:
    rows: list[Any] = [
        *good_events()[:2],
        '{"v": 1, "kind": "run", "id": "x1"',  # 3: broken JSON
        "",  # 4: blank, ignored
        ev("run", "x2", **WHO, trigger="by-hand", ended_at="2026-01-05T10:05:00Z", status="ok"),
        ev("llm_call", "x3", **WHO, provider="p", model="m", input_tokens=-5, output_tokens=1),
        ev("tool_call", "x4", **WHO, tool="mail.send", action="write", status="ok"),  # 7
        {**ev("feedback", "x5", outcome="e4", by="u2", verdict="accepted"), "ts": "yesterday"},
        {**ev("feedback", "x6", outcome="e4", by="u2", verdict="accepted"),
         "ts": "2026-01-05T10:00:00"},  # 9: no time zone
        ev("gossip", "x7"),  # 10
        ev("feedback", "e2", outcome="e4", by="u2", verdict="accepted"),  # 11: duplicate id
        "[1, 2, 3]",  # 12
        *good_events()[2:],
    ]  # fmt: skip
    events, report = loads(jsonl(rows))
    assert [e.id for e in events] == ["e1", "e2", "e3", "e4", "e5"]
    assert report.lines == 15 and report.events == 5 and report.skipped == 9
    by_line = {p.line: p.message for p in report.problems}
    assert sorted(by_line) == [3, 5, 6, 7, 8, 9, 10, 11, 12]
    assert "malformed" in by_line[3]
    assert "trigger" in by_line[5]
    assert "input_tokens" in by_line[6] and ">= 0" in by_line[6]
    assert "target" in by_line[7]
    assert "ts" in by_line[8] and "ts" in by_line[9]
    assert "kind" in by_line[10]
    assert by_line[11] == "duplicate id 'e2'"
    assert str(report.problems[0]).startswith("line 3: ")


def test_unknown_fields_are_ignored_or_kept_on_request() -> None:
    row = {**good_events()[4], "x_source": "litellm", "x_meta": {"a": [1]}}
    events, report = loads(jsonl([row]))
    assert report.skipped == 0 and events[0].extra is None
    kept = list(EventReader(io.BytesIO(jsonl([row]).encode()), keep_unknown=True))
    assert kept[0].extra == {"x_source": "litellm", "x_meta": {"a": [1]}}


def test_writer_round_trips_events_and_keeps_unknown_fields(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    rows = good_events()
    rows[0]["x_note"] = "kept"
    src.write_text(jsonl(rows))
    reader = EventReader(src, retain_texts=True, keep_unknown=True)
    out = tmp_path / "out.jsonl"
    assert write_events(out, reader) == 5
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written[0]["x_note"] == "kept"
    assert written[0]["ended_at"] == "2026-01-05T10:05:00Z"
    for original, again in zip(rows, written, strict=True):
        assert {k: v for k, v in again.items() if k not in ("ts", "ended_at")} == {
            k: v for k, v in original.items() if k not in ("ts", "ended_at")
        }
    again_events, report = read_events(out)
    assert report.skipped == 0 and len(again_events) == 5


def test_writer_accepts_wire_dicts_and_streams() -> None:
    buffer = io.BytesIO()
    with EventWriter(buffer) as writer:
        for row in good_events():
            writer.write(row)
    assert buffer.getvalue().count(b"\n") == 5
    events, report = loads(buffer.getvalue())
    assert report.events == len(events) == 5
