"""The ``Telemetry`` recorder: spans through an OpenTelemetry ``TracerProvider`` and
metrics in a Prometheus ``CollectorRegistry``, both owned by the platform (no globals)."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, Histogram

from meshclaw.config import TelemetrySettings
from meshclaw.providers.base import ModelRequest, ModelResponse, ToolCall
from meshclaw.store.db import Database
from meshclaw.telemetry._org_view import ORG_LABEL, render

if TYPE_CHECKING:
    from meshclaw.runtime.context import RunContext

_VENDOR = {"openai": "openai", "anthropic": "anthropic", "bedrock": "aws.bedrock"}
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


def _labels(ctx: RunContext) -> dict[str, str]:
    return {ORG_LABEL: ctx.org_id, "team": ctx.team_id or "none", "agent": ctx.spec.name}


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        common = [ORG_LABEL, "team", "agent"]
        self.tokens = Counter(
            "meshclaw_tokens",
            "Tokens metered, by type (input, output, cached, cache_write, reasoning).",
            [*common, "provider", "model", "type"],
            registry=registry,
        )
        self.cost = Counter(
            "meshclaw_cost_usd",
            "Cost metered in USD.",
            [*common, "provider", "model"],
            registry=registry,
        )
        self.calls = Counter(
            "meshclaw_calls",
            "Model and tool calls by outcome.",
            [*common, "kind", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "meshclaw_call_latency_seconds",
            "Call latency.",
            [*common, "kind"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.denials = Counter(
            "meshclaw_denials",
            "Calls refused before they were made (policy or budget).",
            [*common, "kind", "reason"],
            registry=registry,
        )
        self.runs = Counter(
            "meshclaw_runs", "Runs finished, by status.", [*common, "status"], registry=registry
        )


class Telemetry:
    """Records spans and metrics; safe to share between threads and event loops."""

    def __init__(
        self, tracer_provider: TracerProvider | None, registry: CollectorRegistry | None
    ) -> None:
        self._provider = tracer_provider
        self._tracer = tracer_provider.get_tracer("meshclaw") if tracer_provider else None
        self.registry = registry
        self._metrics = _Metrics(registry) if registry is not None else None
        self._runs: dict[str, Span] = {}
        self._lock = threading.Lock()

    @classmethod
    def disabled(cls) -> Telemetry:
        return cls(None, None)

    @property
    def builds_spans(self) -> bool:
        return self._tracer is not None

    # -- runs ---------------------------------------------------------------------------

    def start_run(self, ctx: RunContext, provider_kind: str | None = None) -> None:
        if self._tracer is None:
            return
        span = self._tracer.start_span(
            f"invoke_agent {ctx.spec.name}",
            kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.id": ctx.agent_id,
                "gen_ai.agent.name": ctx.spec.name,
                "gen_ai.agent.version": str(ctx.agent_version),
                "gen_ai.conversation.id": ctx.run_id,
                "gen_ai.provider.name": _VENDOR.get(provider_kind or "", provider_kind or ""),
                "gen_ai.request.model": ctx.spec.model.model,
                "meshclaw.user.id": ctx.user_id,
                "meshclaw.team.id": ctx.team_id or "",
                "meshclaw.org.id": ctx.org_id,
                "meshclaw.trigger": ctx.trigger,
            },
        )
        with self._lock:
            self._runs[ctx.run_id] = span

    def end_run(self, ctx: RunContext, status: str, error: str | None) -> None:
        if self._metrics is not None:
            self._metrics.runs.labels(**_labels(ctx), status=status).inc()
        with self._lock:
            span = self._runs.pop(ctx.run_id, None)
        if span is None:
            return
        span.set_attribute("meshclaw.run.status", status)
        span.set_attribute("meshclaw.outcome", status)
        span.set_attribute("meshclaw.cost_usd", ctx.totals.cost_nano_usd / 1e9)
        span.set_attribute("meshclaw.tokens", ctx.totals.tokens)
        if status != "succeeded":
            span.set_status(Status(StatusCode.ERROR, error or status))
        span.end()

    def _parent(self, ctx: RunContext) -> Any:
        with self._lock:
            span = self._runs.get(ctx.run_id)
        return trace.set_span_in_context(span) if span is not None else None

    # -- calls --------------------------------------------------------------------------

    def model_call(
        self,
        ctx: RunContext,
        *,
        provider: str,
        provider_kind: str,
        request: ModelRequest,
        response: ModelResponse | None,
        latency_ms: int,
        cost_nano_usd: int = 0,
        error: str | None = None,
    ) -> None:
        labels = _labels(ctx)
        if self._metrics is not None:
            m = self._metrics
            status = "error" if error else "ok"
            m.calls.labels(**labels, kind="model", status=status).inc()
            m.latency.labels(**labels, kind="model").observe(latency_ms / 1000)
            if response is not None:
                which = {"provider": provider, "model": request.model}
                u = response.usage
                for kind, value in (
                    ("input", u.input_tokens),
                    ("output", u.output_tokens),
                    ("cached", u.cached_tokens),
                    ("cache_write", u.cache_write_tokens),
                    ("reasoning", u.reasoning_tokens),
                ):
                    if value:
                        m.tokens.labels(**labels, **which, type=kind).inc(value)
                m.cost.labels(**labels, **which).inc(cost_nano_usd / 1e9)
        if self._tracer is None:
            return
        end = time.time_ns()
        span = self._tracer.start_span(
            f"chat {request.model}",
            context=self._parent(ctx),
            kind=SpanKind.CLIENT,
            start_time=end - latency_ms * 1_000_000,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": _VENDOR.get(provider_kind, provider_kind),
                "gen_ai.request.model": request.model,
                "gen_ai.conversation.id": ctx.run_id,
                "gen_ai.agent.id": ctx.agent_id,
                "gen_ai.agent.name": ctx.spec.name,
                "meshclaw.provider": provider,
                "meshclaw.user.id": ctx.user_id,
                "meshclaw.team.id": ctx.team_id or "",
            },
        )
        if response is not None:
            u = response.usage
            span.set_attributes(
                {
                    "gen_ai.response.model": response.model or request.model,
                    "gen_ai.usage.input_tokens": u.input_tokens,
                    "gen_ai.usage.output_tokens": u.output_tokens,
                    "gen_ai.usage.cache_read.input_tokens": u.cached_tokens,
                    "gen_ai.usage.cache_creation.input_tokens": u.cache_write_tokens,
                    "gen_ai.usage.reasoning.output_tokens": u.reasoning_tokens,
                    "meshclaw.usage.estimated": u.estimated,
                    "meshclaw.cost_usd": cost_nano_usd / 1e9,
                }
            )
            if response.response_id:
                span.set_attribute("gen_ai.response.id", response.response_id)
            if response.finish_reason:
                span.set_attribute("gen_ai.response.finish_reasons", [response.finish_reason])
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
            span.set_attribute("error.type", "ProviderError")
        span.end(end_time=end)

    def tool_call(self, ctx: RunContext, *, call: ToolCall, latency_ms: int, status: str) -> None:
        labels = _labels(ctx)
        if self._metrics is not None:
            self._metrics.calls.labels(**labels, kind="tool", status=status).inc()
            self._metrics.latency.labels(**labels, kind="tool").observe(latency_ms / 1000)
        if self._tracer is None:
            return
        end = time.time_ns()
        span = self._tracer.start_span(
            f"execute_tool {call.name}",
            context=self._parent(ctx),
            kind=SpanKind.INTERNAL,
            start_time=end - latency_ms * 1_000_000,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": call.name,
                "gen_ai.tool.call.id": call.id,
                "gen_ai.tool.type": "function",
                "gen_ai.conversation.id": ctx.run_id,
                "gen_ai.agent.id": ctx.agent_id,
                "gen_ai.agent.name": ctx.spec.name,
                "meshclaw.user.id": ctx.user_id,
                "meshclaw.team.id": ctx.team_id or "",
                "meshclaw.tool.status": status,
            },
        )
        if status != "ok":
            span.set_status(Status(StatusCode.ERROR, status))
        span.end(end_time=end)

    def denied(self, ctx: RunContext, *, kind: str, action: str) -> None:
        if self._metrics is None:
            return
        reason = "budget" if action.endswith(".budget") else "policy"
        self._metrics.denials.labels(**_labels(ctx), kind=kind, reason=reason).inc()

    def exposition(self, org_id: str | None) -> bytes | None:
        """Prometheus text of one org's series (``org_id`` None: every org's, for the
        operator's scrape); None when metrics are off."""
        return None if self.registry is None else render(self.registry, org_id)

    def watch_budgets(self, db: Database) -> None:
        """Serve each org, team and agent budget's state with the metrics."""
        if self.registry is not None:
            from meshclaw.telemetry._budget_metrics import BudgetCollector

            self.registry.register(BudgetCollector(db))

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()


def build_telemetry(settings: TelemetrySettings) -> Telemetry:
    """Spans are exported over OTLP/HTTP when an endpoint is set, and not built at all
    when none is (a span nobody exports cost ~0.3 ms per call); metrics go to a registry
    served at ``/metrics`` when enabled."""
    registry = CollectorRegistry() if settings.metrics else None
    if not settings.otlp_endpoint:
        return Telemetry(None, registry)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    exporter = OTLPSpanExporter(
        endpoint=settings.otlp_endpoint, headers=dict(settings.otlp_headers)
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return Telemetry(provider, registry)
