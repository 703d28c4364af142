"""``meshclaw ingest``: OTel GenAI spans (OTLP JSON) and LiteLLM spend logs → format v1."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToJson
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from meshclaw.cli.main import app
from meshclaw.events import LlmCall, Run, ToolCall, read_events
from meshclaw.metering.ingest import Defaults, ingest
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
