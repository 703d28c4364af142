"""OpenTelemetry GenAI spans (OTLP JSON) mapped onto event format v1.

An ``ExportTraceServiceRequest`` document, or the collector file exporter's JSON Lines of
them. ``chat`` (and other inference) spans become ``llm_call`` events, ``execute_tool``
spans ``tool_call`` events and ``invoke_agent`` spans ``run`` events. The agent, run,
user and team of a span come from its own attributes, else from the first
``invoke_agent`` span of its trace.

One pass over the file, a JSON Lines line (one export request) at a time: memory holds
one line's document, the spans still waiting for their trace's ``invoke_agent`` span
(``_Attribution``, bounded) and the attribution of recent agent spans. A line is decoded
straight into ``_Request`` (msgspec, in C); a line that does not fit that shape is
decoded as plain JSON and walked step by step (``_walk``), so that every malformed piece
is reported at its JSON path while the rest of the line still maps.

Not in worker processes, unlike big LiteLLM exports (``_ingest_parallel``): a span's
events depend on its trace's ``invoke_agent`` span, which may be in another line, so
chunks of lines cannot be mapped apart; the part that could (decoding) is a small share
of the time (``benchmarks/metering_bench.py --ingest-otel``).
"""

from __future__ import annotations

import itertools
import json
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
from msgspec import UNSET, UnsetType

from meshclaw.events import Event
from meshclaw.metering._ingest_base import (
    Defaults,
    IngestReport,
    _iso,
    _pseudo,
    _Skip,
    _validated,
)

_TRIGGERS = {"manual", "cron", "webhook", "chat", "mail", "api"}
_INFERENCE = {"chat", "text_completion", "generate_content", "completion"}


def _any_value(value: Any) -> Any:
    if not isinstance(value, dict):
        raise _Skip(f"an attribute value must be an object, not {type(value).__name__}")
    try:
        if "stringValue" in value:
            return value["stringValue"]
        if "intValue" in value:
            return int(value["intValue"])  # OTLP JSON carries 64-bit integers as strings
        if "doubleValue" in value:
            return float(value["doubleValue"])
        if "boolValue" in value:
            return bool(value["boolValue"])
        if "arrayValue" in value:
            array = value["arrayValue"]
            values = array.get("values", []) if isinstance(array, dict) else None
            if not isinstance(values, list):
                raise _Skip("arrayValue.values must be a list")
            return [_any_value(v) for v in values]
    except (TypeError, ValueError, OverflowError) as exc:  # Overflow: 1e400 (infinity)
        raise _Skip(f"bad attribute value {value!r}: {exc}") from None
    return None


def _attributes(items: Any) -> dict[str, Any]:
    if items is None:
        return {}
    if not isinstance(items, list):
        raise _Skip(f"attributes must be a list, not {type(items).__name__}")
    attributes = {}
    for n, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise _Skip(f"attributes[{n}] must be an object with a string key")
        attributes[item["key"]] = _any_value(item.get("value", {}))
    return attributes


def _listed(container: dict[str, Any], key: str, within: str, report: IngestReport) -> list[Any]:
    """``container[key]``, a list in OTLP (absent: empty); anything else is a problem
    reported at ``within`` + ``key`` (its JSON path), and what it held is skipped, not
    the rest of the file."""
    value = container.get(key)
    if value is None:
        return []
    if isinstance(value, list):
        return value
    report.records += 1
    report.problem(f"{within}{key}", f"expected a list, got {type(value).__name__}")
    return []


def _is_object(value: Any, where: str, report: IngestReport) -> bool:
    if isinstance(value, dict):
        return True
    report.records += 1
    report.problem(where, f"expected an object, got {type(value).__name__}")
    return False


def _nanos(value: Any) -> datetime:
    try:
        return datetime.fromtimestamp(int(value) / 1e9, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):  # not a number, or out of range
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


# The OTLP shape decoded straight from a line. Every field is as strict as ``_walk`` is
# (``UNSET``: absent; an explicit ``null`` where ``_walk`` would object is a validation
# error), so a line that decodes maps exactly as ``_walk`` would map it; any other line
# goes to ``_walk``, which reports each malformed piece at its JSON path.
class _ArrayValue(msgspec.Struct):
    values: list[_AnyValue] = msgspec.field(default_factory=list)


class _AnyValue(msgspec.Struct):
    stringValue: str | UnsetType = UNSET
    intValue: int | str | UnsetType = UNSET  # 64-bit integers are strings in OTLP JSON
    doubleValue: float | UnsetType = UNSET
    boolValue: bool | UnsetType = UNSET
    arrayValue: _ArrayValue | UnsetType = UNSET


class _KeyValue(msgspec.Struct):
    key: str
    value: _AnyValue = msgspec.field(default_factory=_AnyValue)


class _Status(msgspec.Struct):
    code: int | str | None = None


class _RawSpan(msgspec.Struct):
    traceId: str
    spanId: str
    startTimeUnixNano: int | str
    endTimeUnixNano: int | str | UnsetType = UNSET
    name: str = ""
    attributes: list[_KeyValue] | None = None
    status: _Status | None = None


class _ScopeSpans(msgspec.Struct):
    spans: list[_RawSpan] | None = None


class _Resource(msgspec.Struct):
    attributes: list[_KeyValue] | None = None


class _ResourceSpans(msgspec.Struct):
    resource: _Resource | UnsetType = UNSET
    scopeSpans: list[_ScopeSpans] | UnsetType | None = UNSET
    instrumentationLibrarySpans: list[_ScopeSpans] | UnsetType | None = UNSET


class _Request(msgspec.Struct):
    resourceSpans: list[_ResourceSpans] | None = None


_REQUEST = msgspec.json.Decoder(_Request)
_JSON = msgspec.json.Decoder()


def _typed_value(value: _AnyValue) -> Any:
    """``_any_value`` of a decoded value; ``_Skip`` where it would skip."""
    if value.stringValue is not UNSET:
        return value.stringValue
    try:
        if value.intValue is not UNSET:
            return int(value.intValue)
        if value.doubleValue is not UNSET:
            return float(value.doubleValue)
    except ValueError as exc:
        raise _Skip(str(exc)) from None
    if value.boolValue is not UNSET:
        return value.boolValue
    if value.arrayValue is not UNSET:
        return [_typed_value(v) for v in value.arrayValue.values]
    return None


def _typed_attributes(items: list[_KeyValue] | None) -> dict[str, Any]:
    if not items:
        return {}
    attributes = {}
    for item in items:
        value = item.value
        text = value.stringValue  # the usual case first
        attributes[item.key] = text if text is not UNSET else _typed_value(value)
    return attributes


def _typed_spans(prefix: str, request: _Request) -> list[_Span]:
    """The spans of a decoded request, as ``_walk`` gives them; ``_Skip`` if ``_walk``
    would report a problem (a bad number or time), so that it does, at its path."""
    spans: list[_Span] = []
    for i, rs in enumerate(request.resourceSpans or ()):
        resource = _typed_attributes(rs.resource.attributes) if rs.resource is not UNSET else {}
        held: list[_ScopeSpans] | UnsetType | None = rs.scopeSpans
        name = "scopeSpans"
        if held is UNSET:
            name, held = "instrumentationLibrarySpans", rs.instrumentationLibrarySpans
        scopes = held if isinstance(held, list) else []  # absent or null: none
        for j, ss in enumerate(scopes):
            for k, raw in enumerate(ss.spans or ()):
                end = raw.endTimeUnixNano
                status = raw.status
                spans.append(
                    _Span(
                        where=f"{prefix}resourceSpans[{i}].{name}[{j}].spans[{k}]",
                        trace_id=raw.traceId,
                        span_id=raw.spanId,
                        name=raw.name,
                        start=_nanos(raw.startTimeUnixNano),
                        end=_nanos(raw.startTimeUnixNano if end is UNSET else end),
                        attrs=_typed_attributes(raw.attributes),
                        resource=resource,
                        error=status is not None and status.code in (2, "STATUS_CODE_ERROR"),
                    )
                )
    return spans


def _lines(stream: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """The lines of ``stream`` that are not blank, numbered from 1."""
    for number, line in enumerate(stream, start=1):
        if line.strip():
            yield number, line


def _plain(text: bytes) -> Any:
    """``text`` as plain JSON; ``ValueError`` if it is not JSON. What msgspec refuses is
    given to Python's parser, which reads a little more (``NaN``, ``1e400``, a lone
    surrogate), as this mapping did before it used msgspec: the other spans of such a
    line still map."""
    try:
        return _JSON.decode(text)
    except msgspec.DecodeError:
        return json.loads(text)


def _is_json(text: bytes) -> bool:
    try:
        _plain(text)
    except ValueError:
        return False
    return True


def _decode(text: bytes, fast: bool) -> Any:
    """``text`` as a ``_Request`` if it has that shape (and ``fast``), else as plain JSON;
    ``ValueError`` if it is not JSON."""
    if fast:
        try:
            return _REQUEST.decode(text)
        except msgspec.DecodeError:  # another shape (or not JSON)
            pass
    return _plain(text)


def _documents(
    stream: BinaryIO, report: IngestReport, *, fast: bool = True
) -> Iterator[tuple[str, Any, bytes]]:
    """``(prefix, request, text)`` for each export request: ``""`` and the document if the
    file is one (one line, or one JSON object over many lines), else ``"line N: "`` and
    line N of the JSON Lines, read one at a time. ``text``: the request's JSON."""
    lines = _lines(stream)
    first, second = next(lines, None), next(lines, None)
    if first is None:
        return
    if second is None or not (_is_json(first[1]) or _is_json(second[1])):
        # One line, or lines that are not JSON by themselves (an indented document; or JSON
        # Lines whose first two lines are broken, which this reads whole once in vain).
        stream.seek(0)
        text = stream.read()
        try:
            whole = _decode(text, fast)
        except ValueError:
            whole = None
        if isinstance(whole, _Request | dict):
            yield "", whole, text
            return
        del whole, text
        stream.seek(0)
        lines = _lines(stream)
    else:
        lines = itertools.chain((first, second), lines)
    for number, text in lines:
        try:
            doc = _decode(text, fast)
        except ValueError as exc:
            report.records += 1
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            report.problem(f"line {number}", f"not JSON: {why}")
            continue
        if not isinstance(doc, _Request | dict):
            report.records += 1
            report.problem(f"line {number}", "not an OTLP export request object")
            continue
        yield f"line {number}: ", doc, text


def _walk(prefix: str, doc: dict[str, Any], report: IngestReport) -> Iterator[_Span]:
    """The spans of a plain JSON export request, each malformed piece of it reported at
    its JSON path (after ``prefix``) and skipped, not the rest."""
    for i, rs in enumerate(_listed(doc, "resourceSpans", prefix, report)):
        at = f"{prefix}resourceSpans[{i}]"
        if not _is_object(rs, at, report):
            continue
        try:
            held = rs.get("resource", {})
            if not isinstance(held, dict):
                raise _Skip(f"resource must be an object, not {type(held).__name__}")
            resource = _attributes(held.get("attributes"))
        except _Skip as exc:
            report.records += 1
            report.problem(f"{at}.resource", str(exc))
            continue
        # ``instrumentationLibrarySpans``: the name before OTLP 0.15.
        scopes = "scopeSpans" if "scopeSpans" in rs else "instrumentationLibrarySpans"
        for j, ss in enumerate(_listed(rs, scopes, f"{at}.", report)):
            at_scope = f"{at}.{scopes}[{j}]"
            if not _is_object(ss, at_scope, report):
                continue
            for k, raw in enumerate(_listed(ss, "spans", f"{at_scope}.", report)):
                where = f"{at_scope}.spans[{k}]"
                if not _is_object(raw, where, report):
                    continue
                try:
                    status = raw.get("status", {})
                    yield _Span(
                        where=where,
                        trace_id=str(raw["traceId"]),
                        span_id=str(raw["spanId"]),
                        name=str(raw.get("name", "")),
                        start=_nanos(raw["startTimeUnixNano"]),
                        end=_nanos(raw.get("endTimeUnixNano", raw["startTimeUnixNano"])),
                        attrs=_attributes(raw.get("attributes")),
                        resource=resource,
                        error=isinstance(status, dict)
                        and status.get("code") in (2, "STATUS_CODE_ERROR"),
                    )
                except (KeyError, TypeError, _Skip) as exc:
                    report.records += 1
                    report.problem(where, f"malformed span: {exc}")


def _spans(stream: BinaryIO, report: IngestReport, *, fast: bool = True) -> Iterator[_Span]:
    """Every span of the file, in file order; a malformed one is reported, not yielded.
    ``fast=False``: every request through ``_walk`` (the reference for the fast path)."""
    for prefix, doc, text in _documents(stream, report, fast=fast):
        if isinstance(doc, _Request):
            try:
                spans = _typed_spans(prefix, doc)
            except _Skip:  # a bad number or time: ``_walk`` says where, and maps the rest
                yield from _walk(prefix, _plain(text), report)
                continue
            yield from spans
        else:
            yield from _walk(prefix, doc, report)


def _operation(span: _Span) -> str | None:
    op = span.attrs.get("gen_ai.operation.name")
    if isinstance(op, str):
        return op
    return None


_USER = ("meshclaw.user.id", "enduser.id", "user.id", "gen_ai.user.id")
_ORG = ("meshclaw.org.id",)
_TEAM = ("meshclaw.team.id", "team.id")
_AGENT = ("gen_ai.agent.id", "gen_ai.agent.name", "service.name")
_RUN = ("gen_ai.conversation.id",)
_WHO_KEYS = frozenset(_USER + _ORG + _TEAM + _AGENT + _RUN)
"""The attributes ``_who`` reads: what is kept of an ``invoke_agent`` span for the
attribution of the other spans of its trace."""


def _pick(sources: tuple[dict[str, Any], ...], keys: tuple[str, ...]) -> str | None:
    for source in sources:
        for key in keys:
            value = source.get(key)
            if value is not None and value != "":
                return str(value)
    return None


def _who(span: _Span, agent: dict[str, Any] | None, defaults: Defaults) -> dict[str, str]:
    """Attribution of ``span``: its own attributes, else ``agent`` (those of the first
    ``invoke_agent`` span of its trace), else its resource's, else ``defaults``."""
    sources = (span.attrs, agent, span.resource) if agent else (span.attrs, span.resource)
    user = _pick(sources, _USER)
    return {
        "org": _pick(sources, _ORG) or defaults.org,
        "team": _pick(sources, _TEAM) or defaults.team,
        "user": _pseudo(user, defaults) if user else defaults.user,
        "agent": _pick(sources, _AGENT) or defaults.agent,
        "run": _pick(sources, _RUN) or span.trace_id,
    }


def _span_event(span: _Span, agent: dict[str, Any] | None, defaults: Defaults) -> Event | None:
    op = _operation(span)
    if op is None:
        return None
    base: dict[str, Any] = {
        "v": 1,
        "id": f"{span.trace_id}:{span.span_id}",
        "ts": _iso(span.start),
        **_who(span, agent, defaults),
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


WAITING = 20_000
"""Spans held at most while they wait for their trace's ``invoke_agent`` span (a few
kilobytes each): past it the trace that has waited longest is mapped without it."""
AGENTS = 10_000
"""Traces whose ``invoke_agent`` attribution is kept (a few hundred bytes each) for spans
of theirs still to come, which are rare: a run's spans end, and come, before its own."""


class _Attribution:
    """Pairs each span with the attribution of its trace's first ``invoke_agent`` span, in
    one pass over the file.

    A span is mapped with that ``invoke_agent`` span's attributes, which may come later in
    the file: a span is exported when it ends, and an agent's run ends after its model and
    tool calls, so their spans usually come first, in that line or in earlier ones. A span
    of a trace whose ``invoke_agent`` span has not come yet waits here (per trace) until it
    does, or until the end of the file (many traces have none: a gateway's ``chat`` spans
    alone), so its events are the ones reading the file twice would give. What waits is
    bounded (``WAITING`` spans): past it, the trace that has waited longest is mapped from
    its spans' own and resource attributes; if its ``invoke_agent`` span comes later after
    all, ``IngestReport.unattributed`` counts the spans that were mapped without it.
    Spans of a trace whose ``invoke_agent`` span has come are mapped at once (the
    attribution of the last ``AGENTS`` such traces is kept; a span of an older one waits
    like the others, and is mapped without it).
    """

    def __init__(
        self, report: IngestReport, *, waiting: int = WAITING, agents: int | None = None
    ) -> None:
        self.report = report
        self.limit = waiting
        self.agents_limit = AGENTS if agents is None else agents
        self.agents: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.waiting: OrderedDict[str, list[_Span]] = OrderedDict()
        self.held = 0
        self.early: OrderedDict[str, int] = OrderedDict()
        """Traces some of whose spans were mapped before their ``invoke_agent`` span came
        (``WAITING`` was reached), with how many."""

    def add(self, span: _Span, op: str) -> Iterator[tuple[_Span, dict[str, Any] | None]]:
        """The spans that can be mapped now that ``span`` (a GenAI operation) has come,
        each with the attribution of its trace's ``invoke_agent`` span."""
        trace = span.trace_id
        agent = self.agents.get(trace)
        if agent is not None:
            yield span, agent
            return
        if op != "invoke_agent":
            self.waiting.setdefault(trace, []).append(span)
            self.held += 1
            if self.held > self.limit:
                oldest, spans = self.waiting.popitem(last=False)
                self.held -= len(spans)
                self._remember(self.early, oldest, self.early.pop(oldest, 0) + len(spans))
                for waited in spans:
                    yield waited, None
            return
        agent = {key: span.attrs[key] for key in _WHO_KEYS & span.attrs.keys()}
        self._remember(self.agents, trace, agent)
        self.report.unattributed += self.early.pop(trace, 0)
        spans = self.waiting.pop(trace, [])
        self.held -= len(spans)
        for waited in spans:
            yield waited, agent
        yield span, agent

    def rest(self) -> Iterator[tuple[_Span, None]]:
        """At the end of the file: the spans of traces without an ``invoke_agent`` span."""
        for spans in self.waiting.values():
            for span in spans:
                yield span, None
        self.waiting.clear()
        self.held = 0

    def _remember(self, table: OrderedDict[str, Any], trace: str, value: Any) -> None:
        table[trace] = value
        if len(table) > self.agents_limit:
            table.popitem(last=False)


_MAPPED = _INFERENCE | {"execute_tool", "invoke_agent"}


def _otel_events(
    path: Path,
    defaults: Defaults,
    report: IngestReport,
    *,
    fast: bool = True,
    waiting: int = WAITING,
) -> Iterator[Event]:
    """Events from an OTLP JSON file, in one pass (``_Attribution``); ``fast=False``
    walks every request step by step (``_walk``), the reference the fast path is tested
    against. Events of a trace come in file order; traces may interleave differently."""
    attribution = _Attribution(report, waiting=waiting)
    with path.open("rb") as stream:
        for span in _spans(stream, report, fast=fast):
            report.records += 1
            op = _operation(span)
            if op not in _MAPPED:
                report.ignored += 1  # HTTP, database, embeddings, ...: not usage
                continue
            assert op is not None
            for ready, agent in attribution.add(span, op):
                if (event := _mapped(ready, agent, defaults, report)) is not None:
                    yield event
    for ready, agent in attribution.rest():
        if (event := _mapped(ready, agent, defaults, report)) is not None:
            yield event


def _mapped(
    span: _Span, agent: dict[str, Any] | None, defaults: Defaults, report: IngestReport
) -> Event | None:
    try:
        event = _span_event(span, agent, defaults)
    except _Skip as exc:
        report.problem(span.where, str(exc))
        return None
    if event is None:  # not reached: ``_otel_events`` maps only the operations it knows
        report.ignored += 1
    return event
