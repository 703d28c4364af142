"""``meshclaw ingest --format otel``: one streaming pass, the decoded fast path against
the step-by-step walk, attribution across lines, and what bounds memory."""

from __future__ import annotations

import copy
import json
import random
import tracemalloc
from pathlib import Path
from typing import Any

import msgspec
import pytest

from meshclaw.events import LlmCall, read_events
from meshclaw.metering import _ingest_otel as otel
from meshclaw.metering._ingest_base import MAX_PROBLEMS, Defaults, IngestReport, _Skip
from meshclaw.metering.ingest import ingest
from tests.metering.test_ingest import OTLP, _attr, _span

DEFAULTS = Defaults(org="acme")


def _trace(t: int, *, agent: bool = True, bad: str | None = None) -> list[dict[str, Any]]:
    """The spans of one agent run in the order they end: two chats, a tool call, an HTTP
    span, then (if ``agent``) the ``invoke_agent`` span that attributes them."""
    trace_id = f"{t:032x}"

    def span(n: int, attrs: dict[str, Any], **extra: Any) -> dict[str, Any]:
        item = _span(f"{t:08x}{n:08x}", f"op {n}", attrs, **extra)
        item["traceId"] = trace_id
        return item

    chat = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-x",
        "gen_ai.usage.input_tokens": 100 + t,
        "gen_ai.usage.output_tokens": 7,
    }
    spans = [
        span(1, chat, parentSpanId="root"),
        span(2, {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "jira.search"}),
        span(3, {"http.request.method": "GET"}),
        span(4, chat | {"gen_ai.agent.name": "own-agent"}),
    ]
    if agent:
        spans.append(
            span(
                0,
                {
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": f"agent-{t}",
                    "gen_ai.conversation.id": f"conv-{t}",
                    "enduser.id": f"user-{t}",
                    "team.id": "support",
                },
            )
        )
    return spans


def _request(spans: list[dict[str, Any]], service: str = "gateway") -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [_attr("service.name", service)]},
                "scopeSpans": [{"scope": {"name": "x"}, "spans": spans}],
            }
        ]
    }


def _jsonl(path: Path, requests: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in requests))
    return path


def _interleaved(traces: int, per_line: int, **kwargs: Any) -> list[dict[str, Any]]:
    """Export requests of ``per_line`` spans from ``traces`` overlapping runs, round
    robin: a run's spans spread over several lines, its ``invoke_agent`` span last."""
    pending = [_trace(t, **kwargs) for t in range(traces)]
    order: list[dict[str, Any]] = []
    while pending:
        order += [p.pop(0) for p in pending]
        pending = [p for p in pending if p]
    return [_request(order[i : i + per_line]) for i in range(0, len(order), per_line)]


def _two_pass(path: Path, defaults: Defaults) -> tuple[list[dict[str, Any]], IngestReport]:
    """The mapping as it was before it streamed: every span read once to find each
    trace's first ``invoke_agent`` span, then again to map them in file order."""
    report = IngestReport()
    with path.open("rb") as stream:
        spans = list(otel._spans(stream, report, fast=False))
    agents: dict[str, dict[str, Any]] = {}
    for span in spans:
        if otel._operation(span) == "invoke_agent":
            agents.setdefault(span.trace_id, span.attrs)
    events = []
    for span in spans:
        report.records += 1
        try:
            event = otel._span_event(span, agents.get(span.trace_id), defaults)
        except _Skip as exc:
            report.problem(span.where, str(exc))
            continue
        if event is None:
            report.ignored += 1
            continue
        events.append(msgspec.to_builtins(event))
    report.events = len(events)
    return events, report


def _one_pass(
    path: Path, defaults: Defaults, **kwargs: Any
) -> tuple[list[dict[str, Any]], IngestReport]:
    report = IngestReport()
    events = [msgspec.to_builtins(e) for e in otel._otel_events(path, defaults, report, **kwargs)]
    report.events = len(events)
    return events, report


def _key(event: dict[str, Any]) -> str:
    return str(event["id"])


def _same(
    got: tuple[list[dict[str, Any]], IngestReport], want: tuple[list[dict[str, Any]], IngestReport]
) -> None:
    """The same events (a trace's in file order, traces possibly interleaved otherwise)
    and the same report (problems possibly in another order)."""
    (events, report), (expected, reference) = got, want
    assert sorted(events, key=_key) == sorted(expected, key=_key)
    for trace in {e["id"].split(":")[0] for e in expected}:
        mine = [e["id"] for e in events if e["id"].startswith(trace)]
        assert mine == [e["id"] for e in expected if e["id"].startswith(trace)]
    counts = ("records", "events", "skipped", "ignored")
    assert [getattr(report, c) for c in counts] == [getattr(reference, c) for c in counts]
    assert sorted(report.problems) == sorted(reference.problems)


def test_children_before_their_agent_span_in_earlier_lines_are_attributed(
    tmp_path: Path,
) -> None:
    source = _jsonl(tmp_path / "t.jsonl", _interleaved(traces=9, per_line=4))
    # Well-formed lines take the fast path (decoded straight into structs).
    for line in source.read_bytes().splitlines():
        assert isinstance(otel._decode(line, fast=True), otel._Request)
    got = _one_pass(source, DEFAULTS)
    _same(got, _two_pass(source, DEFAULTS))
    events, report = got
    assert (report.records, report.events, report.ignored, report.unattributed) == (45, 36, 9, 0)
    first = [e for e in events if e["id"].startswith(f"{3:032x}")]
    # Each span's own attributes first, then its trace's invoke_agent span's.
    assert {e["agent"] for e in first} == {"agent-3", "own-agent"}
    assert {(e["run"], e["team"], e["org"]) for e in first} == {("conv-3", "support", "acme")}
    assert len({e["user"] for e in first}) == 1 and first[0]["user"].startswith("u_")
    # The same through ``ingest`` and the file it writes.
    report = ingest(source, "otel", tmp_path / "out.jsonl", DEFAULTS)
    written, read = read_events(tmp_path / "out.jsonl")
    assert report.events == len(written) == 36 and read.skipped == 0


def test_traces_without_an_agent_span_are_mapped_at_the_end(tmp_path: Path) -> None:
    requests = _interleaved(traces=5, per_line=3, agent=False)
    source = _jsonl(tmp_path / "t.jsonl", requests)
    got = _one_pass(source, Defaults(agent="fallback"))
    _same(got, _two_pass(source, Defaults(agent="fallback")))
    events, _ = got
    # The resource's service.name, unless the span names its agent.
    assert {e["agent"] for e in events} == {"gateway", "own-agent"}
    assert {e["run"] for e in events} == {f"{t:032x}" for t in range(5)}


def test_waiting_spans_are_bounded_and_late_agents_counted(tmp_path: Path) -> None:
    """With room for 4 waiting spans, 6 overlapping runs cannot all wait for their agent
    span: the runs that waited longest are mapped without it, and counted."""
    source = _jsonl(tmp_path / "t.jsonl", _interleaved(traces=6, per_line=5))
    events, report = _one_pass(source, DEFAULTS, waiting=4)
    reference, _ = _two_pass(source, DEFAULTS)
    assert sorted(e["id"] for e in events) == sorted(e["id"] for e in reference)
    early = [e for e in events if e["run"] == e["id"].split(":")[0]]
    assert early and report.unattributed == len(early)
    assert {e["team"] for e in early} == {"unknown"}  # no invoke_agent span to say
    # Plenty of room: the same as reading the file twice.
    _same(_one_pass(source, DEFAULTS, waiting=1000), _two_pass(source, DEFAULTS))


def test_attribution_holds_at_most_its_limit() -> None:
    report = IngestReport()
    attribution = otel._Attribution(report, waiting=50, agents=10)
    mapped = 0
    for t in range(500):
        span = otel._Span(
            where="x",
            trace_id=f"t{t}",
            span_id="s",
            name="chat",
            start=otel._nanos(0),
            end=otel._nanos(0),
            attrs={"gen_ai.operation.name": "chat"},
            resource={},
            error=False,
        )
        mapped += len(list(attribution.add(span, "chat")))
        assert attribution.held <= 50
        agent = otel._Span(**{**span.__dict__, "attrs": {"gen_ai.operation.name": "invoke_agent"}})
        if t % 2:
            mapped += len(list(attribution.add(agent, "invoke_agent")))
        assert len(attribution.agents) <= 10 and len(attribution.early) <= 10
    mapped += len(list(attribution.rest()))
    assert mapped == 500 + 250 and attribution.held == 0


def _mutations() -> list[tuple[str, Any]]:
    """(JSON path, value) changes to a good request, each malformed somewhere or odd but
    valid: the fast path must hand each to the step-by-step walk or map it the same."""
    rs = "resourceSpans.0"
    span = f"{rs}.scopeSpans.0.spans.1"
    value = f"{span}.attributes.2.value"
    return [
        ("resourceSpans", {"a": 1}),
        (rs, "text"),
        (f"{rs}.resource", None),
        (f"{rs}.resource", []),
        (f"{rs}.resource.attributes", {"k": "v"}),
        (f"{rs}.resource.attributes.0", "k=v"),
        (f"{rs}.resource.attributes.0.key", 5),
        (f"{rs}.resource.attributes.0.value", "plain"),
        (f"{rs}.resource.attributes.0.value", None),
        (f"{rs}.scopeSpans", None),
        (f"{rs}.scopeSpans", "x"),
        (f"{rs}.scopeSpans.0", 7),
        (f"{rs}.scopeSpans.0.spans", {"a": 1}),
        (f"{rs}.scopeSpans.0.spans", None),
        (span, None),
        (f"{span}.traceId", None),
        (f"{span}.traceId", 12),
        (f"{span}.spanId", ["a"]),
        (f"{span}.name", None),
        (f"{span}.startTimeUnixNano", "soon"),
        (f"{span}.startTimeUnixNano", 1764244800000000000),
        (f"{span}.startTimeUnixNano", 1.7e18),
        (f"{span}.startTimeUnixNano", "9" * 25),  # past the year 9999
        (f"{span}.endTimeUnixNano", -(10**30)),
        (f"{span}.endTimeUnixNano", None),
        (f"{span}.endTimeUnixNano", "later"),
        (f"{span}.attributes", None),
        (f"{span}.attributes", 5),
        (f"{span}.status", {"code": 2}),
        (f"{span}.status", {"code": "STATUS_CODE_ERROR"}),
        (f"{span}.status", {"code": 2.0}),
        (f"{span}.status", "error"),
        (f"{span}.status", None),
        (value, {"intValue": "x"}),
        (value, {"intValue": 12.5}),
        (value, {"intValue": None}),
        (value, {"stringValue": None, "intValue": "5"}),
        (value, {"stringValue": 5}),
        (value, {"doubleValue": "1.5"}),
        (value, {"doubleValue": 3}),
        (value, {"boolValue": "yes"}),
        (value, {"boolValue": True}),
        (value, {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "2"}]}}),
        (value, {"arrayValue": {"values": None}}),
        (value, {"arrayValue": None}),
        (value, {"arrayValue": {"values": ["a"]}}),
        (value, {"kvlistValue": {"values": []}}),
        (value, {}),
        (f"{span}.attributes.2", {"key": "gen_ai.usage.input_tokens"}),
        (f"{span}.attributes.0", {"key": "gen_ai.operation.name", "value": {"intValue": "1"}}),
        (f"{rs}.instrumentationLibrarySpans", [{"spans": []}]),
    ]


def _mutated(request: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(request)
    *parents, last = path.split(".")
    node: Any = changed
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return changed


def test_decoded_fast_path_maps_as_the_walk_does(tmp_path: Path) -> None:
    """Every malformation, in a file of good requests around it: the fast path (decoded
    into structs) and the walk give the same events, counts and problems, and the lines
    around a malformed one still map."""
    good = _interleaved(traces=4, per_line=5)
    requests: list[Any] = []
    rng = random.Random(3)
    for path, value in _mutations():
        requests.append(rng.choice(good))
        requests.append(_mutated(good[0], path, value))
    source = _jsonl(tmp_path / "t.jsonl", requests)
    fast = _one_pass(source, DEFAULTS)
    _same(fast, _one_pass(source, DEFAULTS, fast=False))
    _same(fast, _two_pass(source, DEFAULTS))
    _, report = fast
    assert report.skipped >= 30 and report.events > 0
    assert any(p.startswith("line 2: resourceSpans: expected a list") for p in report.problems)
    # One at a time, as a whole document: the same too.
    for n, (path, value) in enumerate(_mutations()):
        single = tmp_path / f"single-{n}.json"
        single.write_text(json.dumps(_mutated(good[0], path, value), indent=n % 2 or None))
        _same(_one_pass(single, DEFAULTS), _one_pass(single, DEFAULTS, fast=False))


DOC = json.dumps(OTLP)
SPANS = "resourceSpans[0].scopeSpans[0].spans"
IN_DOC = [f"{SPANS}[4]: chat span without", f"{SPANS}[5]: malformed span"]


@pytest.mark.parametrize(
    ("text", "events", "problems"),
    [
        # One export request, on one line or many: positions are JSON paths only.
        (DOC, 3, IN_DOC),
        ("\n\n" + DOC + "\n\n", 3, IN_DOC),
        (json.dumps(OTLP, indent=2), 3, IN_DOC),
        (json.dumps(OTLP, indent=2)[:-3], 0, ["line 1: not JSON", "line 2: not JSON"]),
        # JSON Lines: positions are the line, then the JSON path.
        (f"{DOC}\n\n{DOC}\r\n", 6, [f"line {n}: {p}" for n in (1, 3) for p in IN_DOC]),
        (f"{{broken\n{DOC}\n", 3, ["line 1: not JSON", *(f"line 2: {p}" for p in IN_DOC)]),
        (
            f"{{broken\n[1, 2]\n{DOC}",
            3,
            ["line 1: not JSON", "line 2: not an OTLP export request object", f"line 3: {SPANS}"],
        ),
        (
            f'"text"\n7\nnull\n{DOC}',
            3,
            [*(f"line {n}: not an OTLP export request object" for n in (1, 2, 3)), "line 4: "],
        ),
        ("[1, 2]", 0, ["line 1: not an OTLP export request object"]),
        ("\n\nnope\n", 0, ["line 3: not JSON"]),
        ("", 0, []),
        ("{}", 0, []),
    ],
)
def test_documents_and_lines(tmp_path: Path, text: str, events: int, problems: list[str]) -> None:
    """One export request (on one line or many), or JSON Lines of them; every line that
    is not one is a problem at its line, and the others map."""
    source = tmp_path / "t.json"
    source.write_text(text)
    report = ingest(source, "otel", tmp_path / "out.jsonl", DEFAULTS)
    assert report.events == events
    got = [p[: len(w)] for p, w in zip(report.problems, problems, strict=False)]
    assert got == problems, report.problems
    assert len(report.problems) == min(report.skipped, MAX_PROBLEMS) >= len(problems)


def _peak(source: Path) -> tuple[int, int]:
    """Calls mapped from ``source`` and the peak of memory allocated meanwhile (the
    events are not kept: ``EventWriter`` holds a megabyte at most of its own)."""
    calls = 0
    tracemalloc.start()
    try:
        report = IngestReport()
        for event in otel._otel_events(source, DEFAULTS, report):
            calls += isinstance(event, LlmCall)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.skipped == 0 and report.records == source.read_text().count("traceId")
    return calls, peak


def test_memory_stays_bounded_whatever_the_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is read a line at a time: four times the lines, not more memory (reading
    it whole and parsing it took several times its size). The attribution kept of agent
    spans is bounded too (``AGENTS``; lowered here to be reached by a small file)."""
    monkeypatch.setattr(otel, "AGENTS", 100)
    requests = [json.dumps(r) for r in _interleaved(traces=40, per_line=20)]
    peaks, sizes = [], []
    for copies in (15, 60):
        source = tmp_path / f"big-{copies}.jsonl"
        with source.open("w") as out:
            for n in range(copies):  # other trace ids in each copy
                out.writelines(
                    r.replace('"traceId": "0', f'"traceId": "{n:02d}') + "\n" for r in requests
                )
        calls, peak = _peak(source)
        assert calls == copies * 40 * 2
        peaks.append(peak)
        sizes.append(source.stat().st_size)
    assert sizes[1] > 5 << 20
    assert peaks[1] < 1.3 * peaks[0] and peaks[1] < sizes[1] / 2, (peaks, sizes)


def test_json_msgspec_refuses_is_read_as_before_and_bad_bytes_are_a_problem(
    tmp_path: Path,
) -> None:
    """Python's parser reads NaN and 1e400 (msgspec does not): the line's other spans map
    and the odd value is that span's problem. Bytes that are not UTF-8 are a line that is
    not JSON, and the lines around it map."""
    odd = DOC.replace('"endTimeUnixNano": "1764244801500000000"', '"endTimeUnixNano": NaN', 1)
    huge = DOC.replace('"endTimeUnixNano": "1764244801500000000"', '"endTimeUnixNano": 1e400', 1)
    source = tmp_path / "t.jsonl"
    source.write_bytes(b"\n".join([odd.encode(), b'{"resourceSpans": "\xff\xfe"}', huge.encode()]))
    report = ingest(source, "otel", tmp_path / "out.jsonl", DEFAULTS)
    assert report.problems[0].startswith(f"line 1: {SPANS}[0]: malformed span: bad time nan")
    assert report.problems[2].startswith("line 2: not JSON: 'utf-8' codec can't decode")
    assert report.problems[3].startswith(f"line 3: {SPANS}[0]: malformed span: bad time inf")
    # The invoke_agent span (spans[0]) is skipped both times; its trace's other calls map
    # (those that need it waited for it to the end of the file).
    assert report.events == 2 * 2 and report.skipped == 2 * 3 + 1
