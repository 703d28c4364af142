"""GenAI spans (collected with the SDK's in-memory exporter) and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from meshclaw.api.app import create_app
from meshclaw.config import ProviderConfig, TelemetrySettings
from meshclaw.providers.fakes import FakeAnthropic, FakeCall, FakeTurn, FakeUsage
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.store.models import UsageRecord
from meshclaw.telemetry import Telemetry, build_telemetry
from tests.conftest import World

SPEC = """
name: traced
owner: alice
model: {provider: anthropic, model: claude-fake-1}
instructions: You help.
tools:
  - {name: clock.now, scope: read}
budget: {max_steps: 5, timeout_seconds: 30}
"""


def instrument(world: World) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    world.platform.telemetry = Telemetry(provider, CollectorRegistry())
    return exporter


def test_run_model_and_tool_spans_carry_genai_attributes(
    make_world: Callable[..., World],
) -> None:
    turns = (
        FakeTurn(
            text="checking",
            calls=(FakeCall(name="clock.now", arguments={"tz": "UTC"}),),
            usage=FakeUsage(input_tokens=30, output_tokens=10, cache_write_tokens=500),
        ),
        FakeTurn(
            text="Noon.",
            usage=FakeUsage(
                input_tokens=50, output_tokens=8, cache_read_tokens=500, reasoning_tokens=3
            ),
        ),
    )
    with FakeAnthropic(turns) as server:
        world = make_world()
        world.platform.provider_configs["anthropic"] = ProviderConfig(
            kind="anthropic", base_url=server.base_url
        )
        exporter = instrument(world)
        world.save_agent(SPEC)
        info = world.run("traced")
    assert info.status == "succeeded", info.error
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"invoke_agent traced", "chat claude-fake-1", "execute_tool clock.now"}
    chats = [s for s in exporter.get_finished_spans() if s.name.startswith("chat ")]
    assert len(chats) == 2
    run = spans["invoke_agent traced"]
    tool = spans["execute_tool clock.now"]
    assert run.attributes is not None and tool.attributes is not None
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run.attributes["gen_ai.agent.name"] == "traced"
    assert run.attributes["gen_ai.conversation.id"] == info.id
    assert run.attributes["gen_ai.provider.name"] == "anthropic"
    assert run.attributes["meshclaw.user.id"] == world.alice.user_id
    assert run.attributes["meshclaw.team.id"] == world.alice.team_id
    assert run.attributes["meshclaw.outcome"] == "succeeded"
    for child in (*chats, tool):
        assert child.parent is not None and child.parent.span_id == run.context.span_id
        assert child.context.trace_id == run.context.trace_id
    first, second = chats
    assert first.kind == SpanKind.CLIENT
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["gen_ai.operation.name"] == "chat"
    assert first.attributes["gen_ai.request.model"] == "claude-fake-1"
    assert first.attributes["gen_ai.response.model"] == "claude-fake-1"
    assert first.attributes["gen_ai.usage.input_tokens"] == 30
    assert first.attributes["gen_ai.usage.cache_creation.input_tokens"] == 500
    assert first.attributes["gen_ai.response.finish_reasons"] == ("tool_use",)
    assert second.attributes["gen_ai.usage.input_tokens"] == 550
    assert second.attributes["gen_ai.usage.cache_read.input_tokens"] == 500
    assert second.attributes["gen_ai.usage.reasoning.output_tokens"] == 3
    assert second.attributes["gen_ai.usage.output_tokens"] == 8
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "clock.now"
    assert tool.attributes["gen_ai.tool.call.id"] == "toolu_fake_0_0"
    with world.platform.db.session() as session:
        costs = list(
            session.scalars(select(UsageRecord.cost_nano_usd).where(UsageRecord.kind == "model"))
        )
    assert sum(c.attributes["meshclaw.cost_usd"] for c in chats) == sum(costs) / 1e9  # type: ignore[index]


def test_failed_run_span_has_error_status(
    scripted: Callable[[dict[str, Any]], ScriptedServer], make_world: Callable[..., World]
) -> None:
    server = scripted({"turns": [{"reply": {"content": "x"}, "errors_before": [{"status": 400}]}]})
    world = make_world(server.base_url)
    exporter = instrument(world)
    world.save_agent(
        SPEC.replace(
            "{provider: anthropic, model: claude-fake-1}", "{provider: scripted, model: m}"
        )
    )
    info = world.run("traced")
    assert info.status == "failed"
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["invoke_agent traced"].status.status_code == StatusCode.ERROR
    assert spans["chat m"].status.status_code == StatusCode.ERROR
    assert spans["invoke_agent traced"].attributes["gen_ai.provider.name"] == "openai"  # type: ignore[index]


def test_metrics_are_labelled_by_org_team_and_agent_never_user(
    scripted: Callable[[dict[str, Any]], ScriptedServer], make_world: Callable[..., World]
) -> None:
    server = scripted(
        {
            "turns": [
                {"reply": {"content": "c", "tool_calls": [{"name": "clock.now", "arguments": {}}]}},
                {"reply": {"content": "done"}},
            ]
        }
    )
    world = make_world(server.base_url)
    instrument(world)
    world.save_agent(
        SPEC.replace(
            "{provider: anthropic, model: claude-fake-1}", "{provider: scripted, model: m}"
        )
    )
    world.platform.telemetry.watch_budgets(world.platform.db)
    for scope, name in (("team", "eng"), ("user", "alice")):
        world.platform.budgets.set(
            world.admin,
            scope=scope,
            name=name,
            metric="calls",
            period="day",
            hard_cap="10",
            soft_cap=None,
        )
    assert world.run("traced").status == "succeeded"
    admin = world.platform.accounts.issue_token(world.admin.user_id, "t")
    alice = world.platform.accounts.issue_token(world.alice.user_id, "t")
    with TestClient(create_app(world.platform)) as client:
        assert client.get("/metrics").status_code == 401
        assert (
            client.get("/metrics", headers={"Authorization": f"Bearer {alice}"}).status_code == 403
        )
        text = client.get("/metrics", headers={"Authorization": f"Bearer {admin}"}).text
    team, org = world.alice.team_id, world.alice.org_id
    who = f'agent="traced",kind="model",org="{org}",status="ok",team="{team}"'
    assert f"meshclaw_calls_total{{{who}}} 2.0" in text
    assert f"meshclaw_calls_total{{{who.replace('model', 'tool')}}} 1.0" in text
    tokens = f'meshclaw_tokens_total{{agent="traced",model="m",org="{org}",provider="scripted"'
    assert tokens in text
    assert "meshclaw_cost_usd_total" in text and "meshclaw_call_latency_seconds_bucket" in text
    runs = f'agent="traced",org="{org}",status="succeeded",team="{team}"'
    assert f"meshclaw_runs_total{{{runs}}} 1.0" in text
    labels = f'metric="calls",name="eng",org="{org}",period="day",scope="team"'
    assert f"meshclaw_budget_spent{{{labels}}} 2.0" in text
    assert f"meshclaw_budget_utilisation{{{labels}}} 0.2" in text
    assert 'scope="user"' not in text
    assert world.alice.user_id not in text and "alice" not in text


def test_otlp_export_is_configured_from_settings() -> None:
    telemetry = build_telemetry(
        TelemetrySettings(otlp_endpoint="http://127.0.0.1:9/v1/traces", metrics=False)
    )
    assert telemetry.registry is None and telemetry.builds_spans
    telemetry.shutdown()


def test_without_an_otlp_endpoint_no_span_is_built_but_metrics_are_kept() -> None:
    telemetry = build_telemetry(TelemetrySettings(metrics=True))
    assert not telemetry.builds_spans and telemetry.registry is not None
    telemetry.shutdown()
