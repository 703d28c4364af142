"""``meshclaw ingest``: usage history from other gateways, mapped onto event format v1.

Two sources:

- **OpenTelemetry GenAI spans** as OTLP JSON (an ``ExportTraceServiceRequest`` document,
  or the collector file exporter's JSON Lines of them). ``chat`` (and other inference)
  spans become ``llm_call`` events, ``execute_tool`` spans ``tool_call`` events and
  ``invoke_agent`` spans ``run`` events. The agent, run, user and team of a span come
  from its own attributes, else from the ``invoke_agent`` span of its trace.
- **LiteLLM spend logs** (the ``LiteLLM_SpendLogs`` table exported as JSON, JSON Lines or
  CSV): each row becomes an ``llm_call`` with LiteLLM's ``spend`` as ``cost_usd``.

Every event is validated against format v1 before it is written through
``meshclaw.events.EventWriter``. A record that cannot be mapped is reported with its
position (line, or path in the document), skipped and counted, never silently dropped.
People are pseudonymised by default (``u_`` + 16 hex digits of SHA-256 of the source id),
so a history can be analysed without carrying the source's user names along.

Big spend-log exports in JSON Lines are mapped a chunk at a time by worker processes
(``_ingest_parallel``), with the same output and report as here.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

import msgspec

from meshclaw.events import Event, EventWriter

Format = Literal["otel", "litellm"]
MAX_PROBLEMS = 100
_TRIGGERS = {"manual", "cron", "webhook", "chat", "mail", "api"}
_INFERENCE = {"chat", "text_completion", "generate_content", "completion"}


@dataclass(frozen=True, kw_only=True)
class Defaults:
    """Attribution for records that do not carry their own."""

    org: str = "default"
    team: str = "unknown"
    user: str = "unknown"
    agent: str = "unknown"
    pseudonymise: bool = True


@dataclass(kw_only=True)
class IngestReport:
    records: int = 0
    """Source records seen (spans or spend-log rows)."""
    events: int = 0
    """Events written."""
    skipped: int = 0
    """Records that could not be mapped (``problems`` lists the first ones)."""
    ignored: int = 0
    """Spans that are not GenAI operations (HTTP, database, ...)."""
    problems: list[str] = field(default_factory=list)

    def problem(self, where: str, message: str) -> None:
        self.skipped += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"{where}: {message}")


class _Skip(Exception):
    """This record cannot be mapped; the message says why."""


@functools.lru_cache(maxsize=65536)
def _pseudo_cached(value: str) -> str:
    return "u_" + hashlib.sha256(value.encode()).hexdigest()[:16]


def _pseudo(value: str, defaults: Defaults) -> str:
    if not defaults.pseudonymise or value in ("unknown", "external", "system"):
        return value
    return _pseudo_cached(value)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _validated(data: dict[str, Any]) -> Event:
    try:
        event: Event = msgspec.convert(data, type=Event)
    except msgspec.ValidationError as exc:
        raise _Skip(f"not a valid {data.get('kind')} event: {exc}") from None
    return event


# -- OpenTelemetry (OTLP JSON) ------------------------------------------------------------


def _any_value(value: dict[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])  # OTLP JSON carries 64-bit integers as strings
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [_any_value(v) for v in value["arrayValue"].get("values", [])]
    return None


def _attributes(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {a["key"]: _any_value(a.get("value", {})) for a in items or [] if "key" in a}


def _nanos(value: Any) -> datetime:
    try:
        return datetime.fromtimestamp(int(value) / 1e9, tz=UTC)
    except (TypeError, ValueError):
        raise _Skip(f"bad time {value!r}") from None


@dataclass(frozen=True, kw_only=True)
class _Span:
    where: str
    trace_id: str
    span_id: str
    name: str
    start: datetime
    end: datetime
    attrs: dict[str, Any]
    resource: dict[str, Any]
    error: bool


def _otlp_documents(path: Path, report: IngestReport) -> Iterator[tuple[str, dict[str, Any]]]:
    text = path.read_text("utf-8")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict):
        yield "", whole
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            report.records += 1
            report.problem(f"line {number}", f"not JSON: {exc.msg}")
            continue
        if not isinstance(doc, dict):
            report.records += 1
            report.problem(f"line {number}", "not an OTLP export request object")
            continue
        yield f"line {number}: ", doc


def _spans(path: Path, report: IngestReport) -> Iterator[_Span]:
    for prefix, doc in _otlp_documents(path, report):
        for i, rs in enumerate(doc.get("resourceSpans") or []):
            resource = _attributes((rs.get("resource") or {}).get("attributes"))
            for j, ss in enumerate(
                rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []
            ):
                for k, raw in enumerate(ss.get("spans") or []):
                    where = f"{prefix}resourceSpans[{i}].scopeSpans[{j}].spans[{k}]"
                    try:
                        yield _Span(
                            where=where,
                            trace_id=str(raw["traceId"]),
                            span_id=str(raw["spanId"]),
                            name=str(raw.get("name", "")),
                            start=_nanos(raw["startTimeUnixNano"]),
                            end=_nanos(raw.get("endTimeUnixNano", raw["startTimeUnixNano"])),
                            attrs=_attributes(raw.get("attributes")),
                            resource=resource,
                            error=(raw.get("status") or {}).get("code") in (2, "STATUS_CODE_ERROR"),
                        )
                    except (KeyError, TypeError, _Skip) as exc:
                        report.records += 1
                        report.problem(where, f"malformed span: {exc}")


def _operation(span: _Span) -> str | None:
    op = span.attrs.get("gen_ai.operation.name")
    if isinstance(op, str):
        return op
    return None


def _who(span: _Span, agent_span: _Span | None, defaults: Defaults) -> dict[str, str]:
    def pick(*keys: str) -> str | None:
        for source in (span.attrs, agent_span.attrs if agent_span else {}, span.resource):
            for key in keys:
                value = source.get(key)
                if value not in (None, ""):
                    return str(value)
        return None

    user = pick("meshclaw.user.id", "enduser.id", "user.id", "gen_ai.user.id")
    return {
        "org": pick("meshclaw.org.id") or defaults.org,
        "team": pick("meshclaw.team.id", "team.id") or defaults.team,
        "user": _pseudo(user, defaults) if user else defaults.user,
        "agent": pick("gen_ai.agent.id", "gen_ai.agent.name", "service.name") or defaults.agent,
        "run": pick("gen_ai.conversation.id") or span.trace_id,
    }


def _span_event(span: _Span, agent_span: _Span | None, defaults: Defaults) -> Event | None:
    op = _operation(span)
    if op is None:
        return None
    base: dict[str, Any] = {
        "v": 1,
        "id": f"{span.trace_id}:{span.span_id}",
        "ts": _iso(span.start),
        **_who(span, agent_span, defaults),
    }
    a = span.attrs
    if op in _INFERENCE:
        model = a.get("gen_ai.response.model") or a.get("gen_ai.request.model")
        if not model:
            raise _Skip("chat span without gen_ai.request.model")
        data = base | {
            "kind": "llm_call",
            "provider": str(a.get("gen_ai.provider.name") or a.get("gen_ai.system") or "unknown"),
            "model": str(model),
            "input_tokens": a.get("gen_ai.usage.input_tokens", a.get("gen_ai.usage.prompt_tokens")),
            "output_tokens": a.get(
                "gen_ai.usage.output_tokens", a.get("gen_ai.usage.completion_tokens")
            ),
            "latency_ms": (span.end - span.start).total_seconds() * 1000,
        }
        if data["input_tokens"] is None or data["output_tokens"] is None:
            raise _Skip("chat span without gen_ai.usage.input_tokens/output_tokens")
        for source, target in (
            ("gen_ai.usage.cache_read.input_tokens", "cache_read_tokens"),
            ("gen_ai.usage.reasoning.output_tokens", "reasoning_tokens"),
            ("meshclaw.cost_usd", "cost_usd"),
        ):
            if a.get(source) is not None:
                data[target] = a[source]
        return _validated(data)
    if op == "execute_tool":
        name = str(a.get("gen_ai.tool.name") or "")
        if not name:
            raise _Skip("execute_tool span without gen_ai.tool.name")
        if "." not in name:
            name = f"external.{name}"  # format v1 names tools connector.tool
        status = str(a.get("meshclaw.tool.status") or ("error" if span.error else "ok"))
        data = base | {
            "kind": "tool_call",
            "tool": name,
            "action": str(a.get("meshclaw.tool.action") or "read"),
            "target": str(a.get("meshclaw.tool.target") or ""),
            "status": status if status in ("ok", "error", "denied") else "error",
        }
        return _validated(data)
    if op == "invoke_agent":
        trigger = str(a.get("meshclaw.trigger") or "api")
        status = str(a.get("meshclaw.run.status") or "")
        data = base | {
            "kind": "run",
            "trigger": trigger if trigger in _TRIGGERS else "api",
            "ended_at": _iso(span.end),
            "status": {"succeeded": "ok", "failed": "error", "cancelled": "cancelled"}.get(
                status, "error" if span.error else "ok"
            ),
        }
        return _validated(data)
    return None


def _otel_events(path: Path, defaults: Defaults, report: IngestReport) -> Iterator[Event]:
    # Pass 1: the invoke_agent span of each trace, for attribution of its children.
    agents: dict[str, _Span] = {}
    for span in _spans(path, IngestReport()):
        if _operation(span) == "invoke_agent":
            agents.setdefault(span.trace_id, span)
    for span in _spans(path, report):
        report.records += 1
        try:
            event = _span_event(span, agents.get(span.trace_id), defaults)
        except _Skip as exc:
            report.problem(span.where, str(exc))
            continue
        if event is None:
            report.ignored += 1
            continue
        yield event


# -- LiteLLM spend logs -------------------------------------------------------------------
# The hot path of big imports: rows are decoded by msgspec (in C) into ``_SpendRow`` and
# written as wire-form dicts, after the checks format v1 makes on an ``llm_call``.


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


# -- entry point --------------------------------------------------------------------------


def ingest(
    source: Path,
    fmt: Format,
    dest: Path,
    defaults: Defaults | None = None,
    *,
    jobs: int | None = None,
) -> IngestReport:
    """Map ``source`` onto event format v1 in ``dest`` (JSON Lines); returns the report.

    ``jobs``: processes mapping a big LiteLLM JSON Lines export (``None``: one per CPU, up
    to 8; ``1``: this process only). The output and the report are the same either way.
    """
    # Imported here: that module builds on this one's mapping functions.
    from meshclaw.metering import _ingest_parallel as parallel

    defaults = defaults or Defaults()
    report = IngestReport()
    jobs = parallel.default_jobs() if jobs is None else jobs
    if fmt == "litellm" and parallel.worth_it(source, jobs):
        parallel.write_parallel(source, dest, defaults, report, jobs=jobs, chunk_size=CHUNK)
        return report
    events: Iterator[Event | dict[str, Any]] = (
        _otel_events(source, defaults, report)
        if fmt == "otel"
        else _litellm_events(source, defaults, report)
    )
    with EventWriter(dest) as writer:
        for event in events:
            writer.write(event)
        report.events = writer.count
    return report
