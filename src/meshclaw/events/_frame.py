"""Columnar loading of event format v1: a whole history as one Polars ``DataFrame``.

For analytics over millions of events (integrity scans, leaderboards, reports). The file
is read in blocks of whole lines. Each block is parsed by Polars' multi-threaded NDJSON
reader and validated with vectorised checks; a block that Polars cannot parse (broken
JSON, a wrong type, blank lines) is re-read line by line with the typed ``EventReader``
rules, so every skipped line is still reported with its line number. Duplicate ids are
reported and only the first one is kept.

Columns of the result (``FRAME_SCHEMA``): ``line`` (1-based line in the input), the
envelope (``kind``, ``id``, ``ts``, ``org``, ``team``, ``user``, ``agent``, ``run``) and
every kind's own fields, with texts replaced by features: ``task_minhash`` (the task's
``TextPrint.minhash``), ``prompt_words``, ``prompt_unique`` (distinct space-separated
words) and ``prompt_hash`` (for spotting verbatim repeats).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import polars as pl

from meshclaw.events._fingerprint import K, minhash_series
from meshclaw.events._models import KINDS, Event
from meshclaw.events._reader import ReadReport, _decode_error, event_to_dict

BLOCK_BYTES = 32 << 20

_S, _I, _F, _B = pl.String, pl.Int64, pl.Float64, pl.Boolean
WIRE_SCHEMA: dict[str, Any] = {
    "v": _I, "kind": _S, "id": _S, "ts": _S, "org": _S, "team": _S, "user": _S,
    "agent": _S, "run": _S,
    "trigger": _S, "ended_at": _S, "status": _S, "task": _S, "role": _S,
    "provider": _S, "model": _S, "input_tokens": _I, "output_tokens": _I,
    "cache_read_tokens": _I, "reasoning_tokens": _I, "cost_usd": _F, "latency_ms": _F,
    "prompt": _S,
    "tool": _S, "action": _S, "target": _S, "recipients": pl.List(_S),
    "type": _S, "ref": _S, "beneficiary": _S, "verified": _B, "value": _F, "tool_call": _S,
    "outcome": _S, "by": _S, "verdict": _S,
}  # fmt: skip

_REQUIRED: dict[str, tuple[str, ...]] = {
    "run": ("agent", "run", "trigger", "ended_at", "status"),
    "llm_call": ("agent", "run", "provider", "model", "input_tokens", "output_tokens"),
    "tool_call": ("agent", "run", "tool", "action", "target", "status"),
    "outcome": ("agent", "run", "type", "ref", "beneficiary", "verified"),
    "feedback": ("outcome", "by", "verdict"),
}
_ENUMS: dict[str, dict[str, tuple[str, ...]]] = {
    "run": {
        "trigger": ("manual", "cron", "webhook", "chat", "mail", "api"),
        "status": ("ok", "error", "cancelled"),
    },
    "tool_call": {"action": ("read", "write"), "status": ("ok", "error", "denied")},
    "feedback": {
        "verdict": ("accepted", "rejected", "reverted", "reopened", "rolled_back", "cancelled")
    },
}
_COUNTS = ("input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens")
_TOOL_PATTERN = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+$"


def _time(column: str) -> pl.Expr:
    """RFC 3339 text -> UTC datetime; null when unparseable or without a zone."""
    return pl.col(column).str.to_datetime(
        format="%Y-%m-%dT%H:%M:%S%.f%#z", time_unit="us", time_zone="UTC", strict=False
    )


Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total) after each block."""


def _checks(df: pl.DataFrame) -> list[tuple[pl.Expr, str]]:
    """(expression true on a bad row, message) pairs mirroring the typed models."""
    kind = pl.col("kind")
    checks: list[tuple[pl.Expr, str]] = [
        (pl.col("v").is_null() | (pl.col("v") != 1), "`v` must be 1"),
        (kind.is_null(), "missing required field `kind`"),
        (kind.is_not_null() & ~kind.is_in(KINDS), "unknown `kind`"),
    ]
    for name in ("id", "ts", "org", "team", "user"):
        col = pl.col(name)
        checks.append((col.is_null() | (col.str.len_bytes() == 0), f"missing field `{name}`"))
    checks.append((_time("ts").is_null(), "`ts` is not an RFC 3339 time with zone"))
    for k, fields in _REQUIRED.items():
        for name in fields:
            checks.append(((kind == k) & pl.col(name).is_null(), f"missing field `{name}`"))
        for name, allowed in _ENUMS.get(k, {}).items():
            bad = (kind == k) & pl.col(name).is_not_null() & ~pl.col(name).is_in(allowed)
            checks.append((bad, f"`{name}` must be one of {', '.join(allowed)}"))
    checks.append(
        (
            (kind == "run") & pl.col("ended_at").is_not_null()
            & _time("ended_at").is_null(),
            "`ended_at` is not an RFC 3339 time with zone",
        )
    )  # fmt: skip
    checks.append(
        (
            (kind == "tool_call") & pl.col("tool").is_not_null()
            & ~pl.col("tool").str.contains(_TOOL_PATTERN),
            "`tool` must look like connector.tool",
        )
    )  # fmt: skip
    for name in (*_COUNTS, "cost_usd", "latency_ms", "value"):
        checks.append((pl.col(name) < 0, f"`{name}` must be >= 0"))
    return checks


def _validate(df: pl.DataFrame, report: ReadReport) -> pl.DataFrame:
    checks = _checks(df)
    any_bad_fast = df.select(
        pl.any_horizontal(*[cond.fill_null(False) for cond, _ in checks]).any()
    ).item()
    if not any_bad_fast:
        return df
    flags = df.select(
        *[cond.fill_null(False).alias(f"c{i}") for i, (cond, _) in enumerate(checks)],
        pl.col("line"),
    )
    any_bad = flags.select(pl.any_horizontal(pl.exclude("line")).alias("bad"))["bad"]
    if not any_bad.any():
        return df
    bad_rows = flags.filter(any_bad)
    for row in bad_rows.iter_rows(named=True):
        reasons = [msg for i, (_, msg) in enumerate(checks) if row[f"c{i}"]]
        report.add_problem(row["line"], "; ".join(reasons))
    return df.filter(~any_bad)


def _slow_block(block: bytes, first_line: int, report: ReadReport) -> pl.DataFrame:
    """Line-by-line decoding with the typed models; bad lines are reported."""
    decoder = msgspec.json.Decoder(Event)
    rows: list[dict[str, Any]] = []
    for offset, line in enumerate(block.split(b"\n")[:-1]):
        if not line.strip():
            continue
        number = first_line + offset
        try:
            event = decoder.decode(line)
        except msgspec.DecodeError as exc:
            report.add_problem(number, _decode_error(exc))
            continue
        row = event_to_dict(event)
        row["line"] = number
        for key in ("ts", "ended_at"):
            if key in row:
                row[key] = row[key].replace("+00:00", "Z")
        rows.append({k: row.get(k) for k in ("line", *WIRE_SCHEMA)})
    schema = {"line": pl.UInt32, **WIRE_SCHEMA}
    return pl.DataFrame(rows, schema=schema, orient="row" if not rows else None)


def _parse_block(block: bytes, first_line: int, report: ReadReport) -> pl.DataFrame:
    n_lines = block.count(b"\n")
    df: pl.DataFrame | None = None
    if b"\n\n" not in block and not block.startswith(b"\n"):
        try:
            df = pl.read_ndjson(io.BytesIO(block), schema=WIRE_SCHEMA)
        except (pl.exceptions.PolarsError, ValueError):
            df = None
        if df is not None and df.height != n_lines:
            df = None  # whitespace-only lines shifted the numbering: go line by line
    if df is None:
        df = _slow_block(block, first_line, report)
    else:
        df = df.with_columns(
            pl.int_range(first_line, first_line + df.height, dtype=pl.UInt32).alias("line")
        )
    df = _validate(df.select("line", *WIRE_SCHEMA), report)
    report.events += df.height
    return _features(df)


def _features(df: pl.DataFrame) -> pl.DataFrame:
    """Parse times, turn texts into features, drop the texts."""
    minhash = minhash_series(df["task"])
    words = pl.col("prompt").str.split(" ")
    return df.with_columns(
        _time("ts"),
        _time("ended_at"),
        pl.when(pl.col("task").is_not_null())
        .then(pl.Series("task_minhash", minhash, dtype=pl.Array(pl.UInt32, K)))
        .alias("task_minhash"),
        (pl.col("prompt").str.count_matches(" ", literal=True) + 1)
        .cast(pl.UInt32)
        .alias("prompt_words"),
        words.list.n_unique().cast(pl.UInt32).alias("prompt_unique"),
        pl.when(pl.col("prompt").is_not_null()).then(pl.col("prompt").hash()).alias("prompt_hash"),
    ).drop("task", "prompt", "v")


def _blocks(path: Path, block_bytes: int) -> Iterator[bytes]:
    """Whole-line blocks of the file (a final line without newline gets one)."""
    with path.open("rb") as stream:
        carry = b""
        while chunk := stream.read(block_bytes):
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            block, carry = data[:cut], data[cut:]
            if block:
                yield block
        if carry:
            yield carry + b"\n"


def iter_frames(
    source: str | Path,
    *,
    report: ReadReport,
    progress: Progress | None = None,
    block_bytes: int = BLOCK_BYTES,
    threads: int = 2,
) -> Iterator[pl.DataFrame]:
    """Yield the history block by block (same columns as ``load_frame``), in file order.

    For work that reduces each block as it comes (constant memory in the file size).
    Bad lines go to ``report``; duplicate ids are *not* removed here (they can only be
    told apart across blocks): ``report_duplicates`` does that from ``id`` and ``line``.
    Blocks are parsed on ``threads`` threads (Polars releases the GIL while parsing).
    """
    path = Path(source)
    total = path.stat().st_size
    pending: list[tuple[Future[pl.DataFrame], ReadReport, int]] = []
    next_line, done, produced = 1, 0, 0
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for block in _blocks(path, block_bytes):
            block_report = ReadReport()
            future = pool.submit(_parse_block, block, next_line, block_report)
            lines = block.count(b"\n")
            block_report.lines = lines
            next_line += lines
            pending.append((future, block_report, len(block)))
            while len(pending) > threads or (pending and pending[0][0].done()):
                future, block_report, size = pending.pop(0)
                frame = future.result()
                report.merge(block_report)
                done += size
                if progress is not None:
                    progress(done, total)
                produced += 1
                yield frame
        while pending:
            future, block_report, size = pending.pop(0)
            frame = future.result()
            report.merge(block_report)
            done += size
            if progress is not None:
                progress(done, total)
            produced += 1
            yield frame
    if not produced:
        yield _features(_slow_block(b"", 1, report))


def load_frame(
    source: str | Path,
    *,
    progress: Progress | None = None,
    block_bytes: int = BLOCK_BYTES,
    threads: int = 2,
) -> tuple[pl.DataFrame, ReadReport]:
    """Load a JSON Lines history into one ``DataFrame``; bad lines go to the report.

    Duplicate ids are reported with their line numbers and only the first is kept.
    """
    report = ReadReport()
    frames = list(
        iter_frames(
            source, report=report, progress=progress, block_bytes=block_bytes, threads=threads
        )
    )
    frame = pl.concat(frames, how="vertical")
    first = report_duplicates(frame.select("id", "line"), report)
    return (frame if first is None else frame.filter(first)), report


def report_duplicates(ids: pl.DataFrame, report: ReadReport) -> pl.Series | None:
    """Report every repeated ``id`` (columns ``id``, ``line``) as a problem of its line.

    Returns a mask keeping each id's first occurrence, or ``None`` when all are unique.
    """
    first = ids["id"].is_first_distinct()
    if first.all():
        return None
    dupes = ids.filter(~first)
    for ident, line in dupes.select("id", "line").iter_rows():
        report.add_problem(line, f"duplicate id {ident!r}")
    report.events -= dupes.height
    return first
