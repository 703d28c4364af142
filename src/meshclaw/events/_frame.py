"""Columnar loading of event format v1: a history as Polars ``DataFrame`` blocks.

For analytics over millions of events (integrity scans, leaderboards, reports). The file
is read in blocks of whole lines. Each block is parsed by Polars' multi-threaded NDJSON
reader and validated with vectorised checks, on two threads. A block that Polars cannot
parse (broken JSON, a wrong type, blank lines) is cut into smaller pieces that are tried
again, and only a small piece that still fails is re-read line by line with the typed
``EventReader`` rules, so every skipped line is still reported with its line number and
one bad line does not slow down a whole block. Duplicate ids are reported and only the
first one is kept.

Columns of the result (``FRAME_COLUMNS``): ``line`` (1-based line in the input), the
envelope (``kind``, ``id``, ``ts``, ``org``, ``team``, ``user``, ``agent``, ``run``) and
every kind's own fields, with texts replaced by features: ``task_minhash`` (the task's
``TextPrint.minhash``), ``prompt_words``, ``prompt_unique`` (distinct space-separated
words) and ``prompt_hash`` (for spotting verbatim repeats).

``columns=`` projects the result: every line is still parsed and validated in full (the
same lines are skipped whatever is asked for), but only the named columns are kept and
only the text features asked for are computed. ``map_frames`` hands each block to the
consumer's own reduction on the reading threads, so a consumer that reduces (the
analytics cache, the integrity ``HistoryBuilder``) holds one block at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt
import polars as pl

from meshclaw.events._fingerprint import K, minhash_series
from meshclaw.events._models import KINDS, Event
from meshclaw.events._reader import ReadReport, _decode_error, event_to_dict

BLOCK_BYTES = 32 << 20
SPLIT_PIECES = 16
"""A block Polars cannot parse is cut into this many pieces, each tried again."""
LINE_BY_LINE_BYTES = 256 << 10
"""A failing piece at most this big is read line by line with the typed rules."""

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
_LINE_SCHEMA: dict[str, Any] = {"line": pl.UInt32, **WIRE_SCHEMA}

TEXT_FEATURES: dict[str, str] = {
    "task_minhash": "task",
    "prompt_words": "prompt",
    "prompt_unique": "prompt",
    "prompt_hash": "prompt",
}
"""Feature column -> the text it is computed from (texts themselves are never kept)."""
FRAME_COLUMNS: tuple[str, ...] = (
    "line",
    *(c for c in WIRE_SCHEMA if c not in ("v", "task", "prompt")),
    *TEXT_FEATURES,
)
"""Every column ``load_frame`` can return, in its order."""

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
_RFC3339 = "%Y-%m-%dT%H:%M:%S%.f%#z"
_RFC3339_Z = "%Y-%m-%dT%H:%M:%SZ"
"""What nearly every writer produces (whole seconds, ``Z``): parsed about 3x faster."""

T = TypeVar("T")
Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total) after each block."""


def _utc(values: pl.Series) -> pl.Series:
    """RFC 3339 text -> UTC datetime; null when unparseable or without a zone."""
    fast = values.str.to_datetime(_RFC3339_Z, time_unit="us", time_zone="UTC", strict=False)
    if fast.null_count() == values.null_count():
        return fast
    general = values.str.to_datetime(_RFC3339, time_unit="us", time_zone="UTC", strict=False)
    return fast.fill_null(general)


def _checks() -> list[tuple[pl.Expr, str]]:
    """(expression true on a bad row, message) pairs mirroring the typed models.

    ``ts`` and ``ended_at`` are already parsed; ``_ts_text``/``_ended_text`` hold the text.
    """
    kind = pl.col("kind")
    checks: list[tuple[pl.Expr, str]] = [
        (pl.col("v").is_null() | (pl.col("v") != 1), "`v` must be 1"),
        (kind.is_null(), "missing required field `kind`"),
        (kind.is_not_null() & ~kind.is_in(KINDS), "unknown `kind`"),
    ]
    for name in ("id", "ts", "org", "team", "user"):
        col = pl.col("_ts_text" if name == "ts" else name)
        checks.append((col.is_null() | (col.str.len_bytes() == 0), f"missing field `{name}`"))
    checks.append((pl.col("ts").is_null(), "`ts` is not an RFC 3339 time with zone"))
    for k, fields in _REQUIRED.items():
        for name in fields:
            col = pl.col("_ended_text" if name == "ended_at" else name)
            checks.append(((kind == k) & col.is_null(), f"missing field `{name}`"))
        for name, allowed in _ENUMS.get(k, {}).items():
            bad = (kind == k) & pl.col(name).is_not_null() & ~pl.col(name).is_in(allowed)
            checks.append((bad, f"`{name}` must be one of {', '.join(allowed)}"))
    checks.append(
        (
            (kind == "run") & pl.col("_ended_text").is_not_null()
            & pl.col("ended_at").is_null(),
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


_CHECKS = _checks()


def _validate(df: pl.DataFrame, report: ReadReport, text: Callable[[int], bytes]) -> pl.DataFrame:
    """Report and drop rows the typed models would reject (``df`` has parsed times).

    A rejected line is reported with the typed reader's own message (``text`` gives the
    line's bytes by number), so the report does not depend on how a block was parsed.
    """
    conds = [cond.fill_null(False) for cond, _ in _CHECKS]
    if not df.select(pl.any_horizontal(*conds).any()).item():
        return df
    flags = df.select(*[c.alias(f"c{i}") for i, c in enumerate(conds)], pl.col("line"))
    any_bad = flags.select(pl.any_horizontal(pl.exclude("line")).alias("bad"))["bad"]
    decoder = msgspec.json.Decoder(Event)
    for row in flags.filter(any_bad).iter_rows(named=True):
        try:
            decoder.decode(text(row["line"]))
        except msgspec.DecodeError as exc:
            report.add_problem(row["line"], _decode_error(exc))
            continue
        reasons = [msg for i, (_, msg) in enumerate(_CHECKS) if row[f"c{i}"]]
        report.add_problem(row["line"], "; ".join(reasons))
    return df.filter(~any_bad)


def _line_texts(block: bytes, first_line: int) -> Callable[[int], bytes]:
    """Line number -> that line's bytes, within ``block`` (which starts at ``first_line``)."""
    ends: npt.NDArray[np.intp] | None = None

    def text(number: int) -> bytes:
        nonlocal ends
        if ends is None:
            ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == ord("\n"))
        i = number - first_line
        start = 0 if i == 0 else int(ends[i - 1]) + 1
        return block[start : int(ends[i])]

    return text


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
        rows.append({k: row.get(k) for k in _LINE_SCHEMA})
    return pl.DataFrame(rows, schema=_LINE_SCHEMA, orient="row" if not rows else None)


def _read_fast(block: bytes, first_line: int, lines: int) -> pl.DataFrame | None:
    """The block through Polars' NDJSON reader, or ``None`` if it cannot be trusted."""
    if not block or b"\n\n" in block or block.startswith(b"\n"):
        return None  # blank lines would shift the numbering
    try:
        df = pl.read_ndjson(
            block, schema=WIRE_SCHEMA, row_index_name="line", row_index_offset=first_line
        )
    except (pl.exceptions.PolarsError, ValueError):
        return None
    return df if df.height == lines else None  # whitespace-only lines: same problem


def _pieces(block: bytes, first_line: int, n: int) -> Iterator[tuple[bytes, int, int]]:
    """``block`` cut into about ``n`` pieces of whole lines: (piece, first line, lines)."""
    step = max(1, len(block) // n)
    start, line = 0, first_line
    while start < len(block):
        end = block.find(b"\n", min(start + step, len(block)) - 1) + 1 or len(block)
        piece = block[start:end]
        lines = piece.count(b"\n")
        yield piece, line, lines
        start, line = end, line + lines


def _wire(block: bytes, first_line: int, lines: int, report: ReadReport) -> pl.DataFrame:
    """``line`` and the wire columns of every parseable line; the others are reported."""
    df = _read_fast(block, first_line, lines)
    if df is not None:
        return df
    if len(block) <= LINE_BY_LINE_BYTES:
        return _slow_block(block, first_line, report)
    pieces = list(_pieces(block, first_line, SPLIT_PIECES))
    if len(pieces) == 1:  # one huge line
        return _slow_block(block, first_line, report)
    parts = [_wire(p, f, n, report) for p, f, n in pieces]
    return pl.concat(parts, how="vertical")


@dataclass(frozen=True)
class _Plan:
    """What to produce from a block: output columns and which text features they need."""

    columns: tuple[str, ...]

    @property
    def features(self) -> frozenset[str]:
        return frozenset(c for c in self.columns if c in TEXT_FEATURES)


def _plan(columns: Sequence[str] | None) -> _Plan:
    if columns is None:
        return _Plan(FRAME_COLUMNS)
    unknown = [c for c in columns if c not in FRAME_COLUMNS]
    if unknown:
        raise ValueError(f"unknown column(s) {', '.join(map(repr, unknown))}")
    if len(set(columns)) != len(columns):
        raise ValueError("a column is named twice")
    return _Plan(tuple(columns))


def _parse_block(
    block: bytes, first_line: int, lines: int, report: ReadReport, plan: _Plan
) -> pl.DataFrame:
    df = _wire(block, first_line, lines, report)
    df = df.with_columns(
        _utc(df["ts"]).alias("ts"),
        _utc(df["ended_at"]).alias("ended_at"),
        pl.col("ts").alias("_ts_text"),
        pl.col("ended_at").alias("_ended_text"),
    )
    df = _validate(df, report, _line_texts(block, first_line))
    report.events += df.height
    return _features(df, plan)


def _features(df: pl.DataFrame, plan: _Plan) -> pl.DataFrame:
    """Turn the texts into the features asked for; keep the planned columns."""
    wanted = plan.features
    exprs: list[pl.Expr | pl.Series] = []
    if "task_minhash" in wanted:
        minhash = pl.Series("task_minhash", minhash_series(df["task"]), pl.Array(pl.UInt32, K))
        exprs.append(pl.when(pl.col("task").is_not_null()).then(minhash).alias("task_minhash"))
    prompt = pl.col("prompt")
    if wanted & {"prompt_words", "prompt_unique"}:
        words = df["prompt"].str.split(" ")  # n spaces, n + 1 words (empty ones too)
        if "prompt_words" in wanted:
            exprs.append(words.list.len().cast(pl.UInt32).alias("prompt_words"))
        if "prompt_unique" in wanted:
            exprs.append(words.list.n_unique().cast(pl.UInt32).alias("prompt_unique"))
    if "prompt_hash" in wanted:
        exprs.append(pl.when(prompt.is_not_null()).then(prompt.hash()).alias("prompt_hash"))
    if exprs:
        df = df.with_columns(exprs)
    return df.select(plan.columns)


def _blocks(path: Path, block_bytes: int) -> Iterator[bytes]:
    """Whole-line blocks of the file (a final line without newline gets one)."""
    with path.open("rb") as stream:
        carry = b""
        while chunk := stream.read(block_bytes):
            data = carry + chunk if carry else chunk
            cut = data.rfind(b"\n") + 1
            block, carry = data[:cut], data[cut:]
            if block:
                yield block
        if carry:
            yield carry + b"\n"


def map_frames(
    source: str | Path,
    fn: Callable[[pl.DataFrame], T],
    *,
    report: ReadReport,
    columns: Sequence[str] | None = None,
    progress: Progress | None = None,
    block_bytes: int = BLOCK_BYTES,
    threads: int = 2,
) -> Iterator[T]:
    """Yield ``fn(block)`` for each block of the history, in file order.

    ``fn`` runs on the reading threads, right after its block is parsed, so a reduction
    overlaps with the parsing of the next block and only the reductions stay in memory.
    Blocks have the ``columns`` asked for (default: all of ``FRAME_COLUMNS``). Bad lines
    go to ``report``; duplicate ids are *not* removed here (they can only be told apart
    across blocks): ``report_duplicates`` does that from ``id`` and ``line``. An empty
    file gives one empty block.
    """
    plan = _plan(columns)
    path = Path(source)
    total = path.stat().st_size

    def work(block: bytes, first: int, lines: int, block_report: ReadReport) -> T:
        frame = _parse_block(block, first, lines, block_report, plan)
        block_report.problems.sort(key=lambda p: p.line)  # as the typed reader: in line order
        return fn(frame)

    pending: list[tuple[Future[T], ReadReport, int]] = []
    next_line, done, produced = 1, 0, 0
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:

        def finish_first() -> T:
            nonlocal done, produced
            future, block_report, size = pending.pop(0)
            result = future.result()
            report.merge(block_report)
            done += size
            if progress is not None:
                progress(done, total)
            produced += 1
            return result

        for block in _blocks(path, block_bytes):
            lines = block.count(b"\n")
            block_report = ReadReport(lines=lines)
            future = pool.submit(work, block, next_line, lines, block_report)
            next_line += lines
            pending.append((future, block_report, len(block)))
            while len(pending) > threads or (pending and pending[0][0].done()):
                yield finish_first()
        while pending:
            yield finish_first()
    if not produced:
        yield fn(_parse_block(b"", 1, 0, report, plan))


def iter_frames(
    source: str | Path,
    *,
    report: ReadReport,
    columns: Sequence[str] | None = None,
    progress: Progress | None = None,
    block_bytes: int = BLOCK_BYTES,
    threads: int = 2,
) -> Iterator[pl.DataFrame]:
    """Yield the history block by block (the ``columns`` asked for), in file order.

    For work that reduces each block as it comes (constant memory in the file size);
    ``map_frames`` also runs the reduction on the reading threads.
    """
    return map_frames(
        source,
        _same,
        report=report,
        columns=columns,
        progress=progress,
        block_bytes=block_bytes,
        threads=threads,
    )


def _same(frame: pl.DataFrame) -> pl.DataFrame:
    return frame


def load_frame(
    source: str | Path,
    *,
    columns: Sequence[str] | None = None,
    progress: Progress | None = None,
    block_bytes: int = BLOCK_BYTES,
    threads: int = 2,
) -> tuple[pl.DataFrame, ReadReport]:
    """Load a JSON Lines history into one ``DataFrame``; bad lines go to the report.

    Duplicate ids are reported with their line numbers and only the first is kept.
    ``columns`` keeps only those columns (every line is still validated in full).
    """
    plan = _plan(columns)
    read = plan.columns + tuple(c for c in ("id", "line") if c not in plan.columns)
    report = ReadReport()
    frames = list(
        iter_frames(
            source,
            report=report,
            columns=read,
            progress=progress,
            block_bytes=block_bytes,
            threads=threads,
        )
    )
    frame = pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]
    first = report_duplicates(frame.select("id", "line"), report)
    if first is not None:
        frame = frame.filter(first)
    return (frame if read == plan.columns else frame.select(plan.columns)), report


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
