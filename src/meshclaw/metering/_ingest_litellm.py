"""LiteLLM spend logs (the ``LiteLLM_SpendLogs`` table exported as JSON, JSON Lines or
CSV) mapped onto event format v1: each row an ``llm_call`` with LiteLLM's ``spend`` as
``cost_usd``.

The hot path of big imports: rows are decoded by msgspec (in C) into ``_SpendRow`` and
written as wire-form dicts, after the checks format v1 makes on an ``llm_call``. Big JSON
Lines exports are mapped a chunk at a time by worker processes (``_ingest_parallel``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from meshclaw.metering._ingest_base import (
    Defaults,
    IngestReport,
    _iso,
    _pseudo,
    _pseudo_cached,
    _Skip,
)


class _SpendRow(msgspec.Struct, kw_only=True):
    """The ``LiteLLM_SpendLogs`` columns MeshClaw reads; others are ignored."""

    request_id: str | None = None
    spend: float | str | None = None
    prompt_tokens: int | str | None = None
    completion_tokens: int | str | None = None
    startTime: str | float | None = None  # LiteLLM's column names
    endTime: str | float | None = None
    model: str | None = None
    model_group: str | None = None
    custom_llm_provider: str | None = None
    user: str | None = None
    end_user: str | None = None
    team_id: str | None = None
    organization_id: str | None = None
    session_id: str | None = None
    metadata: dict[str, Any] | str | None = None
    request_tags: list[Any] | str | None = None


_ROW = msgspec.json.Decoder(_SpendRow)
_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])


def _rows(path: Path, report: IngestReport) -> Iterator[tuple[str, _SpendRow | _Skip]]:
    data = path.read_bytes()
    head = data.lstrip()[:1]
    if head == b"[":
        try:
            items = _RAW_LIST.decode(data)
        except msgspec.DecodeError as exc:
            report.records += 1
            report.problem("document", f"not a JSON array: {exc}")
            return
        for index, raw in enumerate(items):
            yield f"[{index}]", _decode_row(raw)
    elif head == b"{":
        for number, line in enumerate(data.splitlines(), start=1):
            if line.strip():
                yield f"line {number}", _decode_row(line)
    else:
        reader = csv.DictReader(io.StringIO(data.decode("utf-8")))
        for row in reader:
            where = f"line {reader.line_num}"
            try:
                fields = {k: v for k, v in row.items() if k and v not in (None, "")}
                yield where, msgspec.convert(fields, _SpendRow)
            except msgspec.ValidationError as exc:
                yield where, _Skip(str(exc))


_ROWS = msgspec.json.Decoder(list[_SpendRow])
CHUNK = 1 << 20
"""Bytes of JSON Lines decoded at once by ``_rows_fast`` (and mapped by one worker)."""


def _first_byte(stream: BinaryIO) -> bytes:
    """The first byte that is not ASCII white space (what ``data.lstrip()[:1]`` gives),
    read without loading the file; the stream is left at its start."""
    head = b""
    while piece := stream.read(1 << 16):
        head = piece.lstrip()[:1]
        if head:
            break
    stream.seek(0)
    return head


def _line_count(chunk: bytes) -> int:
    """Lines in ``chunk`` as ``splitlines`` counts them (``\\n``, ``\\r\\n`` or a bare ``\\r``)."""
    if b"\r" not in chunk or chunk.count(b"\r") == chunk.count(b"\r\n"):
        return chunk.count(b"\n") + (not chunk.endswith(b"\n"))
    return len(chunk.splitlines())


def _chunk_spans(stream: BinaryIO, size: int) -> Iterator[tuple[int, int]]:
    """Byte ranges of JSON Lines in chunks of whole lines: ``size`` bytes, then up to the
    next newline. Only the bytes around each boundary are read."""
    start = 0
    while True:
        stream.seek(start + size)
        end = start + size
        while piece := stream.read(1 << 12):
            newline = piece.find(b"\n")
            if newline >= 0:
                end += newline + 1
                break
            end += len(piece)
        else:
            end = stream.seek(0, io.SEEK_END)
        if end <= start:
            return
        yield start, end
        start = end


def _chunk_rows(chunk: bytes, line: int, lines: int) -> Iterator[tuple[str, _SpendRow | _Skip]]:
    """The rows of a chunk of JSON Lines whose first line is ``line``, ``lines`` long.

    The lines are decoded as one JSON array (newlines become commas), which is valid only
    if no line is blank or holds two values; with as many rows as lines, no value spans
    lines either, so row ``i`` is line ``i``. Any other chunk (a row that does not decode,
    blank lines, a lone carriage return, which ``splitlines`` counts as a line break) is
    decoded row by row like ``_rows``, so every problem keeps its position.
    """
    if b"\r" not in chunk or chunk.count(b"\r") == chunk.count(b"\r\n"):
        body = chunk[:-1] if chunk.endswith(b"\n") else chunk
        try:
            rows = _ROWS.decode(b"[" + body.replace(b"\n", b",") + b"]")
        except msgspec.MsgspecError:
            rows = []
        if len(rows) == lines:
            for number, row in enumerate(rows, start=line):
                yield f"line {number}", row
            return
    for number, raw in enumerate(chunk.splitlines(), start=line):
        if raw.strip():
            yield f"line {number}", _decode_row(raw)


def _rows_fast(path: Path, report: IngestReport) -> Iterator[tuple[str, _SpendRow | _Skip]]:
    """What ``_rows`` yields, decoding about a megabyte of rows per call into msgspec
    instead of one row per call (``_chunk_rows``); JSON Lines are read a chunk at a time."""
    with path.open("rb") as stream:
        head = _first_byte(stream)
        if head == b"{":
            line = 1
            for start, end in _chunk_spans(stream, CHUNK):
                stream.seek(start)
                chunk = stream.read(end - start)
                lines = _line_count(chunk)
                yield from _chunk_rows(chunk, line, lines)
                line += lines
            return
    if head != b"[":
        yield from _rows(path, report)
        return
    try:
        items = _ROWS.decode(path.read_bytes())
    except msgspec.MsgspecError:
        yield from _rows(path, report)
        return
    for index, item in enumerate(items):
        yield f"[{index}]", item


def _decode_row(raw: bytes | msgspec.Raw) -> _SpendRow | _Skip:
    try:
        return _ROW.decode(raw)
    except msgspec.ValidationError as exc:
        return _Skip(f"unexpected field type: {exc}")
    except msgspec.DecodeError as exc:
        return _Skip(f"not JSON: {exc}")


def _time(value: Any) -> datetime:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    if not isinstance(value, str) or not value:
        raise _Skip(f"bad time {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _Skip(f"bad time {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _count(value: Any, name: str) -> int:
    if value is None or value == "":
        return 0
    try:
        number = int(value) if isinstance(value, int) else int(float(value))
    except (TypeError, ValueError):
        raise _Skip(f"{name} is not a number: {value!r}") from None
    if number < 0:
        raise _Skip(f"{name} is negative: {number}")
    return number


def _json_field(value: Any, kind: type) -> Any:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value else None
        except json.JSONDecodeError:
            return [value] if kind is list else None
    return value if isinstance(value, kind) else None


def _litellm_event(row: _SpendRow | _Skip, defaults: Defaults) -> dict[str, Any]:
    if isinstance(row, _Skip):
        raise row
    if not row.request_id:
        raise _Skip("no request_id")
    model = row.model or row.model_group
    if not model:
        raise _Skip("no model")
    metadata = _json_field(row.metadata, dict) or {}
    tags = _json_field(row.request_tags, list) or []
    start = _time(row.startTime)
    end = _time(row.endTime) if row.endTime not in (None, "") else start
    user = row.user or row.end_user or metadata.get("user_api_key_user_id")
    if user:
        user = _pseudo(str(user), defaults)
    org = metadata.get("user_api_key_org_id") or row.organization_id or defaults.org
    team = row.team_id or metadata.get("user_api_key_team_id") or defaults.team
    agent = (tags[0] if tags else None) or metadata.get("user_api_key_alias") or defaults.agent
    data: dict[str, Any] = {
        "v": 1,
        "kind": "llm_call",
        "id": row.request_id,
        "ts": _iso(start),
        "org": str(org),
        "team": str(team),
        "user": str(user or defaults.user),
        "agent": str(agent),
        "run": row.session_id or row.request_id,
        "provider": row.custom_llm_provider or "unknown",
        "model": model,
        "input_tokens": _count(row.prompt_tokens, "prompt_tokens"),
        "output_tokens": _count(row.completion_tokens, "completion_tokens"),
        "latency_ms": max(0.0, (end - start).total_seconds() * 1000),
    }
    if row.spend not in (None, ""):
        try:
            cost = float(row.spend)
        except (TypeError, ValueError):
            raise _Skip(f"spend is not a number: {row.spend!r}") from None
        if cost < 0:
            raise _Skip(f"spend is negative: {cost}")
        data["cost_usd"] = cost
    for key in ("org", "team", "user", "agent"):
        if not data[key]:
            raise _Skip(f"empty {key}")
    return data


_from_iso = datetime.fromisoformat
_KEPT_IDS = frozenset(("unknown", "external", "system"))


def _litellm_events_fast(
    rows: Iterator[tuple[str, _SpendRow | _Skip]], defaults: Defaults, report: IngestReport
) -> Iterator[dict[str, Any]]:
    """``_litellm_event`` over ``rows``, inlined for the rows big exports are made of
    (times as ISO text, UTC or without a zone; tokens as integers; ``metadata`` and
    ``request_tags`` as JSON): fewer calls and no time-zone arithmetic. Any other row
    goes to ``_litellm_event``. The same events and problems either way
    (``tests/metering/test_ingest.py`` compares the two)."""
    pseudonymise = defaults.pseudonymise
    for where, row in rows:
        report.records += 1
        data: dict[str, Any] | None = None
        if type(row) is _SpendRow:
            request_id, model = row.request_id, row.model or row.model_group
            metadata, tags = row.metadata, row.request_tags
            started, ended = row.startTime, row.endTime
            prompt, completion = row.prompt_tokens, row.completion_tokens
            if (
                request_id
                and model
                and (metadata is None or type(metadata) is dict)
                and (tags is None or type(tags) is list)
                and type(started) is str
                and type(ended) is str
                and type(prompt) is int
                and type(completion) is int
                and prompt >= 0
                and completion >= 0
            ):
                # Both without a zone (read as UTC, like _time) or both UTC: no conversion.
                try:
                    start, end = _from_iso(started), _from_iso(ended)
                    zone = start.tzinfo
                    plain = end.tzinfo is zone and (zone is None or zone is UTC)
                except ValueError:
                    plain = False
                if plain:
                    ts = start.isoformat()
                    ts = ts + "Z" if zone is None else ts[:-6] + "Z"
                    meta: dict[str, Any] = metadata or {}
                    user = row.user or row.end_user or meta.get("user_api_key_user_id")
                    if user:
                        user = user if type(user) is str else str(user)
                        if pseudonymise and user not in _KEPT_IDS:
                            user = _pseudo_cached(user)
                    else:
                        user = defaults.user
                    org = meta.get("user_api_key_org_id") or row.organization_id or defaults.org
                    team = row.team_id or meta.get("user_api_key_team_id") or defaults.team
                    agent = (
                        (tags[0] if tags else None)
                        or meta.get("user_api_key_alias")
                        or defaults.agent
                    )
                    org = org if type(org) is str else str(org)
                    team = team if type(team) is str else str(team)
                    agent = agent if type(agent) is str else str(agent)
                    latency = (end - start).total_seconds() * 1000
                    spend = row.spend
                    if (
                        org
                        and team
                        and user
                        and agent
                        and (spend is None or (type(spend) is float and spend >= 0))
                    ):
                        data = {
                            "v": 1,
                            "kind": "llm_call",
                            "id": request_id,
                            "ts": ts,
                            "org": org,
                            "team": team,
                            "user": user,
                            "agent": agent,
                            "run": row.session_id or request_id,
                            "provider": row.custom_llm_provider or "unknown",
                            "model": model,
                            "input_tokens": prompt,
                            "output_tokens": completion,
                            "latency_ms": latency if latency > 0.0 else 0.0,
                        }
                        if spend is not None:
                            data["cost_usd"] = spend
        if data is not None:
            yield data
            continue
        try:
            yield _litellm_event(row, defaults)
        except _Skip as exc:
            report.problem(where, str(exc))


def _litellm_events(
    path: Path, defaults: Defaults, report: IngestReport, *, fast: bool = True
) -> Iterator[dict[str, Any]]:
    """Events from a spend-log export; ``fast=False`` takes the plain path throughout
    (the reference the fast one is tested against)."""
    if fast:
        yield from _litellm_events_fast(_rows_fast(path, report), defaults, report)
        return
    for where, row in _rows(path, report):
        report.records += 1
        try:
            yield _litellm_event(row, defaults)
        except _Skip as exc:
            report.problem(where, str(exc))
