"""``meshclaw ingest``: OTel GenAI spans (OTLP JSON) and LiteLLM spend logs → format v1."""

from __future__ import annotations

import bisect
import functools
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from google.protobuf.json_format import MessageToJson
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from meshclaw.cli.main import app
from meshclaw.events import EventWriter, LlmCall, Run, ToolCall, read_events
from meshclaw.metering import _ingest_litellm as litellm_module
from meshclaw.metering import _ingest_parallel as ingest_parallel
from meshclaw.metering._ingest_litellm import _litellm_events
from meshclaw.metering.ingest import MAX_PROBLEMS, Defaults, IngestReport, ingest
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.telemetry import Telemetry
from tests.conftest import World, agent_yaml
from tests.metering.conftest import tool_turns


def _attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def _span(span_id: str, name: str, attrs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": span_id,
        "name": name,
        "startTimeUnixNano": "1764244800000000000",
        "endTimeUnixNano": "1764244801500000000",
        "attributes": [_attr(k, v) for k, v in attrs.items()],
        **extra,
    }


OTLP = {
    "resourceSpans": [
        {
            "resource": {"attributes": [_attr("service.name", "other-gateway")]},
            "scopeSpans": [
                {
                    "spans": [
                        _span(
                            "a1",
                            "invoke_agent triage",
                            {
                                "gen_ai.operation.name": "invoke_agent",
                                "gen_ai.agent.name": "triage",
                                "enduser.id": "carol@example.com",
                                "team.id": "support",
                            },
                        ),
                        _span(
                            "b2",
                            "chat gpt-x",
                            {
                                "gen_ai.operation.name": "chat",
                                "gen_ai.provider.name": "openai",
                                "gen_ai.request.model": "gpt-x",
                                "gen_ai.usage.input_tokens": 120,
                                "gen_ai.usage.output_tokens": 30,
                                "gen_ai.usage.cache_read.input_tokens": 100,
                            },
                            parentSpanId="a1",
                        ),
                        _span(
                            "c3",
                            "execute_tool lookup",
                            {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup"},
                            parentSpanId="a1",
                        ),
                        _span("d4", "GET /health", {"http.method": "GET"}),
                        _span(
                            "e5",
                            "chat broken",
                            {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-x"},
                        ),
                        {"spanId": "f6", "name": "no trace id"},
                    ]
                }
            ],
        }
    ]
}


def test_otlp_json_maps_genai_spans_and_reports_malformed_ones(tmp_path: Path) -> None:
    source, dest = tmp_path / "traces.json", tmp_path / "events.jsonl"
    source.write_text(json.dumps(OTLP))
    report = ingest(source, "otel", dest, Defaults(org="acme"))
    assert (report.records, report.events, report.ignored, report.skipped) == (6, 3, 1, 2)
    assert "spans[4]" in report.problems[0] and "usage" in report.problems[0]
    assert "spans[5]" in report.problems[1]
    events, read = read_events(dest)
    assert read.skipped == 0
    kinds = {type(e): e for e in events}
    call = kinds[LlmCall]
    assert (call.provider, call.model, call.input_tokens, call.output_tokens) == (
        "openai",
        "gpt-x",
        120,
        30,
    )
    assert call.cache_read_tokens == 100 and call.latency_ms == 1500
    # Children are attributed through their trace's invoke_agent span.
    assert call.agent == "triage" and call.team == "support" and call.org == "acme"
    assert call.user.startswith("u_") and "carol" not in call.user
    assert kinds[ToolCall].tool == "external.lookup"
    assert kinds[Run].status == "ok" and kinds[Run].run == call.run


def test_meshclaw_own_spans_round_trip(
    scripted: Callable[[dict[str, Any]], ScriptedServer],
    make_world: Callable[..., World],
    tmp_path: Path,
) -> None:
    world = make_world(scripted(tool_turns()).base_url)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    world.platform.telemetry = Telemetry(provider, CollectorRegistry())
    world.save_agent(agent_yaml())
    info = world.run("helper")
    source, dest = tmp_path / "otlp.jsonl", tmp_path / "events.jsonl"
    # The collector's file exporter writes one export request per line.
    source.write_text(
        MessageToJson(encode_spans(exporter.get_finished_spans()), indent=None) + "\n"
    )
    report = ingest(source, "otel", dest, Defaults(pseudonymise=False))
    assert report.skipped == 0 and report.events == 4
    events, _ = read_events(dest)
    calls = [e for e in events if isinstance(e, LlmCall)]
    assert sum(c.input_tokens for c in calls) == info.input_tokens
    assert all(e.run == info.id and e.user == world.alice.user_id for e in events)
    assert [e.status for e in events if isinstance(e, Run)] == ["ok"]


LITELLM = [
    {
        "request_id": "chatcmpl-1",
        "call_type": "acompletion",
        "spend": 0.00042,
        "prompt_tokens": 300,
        "completion_tokens": 40,
        "startTime": "2026-11-20T10:00:00.000000",
        "endTime": "2026-11-20T10:00:02.500000",
        "model": "gpt-4o-mini",
        "custom_llm_provider": "openai",
        "user": "dave",
        "team_id": "team-ops",
        "metadata": {"user_api_key_org_id": "org-1"},
        "request_tags": ["nightly-report"],
        "session_id": "sess-9",
    },
    {"request_id": "chatcmpl-2", "startTime": "yesterday", "model": "gpt-4o-mini"},
    {"call_type": "acompletion"},
]


def test_litellm_spend_logs_json_and_csv(tmp_path: Path) -> None:
    source, dest = tmp_path / "spend.json", tmp_path / "events.jsonl"
    source.write_text(json.dumps(LITELLM))
    report = ingest(source, "litellm", dest)
    assert (report.records, report.events, report.skipped) == (3, 1, 2)
    assert report.problems[0].startswith("[1]: bad time") and "request_id" in report.problems[1]
    (event,), _ = read_events(dest)
    assert isinstance(event, LlmCall)
    assert (event.org, event.team, event.agent, event.run) == (
        "org-1",
        "team-ops",
        "nightly-report",
        "sess-9",
    )
    assert event.cost_usd == 0.00042 and event.latency_ms == 2500 and event.input_tokens == 300
    csv_source = tmp_path / "spend.csv"
    csv_source.write_text(
        "request_id,spend,prompt_tokens,completion_tokens,startTime,endTime,model,user\n"
        "r1,0.1,10,5,2026-11-20T10:00:00Z,2026-11-20T10:00:01Z,m,erin\n"
        "r2,abc,10,5,2026-11-20T10:00:00Z,2026-11-20T10:00:01Z,m,erin\n"
    )
    report = ingest(csv_source, "litellm", tmp_path / "csv.jsonl")
    assert (report.events, report.skipped) == (1, 1)
    assert report.problems == ["line 3: spend is not a number: 'abc'"]


def test_ingest_cli(tmp_path: Path) -> None:
    source, dest = tmp_path / "spend.json", tmp_path / "out.jsonl"
    source.write_text(json.dumps(LITELLM))
    runner = CliRunner()
    result = runner.invoke(
        app, ["ingest", str(source), "--format", "litellm", "-o", str(dest), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["skipped"] == 2
    bad = runner.invoke(app, ["ingest", str(source), "--format", "csv", "-o", str(dest)])
    assert bad.exit_code == 2


def _mixed_spend_rows(count: int) -> list[str]:
    """Spend-log lines of every shape the mapping meets, good and bad, in a fixed order."""
    rng = random.Random(7)
    times = [
        ("2026-11-20T10:00:00.000000", "2026-11-20T10:00:01.250000"),
        ("2026-11-20T10:00:00Z", "2026-11-20T10:00:02Z"),
        ("2026-11-20T10:00:00+00:00", "2026-11-20T09:59:59+00:00"),  # ends before it starts
        ("2026-11-20T12:00:00+02:00", "2026-11-20T12:00:03+02:00"),
        ("2026-11-20T10:00:00", "2026-11-20T10:00:04Z"),  # one with a zone, one without
        (1763632800.5, 1763632801),
        ("2026-11-20 10:00:00.123", ""),
        ("2026-11-20T10:00:00", None),
        ("yesterday", "2026-11-20T10:00:01"),
        ("2026-11-20T10:00:00", "later"),
        ("", "2026-11-20T10:00:01"),
    ]
    metadata: list[Any] = [
        {"user_api_key_org_id": "org-1"},
        {"user_api_key_org_id": 42, "user_api_key_team_id": "t-meta"},
        {"user_api_key_user_id": "meta-user", "user_api_key_alias": "alias-agent"},
        json.dumps({"user_api_key_org_id": "org-text"}),
        "not json",
        {},
        None,
        {"user_api_key_org_id": ""},
    ]
    tags: list[Any] = [["agent-a"], [], None, json.dumps(["agent-text"]), "plain-tag", [7]]
    tokens: list[Any] = [120, 0, -3, "45", "12.5", "x", None, 10**12]
    spends: list[Any] = [0.00042, 0, 1.5e-07, "0.25", "abc", -0.1, None, "", 3]
    users: list[Any] = ["ann@example.com", "", None, "unknown", "Zoë", 12345]

    def pick(values: list[Any]) -> Any:
        """The first value (a typical one) half the time, else any."""
        return values[0] if rng.random() < 0.5 else rng.choice(values)

    lines: list[str] = []
    for i in range(count):
        start, end = pick(times)
        row: dict[str, Any] = {
            "request_id": f"req-{i}" if rng.random() < 0.95 else "",
            "spend": pick(spends),
            "prompt_tokens": pick(tokens),
            "completion_tokens": pick(tokens),
            "startTime": start,
            "endTime": end,
            "model": pick(["gpt-4o-mini", "claude-x", "", None]),
            "model_group": rng.choice([None, "group-m"]),
            "custom_llm_provider": pick(["openai", None, ""]),
            "user": pick(users),
            "end_user": rng.choice([None, "end-user-1"]),
            "team_id": pick(["team-1", None, ""]),
            "organization_id": rng.choice([None, "org-col"]),
            "session_id": rng.choice([f"sess-{i // 3}", None]),
            "metadata": pick(metadata),
            "request_tags": pick(tags),
            "messages": [{"role": "user", "content": "hello\nthere"}],
        }
        row = {k: v for k, v in row.items() if v is not None or rng.random() < 0.5}
        lines.append(json.dumps(row, ensure_ascii=rng.random() < 0.5))
        if i % 97 == 5:
            lines.append("")  # a blank line
        if i % 89 == 7:
            lines.append('{"request_id": "broken", ')  # not JSON
        if i % 83 == 9:
            lines.append('{"request_id": "a", "model": "m"} {"request_id": "b", "model": "m"}')
        if i % 79 == 11:
            lines.append('{"request_id": "t", "prompt_tokens": true}')  # wrong type
        if i % 73 == 13:
            lines.append("[1, 2]")
    return lines


def _decodes(line: str, kind: type) -> bool:
    try:
        msgspec.json.decode(line, type=kind)
    except msgspec.MsgspecError:
        return False
    return True


def _both_ways(
    source: Path, tmp_path: Path, defaults: Defaults
) -> tuple[tuple[bytes, IngestReport], tuple[bytes, IngestReport]]:
    done = []
    for fast in (True, False):
        report, dest = IngestReport(), tmp_path / f"out-{fast}.jsonl"
        with EventWriter(dest) as writer:
            writer.write_all(_litellm_events(source, defaults, report, fast=fast))
            report.events = writer.count
        done.append((dest.read_bytes(), report))
    return done[0], done[1]


@pytest.mark.parametrize("chunk", [litellm_module.CHUNK, 1500])
@pytest.mark.parametrize("layout", ["lines", "crlf", "lone-cr", "array", "array-decodable"])
def test_litellm_fast_path_writes_what_the_plain_path_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str, chunk: int
) -> None:
    monkeypatch.setattr(litellm_module, "CHUNK", chunk)  # small: many chunk boundaries
    lines = _mixed_spend_rows(1200)
    source = tmp_path / "spend.jsonl"
    if layout.startswith("array"):
        rows = [line for line in lines if _decodes(line, dict)]
        if layout == "array-decodable":  # then the whole array is decoded at once
            rows = [line for line in rows if _decodes(line, litellm_module._SpendRow)]
        source.write_text("[" + ",\n".join(rows) + "]")
    else:
        ending = {"lines": "\n", "crlf": "\r\n", "lone-cr": "\n"}[layout]
        text = ending.join(lines) + ending
        if layout == "lone-cr":  # splitlines breaks lines at a bare CR too
            text = text.replace("\n", "\r", 3)
            text += '{"request_id": "cr",\r"model": "m", "startTime": "2026-11-20T10:00:00"}\n'
        source.write_text(text, newline="")
    for defaults in (Defaults(), Defaults(org="acme", team="", pseudonymise=False)):
        (fast_out, fast), (plain_out, plain) = _both_ways(source, tmp_path, defaults)
        assert fast_out == plain_out
        assert fast == plain
        assert fast.events > 100 and fast.skipped > 100  # both kinds of row are there
        assert len(fast.problems) == MAX_PROBLEMS
    # And the positions are the file's: the first problem of a JSON Lines file is on the
    # line it names.
    if layout == "lines":
        where = fast.problems[0].split(":")[0]
        number = int(where.removeprefix("line "))
        assert where.startswith("line ") and lines[number - 1]


def test_litellm_all_valid_rows_map_by_the_fast_path(tmp_path: Path) -> None:
    """A clean export, as big ones are: every row becomes an event, none is reported."""
    source = tmp_path / "spend.jsonl"
    with source.open("w") as out:
        for i in range(5000):
            row = {
                "request_id": f"req-{i}",
                "spend": 0.0001 * (i % 7),
                "prompt_tokens": 100 + i % 50,
                "completion_tokens": 20 + i % 9,
                "startTime": f"2026-11-20T10:{i % 60:02d}:00.{i:06d}",
                "endTime": "2026-11-20T11:00:01.250000",
                "model": "gpt-4o-mini",
                "user": f"user-{i % 50}",
                "metadata": {"user_api_key_org_id": "org-1"},
                "request_tags": [f"agent-{i % 4}"],
            }
            out.write(json.dumps(row) + "\n")
    (fast_out, fast), (plain_out, plain) = _both_ways(source, tmp_path, Defaults())
    assert fast_out == plain_out and fast == plain
    assert (fast.records, fast.events, fast.skipped) == (5000, 5000, 0)
    events, read = read_events(tmp_path / "out-True.jsonl")
    assert len(events) == 5000 and not read.problems
    assert events[1].ts.microsecond == 1 and events[0].ts.microsecond == 0


@pytest.mark.parametrize(
    "odd",
    [
        '{"request_id": "cr",\r"model": "m", "startTime": "2026-11-20T10:00:00"}',
        '{"request_id": "two", "model": "m",\n"startTime": "2026-11-20T10:00:00"}',
        '{"request_id": "two", "model": "m"\n"startTime": "2026-11-20T10:00:00"}',
        '{"request_id": "a", "model": "m"} {"request_id": "b", "model": "m"}',
        "",
        "   ",
        '{"request_id": "a", "model": "m"}{"request_id": "b", "model": "m"}',
    ],
)
def test_litellm_fast_path_keeps_line_numbers_around_odd_lines(tmp_path: Path, odd: str) -> None:
    """Lines that a batch decode would read differently from line-by-line decoding (a
    value split by a bare CR or a newline, two values on one line, blank lines) among
    good rows: the same events and the same positions either way."""
    good = [
        json.dumps(
            {
                "request_id": f"req-{i}",
                "model": "m",
                "startTime": "2026-11-20T10:00:00",
                "prompt_tokens": 1,
                "completion_tokens": 2,
            }
        )
        for i in range(6)
    ]
    source = tmp_path / "spend.jsonl"
    source.write_text("\n".join([*good[:3], odd, *good[3:]]) + "\n", newline="")
    (fast_out, fast), (plain_out, plain) = _both_ways(source, tmp_path, Defaults())
    assert fast_out == plain_out and fast == plain
    assert fast.events >= 6
    assert all(p.startswith(("line 4:", "line 5:")) for p in fast.problems), fast.problems


# -- several processes --------------------------------------------------------------------

SMALL_CHUNK = 2000
"""Bytes per chunk in the tests below: a few rows each, so hundreds of chunk boundaries."""


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers even for a small file, and small chunks (both set in this process, which
    cuts the file; workers are told their byte ranges)."""
    monkeypatch.setattr(ingest_parallel, "MIN_BYTES", 0)
    monkeypatch.setattr(litellm_module, "CHUNK", SMALL_CHUNK)


def _with_split_values(lines: list[str], every: int) -> list[str]:
    """``lines`` and, every so many lines, a row whose JSON value runs over two lines (two
    problems). When the first half is longer than a chunk, a chunk ends right after it
    (a chunk runs to the first newline past its size), between the halves."""
    out: list[str] = []
    for i, line in enumerate(lines):
        out.append(line)
        if i % every == 3:
            pad = "x" * (SMALL_CHUNK + 1) * (i // every % 2)
            first = f'{{"request_id": "split-{i}", "model": "m", "pad": "{pad}",'
            out += [first, '"startTime": "x"}']
    return out


def _sparse_spend_rows(count: int) -> list[str]:
    """Good rows, as big exports are, with a blank line and a line that is not JSON now
    and then: fewer problems than ``MAX_PROBLEMS``, so every one is compared."""
    lines: list[str] = []
    for i in range(count):
        row = {
            "request_id": f"req-{i}",
            "spend": 0.0001 * (i % 7),
            "prompt_tokens": 100 + i % 50,
            "completion_tokens": 20 + i % 9,
            "startTime": f"2026-11-20T10:{i % 60:02d}:00.{i:06d}",
            "endTime": "2026-11-20T11:00:01.250000",
            "model": "gpt-4o-mini",
            "team_id": f"team-{i % 3}",
            "user": f"user-{i % 50}",
            "metadata": {"user_api_key_org_id": "org-1"},
            "request_tags": [f"agent-{i % 4}"],
        }
        lines.append(json.dumps(row))
        if i % 301 == 100:
            lines.append("")
        if i % 157 == 50:
            lines.append('{"request_id": "broken", ')
    return lines


def _first_lines(source: Path) -> list[tuple[int, int, int]]:
    """(start, end, first line) of each chunk of ``source``, as workers are given them."""
    with source.open("rb") as stream:
        spans = list(litellm_module._chunk_spans(stream, SMALL_CHUNK))
    data, line, out = source.read_bytes(), 1, []
    for start, end in spans:
        out.append((start, end, line))
        line += litellm_module._line_count(data[start:end])
    return out


def _three_ways(
    source: Path, tmp_path: Path, defaults: Defaults
) -> list[tuple[bytes, IngestReport]]:
    """The plain path, then ``ingest`` in this process (``jobs=1``) and with two workers."""
    plain, dest = IngestReport(), tmp_path / "plain.jsonl"
    with EventWriter(dest) as writer:
        writer.write_all(_litellm_events(source, defaults, plain, fast=False))
        plain.events = writer.count
    done = [(dest.read_bytes(), plain)]
    for jobs in (1, 2):
        dest = tmp_path / f"jobs-{jobs}.jsonl"
        report = ingest(source, "litellm", dest, defaults, jobs=jobs)
        done.append((dest.read_bytes(), report))
    return done


@pytest.mark.timeout(300)
@pytest.mark.parametrize("rows", ["mixed", "sparse"])
@pytest.mark.parametrize("layout", ["lines", "crlf", "lone-cr"])
def test_litellm_workers_write_what_one_process_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_chunks: None, layout: str, rows: str
) -> None:
    """Two workers, hundreds of chunks, bad rows in many of them: the same bytes, counts
    and problems (positions, messages, order) as one process and as the plain path.
    ``mixed`` has more problems than are kept, ``sparse`` fewer (all are compared)."""
    if rows == "mixed":
        lines = _with_split_values(_mixed_spend_rows(1200), every=7)
    else:
        lines = _with_split_values(_sparse_spend_rows(2400), every=60)
    ending = "\r\n" if layout == "crlf" else "\n"
    text = ending.join(lines) + ending
    if layout == "lone-cr":  # splitlines breaks lines at a bare CR too
        text = text.replace("\n", "\r", 3)
        text += '{"request_id": "cr",\r"model": "m", "startTime": "2026-11-20T10:00:00"}\n'
    source = tmp_path / "spend.jsonl"
    source.write_text(text, newline="")
    chunks = _first_lines(source)
    data = source.read_bytes()
    assert len(chunks) > 100
    # Some chunk ends between the two halves of a value split over two lines.
    assert any(
        data[:end].splitlines()[-1].startswith(b'{"request_id": "split-')
        for _, end, _ in chunks[:-1]
    )
    started: list[int] = []
    real = ingest_parallel.write_parallel

    def counted(*args: Any, jobs: int, **kwargs: Any) -> None:
        started.append(jobs)
        real(*args, jobs=jobs, **kwargs)

    monkeypatch.setattr(ingest_parallel, "write_parallel", counted)
    for defaults in (Defaults(), Defaults(org="acme", team="", pseudonymise=False)):
        (plain_out, plain), (one_out, one), (two_out, two) = _three_ways(source, tmp_path, defaults)
        assert two_out == one_out == plain_out
        assert two == one == plain
        if rows == "mixed":
            assert two.events > 100 and two.skipped > 200 and len(two.problems) == MAX_PROBLEMS
        else:
            assert two.events >= 2400 and 50 < two.skipped == len(two.problems) < MAX_PROBLEMS
        # The problems come from many chunks, each at its line in the whole file.
        firsts = [line for _, _, line in chunks]
        numbers = [int(p.split(":")[0].removeprefix("line ")) for p in two.problems]
        assert len({bisect.bisect_right(firsts, n) for n in numbers}) >= 10
    assert started == [2, 2]  # jobs=2 took the workers' path, jobs=1 did not


def test_litellm_small_files_other_layouts_and_one_job_stay_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_workers(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("workers started")

    monkeypatch.setattr(ingest_parallel, "write_parallel", no_workers)
    lines = _mixed_spend_rows(300)
    source = tmp_path / "spend.jsonl"
    source.write_text("\n".join(lines) + "\n")
    # Smaller than MIN_BYTES: in this process whatever jobs says.
    assert ingest(source, "litellm", tmp_path / "a.jsonl", jobs=8).records > 300
    monkeypatch.setattr(ingest_parallel, "MIN_BYTES", 0)
    assert ingest(source, "litellm", tmp_path / "b.jsonl", jobs=1).records > 300
    array = tmp_path / "spend.json"  # an array is decoded whole, in this process
    array.write_text("[" + ",".join(line for line in lines if _decodes(line, dict)) + "]")
    assert ingest(array, "litellm", tmp_path / "c.jsonl", jobs=2).records > 200
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


_KILLED_AT_ONCE = (
    "import os, signal, sys; sys.stdin.buffer.read(); os.kill(os.getpid(), signal.SIGKILL)"
)
_KILLED_AFTER_ONE_CHUNK = """
import os, pickle, signal, sys
from meshclaw.metering._ingest_parallel import map_chunk
source, defaults, spans = pickle.load(sys.stdin.buffer)
pickle.dump(("chunk", map_chunk(source, *spans[0], defaults)), sys.stdout.buffer)
sys.stdout.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""
_EXITS = "import sys; sys.stdin.buffer.read(); sys.exit(3)"
_TORN = "import sys; sys.stdin.buffer.read(); sys.stdout.buffer.write(b'\\x80\\x05\\x95')"
_REPORTS_ERROR = (
    "import pickle, sys; sys.stdin.buffer.read();"
    "pickle.dump(('error', 'OSError: disk on fire'), sys.stdout.buffer)"
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("code", "why", "chunks_done"),
    [
        (_KILLED_AT_ONCE, "was killed by SIGKILL without a result", 0),
        (_KILLED_AFTER_ONE_CHUNK, "was killed by SIGKILL without a result", 2),
        (_EXITS, "exited with status 3 without a result", 0),
        (_TORN, "sent a broken result", 0),
        (_REPORTS_ERROR, "failed: OSError: disk on fire", 0),
    ],
)
def test_litellm_a_worker_that_dies_is_a_clear_error(
    tmp_path: Path, code: str, why: str, chunks_done: int
) -> None:
    """Not a hang: the error names the chunk's first line; the events of the chunks
    before it (each worker's first, dealt out in turn) are in the file."""
    source, dest = tmp_path / "spend.jsonl", tmp_path / "events.jsonl"
    source.write_text("\n".join(_mixed_spend_rows(300)) + "\n")
    line = _first_lines(source)[chunks_done][2]
    report = IngestReport()
    with pytest.raises(ingest_parallel.IngestWorkerError) as failed:
        ingest_parallel.write_parallel(
            source,
            dest,
            Defaults(),
            report,
            jobs=2,
            chunk_size=SMALL_CHUNK,
            command=[sys.executable, "-c", code],
        )
    assert f"from line {line} {why}" in str(failed.value)
    whole = ingest(source, "litellm", tmp_path / "whole.jsonl", jobs=1)
    written = dest.read_bytes()
    assert (tmp_path / "whole.jsonl").read_bytes().startswith(written)
    assert written.count(b"\n") == report.events < whole.events
    assert (report.events > 0) == (chunks_done > 0)


_HANGS = "import sys, time; sys.stdin.buffer.read(); time.sleep(600)"


@pytest.mark.timeout(60)
def test_litellm_a_worker_that_hangs_is_stopped_with_a_clear_error(tmp_path: Path) -> None:
    source, dest = tmp_path / "spend.jsonl", tmp_path / "events.jsonl"
    source.write_text("\n".join(_mixed_spend_rows(300)) + "\n")
    with pytest.raises(ingest_parallel.IngestWorkerError) as failed:
        ingest_parallel.write_parallel(
            source,
            dest,
            Defaults(),
            IngestReport(),
            jobs=2,
            chunk_size=SMALL_CHUNK,
            command=[sys.executable, "-c", _HANGS],
            chunk_timeout=1.0,
        )
    assert "from line 1 gave no result within 1 s and was stopped" in str(failed.value)
    assert dest.read_bytes() == b""


@pytest.mark.timeout(120)
def test_ingest_cli_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_chunks: None
) -> None:
    source = tmp_path / "spend.jsonl"
    source.write_text("\n".join(_mixed_spend_rows(300)) + "\n")
    runner = CliRunner()
    printed = []
    for jobs in ("1", "2"):
        dest = tmp_path / f"jobs-{jobs}.jsonl"
        args = ["ingest", str(source), "--format", "litellm", "-o", str(dest), "--json"]
        result = runner.invoke(app, [*args, "--jobs", jobs])
        assert result.exit_code == 0, result.output
        printed.append(json.loads(result.stdout))
    assert printed[0] == printed[1] and printed[0]["skipped"] > 0
    assert (tmp_path / "jobs-1.jsonl").read_bytes() == (tmp_path / "jobs-2.jsonl").read_bytes()
    other = ["ingest", str(source), "--format", "litellm", "-o", str(tmp_path / "x.jsonl")]
    zero = runner.invoke(app, [*other, "-j", "0"])
    assert zero.exit_code == 2
    # A worker that dies: a one-line reason and exit code 1, no traceback.
    crash = functools.partial(
        ingest_parallel.write_parallel, command=[sys.executable, "-c", _KILLED_AT_ONCE]
    )
    monkeypatch.setattr(ingest_parallel, "write_parallel", crash)
    failed = runner.invoke(
        app, ["ingest", str(source), "--format", "litellm", "-o", str(tmp_path / "y"), "-j", "2"]
    )
    assert failed.exit_code == 1
    assert "ingest worker mapping" in failed.stderr and "Traceback" not in failed.output


BAD_INT = {"key": "n", "value": {"intValue": "x"}}


def _otlp_with(resource_span: Any) -> dict[str, Any]:
    """The OTLP document above plus one malformed resourceSpans entry after it."""
    return {"resourceSpans": [*OTLP["resourceSpans"], resource_span]}


@pytest.mark.parametrize(
    ("document", "where", "message"),
    [
        ({"resourceSpans": {"spans": []}}, "resourceSpans", "expected a list, got dict"),
        (_otlp_with("not an object"), "resourceSpans[1]", "expected an object, got str"),
        (_otlp_with({"resource": []}), "resourceSpans[1].resource", "must be an object"),
        (
            _otlp_with({"resource": {"attributes": {"service.name": "x"}}}),
            "resourceSpans[1].resource",
            "attributes must be a list",
        ),
        (
            _otlp_with({"resource": {"attributes": [{"key": "a", "value": "plain"}]}}),
            "resourceSpans[1].resource",
            "value must be an object",
        ),
        (_otlp_with({"scopeSpans": "x"}), "resourceSpans[1].scopeSpans", "expected a list"),
        (_otlp_with({"scopeSpans": [7]}), "resourceSpans[1].scopeSpans[0]", "expected an object"),
        (
            _otlp_with({"scopeSpans": [{"spans": {"a": 1}}]}),
            "resourceSpans[1].scopeSpans[0].spans",
            "expected a list, got dict",
        ),
        (
            _otlp_with({"scopeSpans": [{"spans": [None]}]}),
            "resourceSpans[1].scopeSpans[0].spans[0]",
            "expected an object, got NoneType",
        ),
        (
            _otlp_with({"scopeSpans": [{"spans": [_span("z9", "chat", {}, attributes=5)]}]}),
            "resourceSpans[1].scopeSpans[0].spans[0]",
            "attributes must be a list",
        ),
        (
            _otlp_with({"scopeSpans": [{"spans": [_span("z9", "c", {}, attributes=[BAD_INT])]}]}),
            "resourceSpans[1].scopeSpans[0].spans[0]",
            "bad attribute value",
        ),
    ],
)
def test_otlp_structure_errors_are_reported_at_their_path_and_the_rest_ingests(
    tmp_path: Path, document: dict[str, Any], where: str, message: str
) -> None:
    """Malformed structure at any level above or inside a span is one reported problem
    with its JSON path (and line, in JSON Lines); nothing valid around it is lost."""
    source, dest = tmp_path / "traces.json", tmp_path / "events.jsonl"
    source.write_text(json.dumps(document))
    report = ingest(source, "otel", dest, Defaults(org="acme"))
    problem = next(p for p in report.problems if message in p)
    assert problem.startswith(f"{where}:"), report.problems
    whole = "resourceSpans" in document and isinstance(document["resourceSpans"], list)
    assert report.events == (3 if whole else 0)  # the good spans before it still count

    lines = tmp_path / "traces.jsonl"
    lines.write_text(json.dumps(OTLP) + "\n" + json.dumps(document) + "\n")
    report = ingest(lines, "otel", tmp_path / "more.jsonl", Defaults(org="acme"))
    assert any(p.startswith(f"line 2: {where}:") and message in p for p in report.problems)
    assert report.events == (6 if whole else 3)
