"""Load an event history for analytics, through a columnar cache.

The JSON Lines file is read once with ``events.map_frames`` (the event format's own
reader: validation, line numbers of skipped lines, duplicate ids), projected to the
columns the analytics use, and reduced block by block, on the reading threads, to the
three small tables the analytics need (``Tables``), so the first read holds one block
of the file at a time:

- ``outcomes``: one row per outcome event;
- ``feedback``: one row per feedback event;
- ``activity``: per team, person and hour, how many events and model calls there were
  and what the calls cost (hours, because cut-offs fall on the hour).

They are written as Parquet files to the cache directory with the read report beside
them; later runs on the same file (same path, size and modification time) read only
those, lazily. Outcomes and feedback are about a tenth of a history each, and
``activity`` is a fraction of the rest, so every later command reads a small part.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl

from meshclaw.events import (
    BLOCK_BYTES,
    LineProblem,
    ReadReport,
    map_frames,
    report_duplicates,
)

CACHE_VERSION = 3
"""Bump when the cached tables or their meaning change."""

OUTCOME_COLUMNS = (
    "id", "line", "ts", "team", "user", "agent", "run", "type", "ref", "beneficiary",
    "verified", "value",
)  # fmt: skip
FEEDBACK_COLUMNS = ("id", "line", "ts", "outcome", "by", "verdict")
_TABLES = ("outcomes", "feedback", "activity", "status", "unknown")

Progress = Callable[[int, int], None]


@dataclass(kw_only=True)
class Tables:
    """What the analytics read from a history."""

    outcomes: pl.LazyFrame
    """``OUTCOME_COLUMNS`` of every outcome event."""
    feedback: pl.LazyFrame
    """``FEEDBACK_COLUMNS`` of every feedback event."""
    activity: pl.LazyFrame
    """``team``, ``user``, ``hour`` (UTC, truncated), ``events``, ``first_ts``,
    ``last_ts``, ``llm_calls``, ``cost_usd`` and ``calls_without_cost``."""
    status: pl.LazyFrame | None = None
    """Precomputed ``analytics._credit.outcome_status`` (from the cache), if any."""
    unknown: pl.LazyFrame | None = None
    """Precomputed feedback about unknown outcomes (from the cache), if any."""


@dataclass(kw_only=True)
class History:
    """An event history ready for analytics."""

    tables: Tables
    report: ReadReport
    """What reading the file saw: lines, events, every skipped line with its reason."""
    cached: bool = False
    """Read from the columnar cache (the JSON Lines file was not parsed this time)."""


def tables_from_frame(frame: pl.DataFrame | pl.LazyFrame) -> Tables:
    """Reduce a ``load_frame``-style history to ``Tables`` (lazily)."""
    lf = frame.lazy()
    kind = pl.col("kind")
    is_call = kind == "llm_call"
    return Tables(
        outcomes=lf.filter(kind == "outcome").select(OUTCOME_COLUMNS),
        feedback=lf.filter(kind == "feedback").select(FEEDBACK_COLUMNS),
        activity=lf.group_by("team", "user", pl.col("ts").dt.truncate("1h").alias("hour")).agg(
            pl.len().alias("events"),
            pl.col("ts").min().alias("first_ts"),
            pl.col("ts").max().alias("last_ts"),
            is_call.sum().alias("llm_calls"),
            pl.col("cost_usd").filter(is_call).sum().alias("cost_usd"),
            (is_call & pl.col("cost_usd").is_null()).sum().alias("calls_without_cost"),
        ),
    )


READ_COLUMNS = (
    "line", "kind", "id", "ts", "team", "user", "agent", "run", "type", "ref",
    "beneficiary", "verified", "value", "outcome", "by", "verdict", "cost_usd",
)  # fmt: skip
"""What ``tables_from_frame`` reads of each event (the reader validates every field)."""


@dataclass(frozen=True, kw_only=True)
class _Part:
    """One block reduced: its outcomes, feedback and hourly activity, and its ids."""

    outcomes: pl.DataFrame
    feedback: pl.DataFrame
    activity: pl.DataFrame
    ids: pl.DataFrame


def _reduce(block: pl.DataFrame, drop: pl.Series | None = None) -> _Part:
    if drop is not None:
        block = block.filter(~pl.col("line").is_in(drop.implode()))
    tables = tables_from_frame(block)
    outcomes, feedback, activity = pl.collect_all(
        [tables.outcomes, tables.feedback, tables.activity]
    )
    return _Part(
        outcomes=outcomes, feedback=feedback, activity=activity, ids=block.select("id", "line")
    )


def _combine(parts: list[_Part]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The blocks' tables as one: activity of an hour split across blocks is summed."""
    activity = pl.concat([p.activity for p in parts])
    if len(parts) > 1:
        activity = (
            activity.group_by("team", "user", "hour")
            .agg(
                pl.col("events").sum(),
                pl.col("first_ts").min(),
                pl.col("last_ts").max(),
                pl.col("llm_calls").sum(),
                pl.col("cost_usd").sum(),
                pl.col("calls_without_cost").sum(),
            )
            .cast(parts[0].activity.schema)
        )
    return (
        pl.concat([p.outcomes for p in parts]),
        pl.concat([p.feedback for p in parts]),
        activity,
    )


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/meshclaw``, else ``~/.cache/meshclaw``."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "meshclaw"


def _cache_key(path: Path) -> str:
    stat = path.stat()
    ident = f"{CACHE_VERSION}\0{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


def _report_to_json(report: ReadReport) -> dict[str, Any]:
    return {
        "lines": report.lines,
        "events": report.events,
        "skipped": report.skipped,
        "problems": [{"line": p.line, "message": p.message} for p in report.problems],
    }


def _report_from_json(data: dict[str, Any]) -> ReadReport:
    return ReadReport(
        lines=int(data["lines"]),
        events=int(data["events"]),
        skipped=int(data["skipped"]),
        problems=[
            LineProblem(line=int(p["line"]), message=str(p["message"])) for p in data["problems"]
        ],
    )


def _read_cache(entry: Path) -> History | None:
    meta = entry / "meta.json"
    if not meta.exists() or not all((entry / f"{t}.parquet").exists() for t in _TABLES):
        return None
    try:
        report = _report_from_json(json.loads(meta.read_text()))
    except (ValueError, KeyError, TypeError):
        return None  # a damaged entry is rebuilt
    tables = Tables(**{t: pl.scan_parquet(entry / f"{t}.parquet") for t in _TABLES})
    return History(tables=tables, report=report, cached=True)


def _write_cache(entry: Path, tables: dict[str, pl.DataFrame], report: ReadReport) -> None:
    tmp = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, table in tables.items():
        table.write_parquet(tmp / f"{name}.parquet", compression="lz4", statistics=True)
    (tmp / "meta.json").write_text(json.dumps(_report_to_json(report)))
    shutil.rmtree(entry, ignore_errors=True)
    try:
        os.replace(tmp, entry)
    except OSError:  # another process cached the same file first
        shutil.rmtree(tmp, ignore_errors=True)


def load_history(
    source: str | Path,
    *,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    progress: Progress | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> History:
    """Load ``source`` (event format v1) for analytics; see the module docstring.

    A file with repeated ids is reduced twice (the second time without the repeats,
    which are only known at the end); every other file is read once.
    """
    path = Path(source)
    entry = (cache_dir or default_cache_dir()) / _cache_key(path)
    if use_cache and (history := _read_cache(entry)) is not None:
        return history
    from meshclaw.analytics._credit import outcome_status  # the rules sit above the loader

    report = ReadReport()
    read = partial(map_frames, path, columns=READ_COLUMNS, block_bytes=block_bytes)
    parts = list(read(_reduce, report=report, progress=progress))
    ids = pl.concat([p.ids for p in parts])
    first = report_duplicates(ids, report)
    if first is not None:  # rare: reduce again without the repeated ids' lines
        parts = list(read(partial(_reduce, drop=ids.filter(~first)["line"]), report=ReadReport()))
    del ids
    outcomes, feedback, activity = _combine(parts)
    del parts
    eager = Tables(outcomes=outcomes.lazy(), feedback=feedback.lazy(), activity=activity.lazy())
    status, unknown = pl.collect_all(list(outcome_status(eager)))
    frames = {
        "outcomes": outcomes, "feedback": feedback, "activity": activity,
        "status": status, "unknown": unknown,
    }  # fmt: skip
    if use_cache:
        _write_cache(entry, frames, report)
    return History(tables=Tables(**{k: v.lazy() for k, v in frames.items()}), report=report)


def span(tables: Tables) -> tuple[datetime | None, datetime | None]:
    """Times of the first and the last event."""
    row = tables.activity.select(pl.col("first_ts").min(), pl.col("last_ts").max()).collect()
    return row.row(0) if row.height else (None, None)
