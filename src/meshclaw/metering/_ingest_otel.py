"""OpenTelemetry GenAI spans (OTLP JSON) mapped onto event format v1.

An ``ExportTraceServiceRequest`` document, or the collector file exporter's JSON Lines of
them. ``chat`` (and other inference) spans become ``llm_call`` events, ``execute_tool``
spans ``tool_call`` events and ``invoke_agent`` spans ``run`` events. The agent, run,
user and team of a span come from its own attributes, else from the ``invoke_agent``
span of its trace.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
    except (TypeError, ValueError) as exc:
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
