"""The choke point. Every model call and every tool call of every run passes here.

Order for each call: authorise -> check budget -> persist the step as started ->
call (with retries for models) -> meter (usage, cost) -> persist the step's end, the
usage record, the budget settle and the audit record in one transaction, which under an
executor is also the run's next write (the next call's start, or the run's end): see
``runtime.steps``. Nothing else in MeshClaw calls ``ModelProvider.complete`` or
``Connector.call_tool`` (a test walks the source to prove it), so there is no side door
around policy, budget, metering or audit.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.orm import Session

from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.connectors.base import ToolContext, ToolResult
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.errors import (
    BudgetExceeded,
    MeshClawError,
    PolicyDenied,
    ProviderError,
    ProviderUnavailable,
)
from meshclaw.metering.budget import BudgetGuard, BudgetScope, PlannedCall, Reservation
from meshclaw.metering.calls import estimate_call, model_fingerprint, tool_fingerprint
from meshclaw.metering.prices import PriceSource, to_nano
from meshclaw.policy.approvals import Approvals, HeldCall
from meshclaw.policy.authorizer import Authorizer, AuthzRequest, Decision, Principal
from meshclaw.providers.base import ModelRequest, ModelResponse, ToolCall, ToolSpec
from meshclaw.providers.registry import ProviderRegistry
from meshclaw.runtime.context import RunContext
from meshclaw.runtime.steps import StepWriter, attribution, call_end, insert_usage
from meshclaw.runtime.trace import request_summary, response_summary
from meshclaw.store.db import Database
from meshclaw.telemetry import Telemetry
from meshclaw.text import NUL, without_nul, without_nul_in

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Backoff for retryable provider errors (429, 5xx, connection failures)."""

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 20.0

    def delay(self, attempt: int) -> float:
        # Full jitter keeps many runs that hit one rate limit from retrying in step.
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


class Gateway:
    """Authorise, budget, call, meter and audit: the one path to models and tools."""

    def __init__(
        self,
        *,
        db: Database,
        providers: ProviderRegistry,
        connectors: ConnectorRegistry,
        authorizer: Authorizer,
        budget: BudgetGuard,
        prices: PriceSource,
        audit: AuditSink,
        retry: RetryPolicy | None = None,
        telemetry: Telemetry | None = None,
        sleep: Sleep = asyncio.sleep,
        tool_timeout_seconds: float = 120.0,
        approvals: Approvals | None = None,
    ) -> None:
        self._db = db
        self._steps = StepWriter(db)
        self._approvals = approvals
        """Where held calls wait for a person; without it "needs approval" is a deny."""
        self._providers = providers
        self._connectors = connectors
        self._authorizer = authorizer
        self._budget = budget
        self._prices = prices
        self._audit = audit
        self._retry = retry or RetryPolicy()
        self.telemetry = telemetry or Telemetry.disabled()
        """GenAI spans and Prometheus metrics, fed after each call is metered."""
        self._sleep = sleep
        self._tool_timeout = tool_timeout_seconds

    async def aclose(self) -> None:
        self._steps.close()
        await self._providers.aclose()
        await self._connectors.aclose()

    # -- tools offered to the model ---------------------------------------------------

    async def offered_tools(self, ctx: RunContext) -> tuple[ToolSpec, ...]:
        """The spec's granted tools that exist and that the authoriser permits.

        A tool without a permit is never shown to the model, so it cannot be asked for.
        """
        offered: list[ToolSpec] = []
        for grant in ctx.spec.tools:
            connector_name, tool_name = grant.name.split(".", 1)
            definitions = await self._connectors.tools(
                connector_name, org_id=ctx.org_id, user_id=ctx.user_id
            )
            for name, definition in sorted(definitions.items()):
                if tool_name not in ("*", name):
                    continue
                qualified = f"{connector_name}.{name}"
                # Offered if some call could pass: arguments and targets are checked per call.
                offer = {"offer": True}
                action = f"tool.{definition.action}"
                decision = self._authorize(ctx, action, f"tool:{qualified}", offer)
                offered_ok = decision.allowed or decision.needs_approval
                if offered_ok and qualified not in ctx.tool_definitions:
                    ctx.tool_definitions[qualified] = definition
                    offered.append(
                        ToolSpec(
                            name=qualified,
                            description=definition.description,
                            parameters=definition.input_schema,
                        )
                    )
        return tuple(offered)

    # -- model calls --------------------------------------------------------------------

    async def invoke_model(self, ctx: RunContext, request: ModelRequest) -> ModelResponse:
        provider_name = ctx.spec.model.provider
        resource = f"model:{provider_name}/{request.model}"
        seq = ctx.take_step_number()
        decision = self._authorize(ctx, "model.invoke", resource)
        if not decision.allowed:
            self._refuse(ctx, seq, "model", request.model, "model.invoke", resource, decision)
            raise PolicyDenied(f"model call denied: {decision.reason}")
        prices = self._prices.for_org(ctx.org_id)  # the file plus the org's own prices
        planned = PlannedCall(
            kind="model",
            scope=self._scope(ctx),
            fingerprint=model_fingerprint(request),
            estimator=functools.partial(estimate_call, prices, provider_name, request),
        )
        provider = self._providers.get(provider_name)
        step_id, reservation = self._start_step(
            ctx, seq, "model", request.model, request_summary(request), planned, resource
        )
        attempts: list[dict[str, Any]] = []
        started = time.perf_counter()
        try:
            response = _without_nul(
                await self._complete_with_retries(provider.complete, request, attempts)
            )
        except asyncio.CancelledError:
            self._budget.release(reservation)
            self._steps.end(
                ctx, call_end(step_id, "cancelled", {"attempts": attempts}, str(decision))
            )
            raise
        except ProviderError as exc:
            self._budget.release(reservation)
            failure = self._record(ctx, "model.invoke", resource, "error", {"error": str(exc)})
            self._steps.end(
                ctx,
                call_end(
                    step_id,
                    "error",
                    {"attempts": attempts},
                    str(decision),
                    error=str(exc),
                    then=lambda session: self._audit.append(session, failure),
                ),
            )
            self.telemetry.model_call(
                ctx,
                provider=provider_name,
                provider_kind=self.provider_kind(ctx),
                request=request,
                response=None,
                latency_ms=int((time.perf_counter() - started) * 1000),
                error=str(exc),
            )
            raise
        latency_ms = int((time.perf_counter() - started) * 1000)
        usage = response.usage
        cost = prices.cost_usd(provider_name, request.model, usage)
        cost_nano = to_nano(cost) if cost is not None else 0
        ctx.totals.tokens += usage.total_tokens
        ctx.totals.cost_nano_usd += cost_nano
        ctx.totals.model_calls += 1
        summary = response_summary(response) | {"attempts": attempts, "latency_ms": latency_ms}
        metered = {
            **attribution(ctx),
            "kind": "model",
            "step_id": step_id,
            "provider": provider_name,
            "model": request.model,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "estimated": usage.estimated,
            "latency_ms": latency_ms,
            "cost_nano_usd": cost_nano,
            "price_version": prices.version if cost is not None else None,
        }
        record = self._record(
            ctx,
            "model.invoke",
            resource,
            "ok",
            {
                "step": seq,
                "decision": str(decision),
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cost_nano_usd": cost_nano,
            },
        )

        def meter(session: Session) -> None:
            self._budget.settle(
                session, reservation, cost_nano_usd=cost_nano, tokens=usage.total_tokens
            )
            insert_usage(session.connection(), metered)
            self._audit.append(session, record)

        # Only while the step is still ours: another worker that took the run over marks
        # this call lost, then re-makes and meters it; metering it here too would count
        # it twice.
        self._steps.end(
            ctx,
            call_end(
                step_id,
                "ok",
                summary,
                str(decision),
                cost_nano_usd=cost_nano,
                only_running=True,
                then=meter,
                superseded=functools.partial(self._budget.release, reservation),
            ),
        )
        self.telemetry.model_call(
            ctx,
            provider=provider_name,
            provider_kind=self.provider_kind(ctx),
            request=request,
            response=response,
            latency_ms=latency_ms,
            cost_nano_usd=cost_nano,
        )
        return response

    async def _complete_with_retries(
        self,
        complete: Callable[[ModelRequest], Awaitable[ModelResponse]],
        request: ModelRequest,
        attempts: list[dict[str, Any]],
    ) -> ModelResponse:
        for attempt in range(self._retry.max_attempts):
            try:
                return await complete(request)
            except ProviderError as exc:
                attempts.append({"attempt": attempt + 1, "status": exc.status, "error": str(exc)})
                if not exc.retryable or attempt + 1 >= self._retry.max_attempts:
                    if exc.retryable:
                        raise ProviderUnavailable(
                            f"{exc} (gave up after {attempt + 1} attempts)", status=exc.status
                        ) from None
                    raise
                await self._sleep(self._retry.delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    # -- tool calls ---------------------------------------------------------------------

    async def invoke_tool(
        self, ctx: RunContext, call: ToolCall, *, seq: int | None = None
    ) -> ToolResult:
        """Run one tool call. Failures come back as an error result for the model.

        ``seq`` re-runs a step that started before a crash: same step, same idempotency key.
        """
        seq = ctx.take_step_number() if seq is None else seq
        if len(call.name) > MAX_CALLED_NAME:  # no tool has it: denied below, and stored
            call = replace(call, name=_clipped(call.name))
        refused_request = {"tool_call_id": call.id, "arguments": call.arguments}
        definition = ctx.tool_definitions.get(call.name)
        if definition is None:
            decision = Decision(allowed=False, reason=f"tool {call.name} was not offered")
            content = f"error: no tool named {call.name}"
            self._refuse(
                ctx,
                seq,
                "tool",
                call.name,
                "tool.call",
                f"tool:{call.name}",
                decision,
                request=refused_request,
                content=content,
            )
            return ToolResult(content=content, is_error=True)
        action = f"tool.{definition.action}"
        resource = f"tool:{call.name}"
        # Judge and send the call the server will run, its schema's defaults included.
        policy_context = definition.policy_context(call.arguments)
        call = replace(call, arguments=policy_context["arguments"])
        targets = policy_context["targets"]
        decision = self._authorize(ctx, action, resource, policy_context)
        if decision.needs_approval and self._approvals is not None:
            decision = self._apply_approval(ctx, seq, call, action, resource, targets, decision)
            if decision.needs_approval:
                content = f"held: {decision.reason}"
                self._refuse(
                    ctx,
                    seq,
                    "tool",
                    call.name,
                    action,
                    resource,
                    decision,
                    request=refused_request,
                    content=content,
                    status="waiting_approval",
                )
                ctx.held_calls.append(call.id)
                return ToolResult(content=content, is_error=True)
        if not decision.allowed:
            content = f"denied: {decision.reason}"
            self._refuse(
                ctx,
                seq,
                "tool",
                call.name,
                action,
                resource,
                decision,
                request=refused_request,
                content=content,
            )
            return ToolResult(content=content, is_error=True)
        planned = PlannedCall(
            kind="tool", scope=self._scope(ctx), fingerprint=tool_fingerprint(call)
        )
        connector_name, tool_name = call.name.split(".", 1)
        connector = self._connectors.get(connector_name, org_id=ctx.org_id)
        assert connector is not None  # offered tools come from registered connectors
        request = {"tool_call_id": call.id, "arguments": call.arguments}
        step_id, reservation = self._start_step(
            ctx, seq, "tool", call.name, request, planned, resource
        )
        tool_ctx = ToolContext(
            org_id=ctx.org_id,
            user_id=ctx.user_id,
            agent_id=ctx.agent_id,
            run_id=ctx.run_id,
            step_id=step_id,
            idempotency_key=ctx.idempotency_key(seq),
        )
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._tool_timeout):
                result = await connector.call_tool(tool_name, call.arguments, tool_ctx)
        except asyncio.CancelledError:
            self._budget.release(reservation)
            self._steps.end(ctx, call_end(step_id, "cancelled", None, str(decision)))
            raise
        except TimeoutError:
            result = ToolResult(content=f"error: {call.name} timed out", is_error=True)
        except Exception as exc:  # a tool bug must not kill the run; the model sees it
            result = ToolResult(content=f"error: {exc}", is_error=True)
        data = without_nul_in(result.data)
        if NUL in result.content or data is not result.data:
            result = replace(result, content=without_nul(result.content), data=data)
        latency_ms = int((time.perf_counter() - started) * 1000)
        status = "error" if result.is_error else "ok"
        ctx.totals.tool_calls += 1
        if result.untrusted:
            ctx.untrusted_content_seen = True  # provenance: every later call knows
        response = {
            "content": result.content,
            "data": result.data,
            "latency_ms": latency_ms,
            "untrusted": result.untrusted,
        }
        metered = {
            **attribution(ctx),
            "kind": "tool",
            "step_id": step_id,
            "tool": call.name,
            "status": status,
            "latency_ms": latency_ms,
        }
        record = self._record(
            ctx, action, resource, status, {"step": seq, "decision": str(decision)}
        )

        def meter(session: Session) -> None:
            self._budget.settle(session, reservation, cost_nano_usd=0, tokens=0)
            insert_usage(session.connection(), metered)
            self._audit.append(session, record)

        error = result.content if result.is_error else None
        # A worker whose run was taken over meanwhile writes nothing here (its lease is
        # fenced: ``runtime.steps``); its successor re-made this call with the same
        # idempotency key and meters and audits it once.
        self._steps.end(
            ctx,
            call_end(
                step_id,
                status,
                response,
                str(decision),
                error=error,
                then=meter,
                superseded=functools.partial(self._budget.release, reservation),
            ),
        )
        self.telemetry.tool_call(ctx, call=call, latency_ms=latency_ms, status=status)
        return result

    # -- helpers ------------------------------------------------------------------------

    def _apply_approval(
        self,
        ctx: RunContext,
        seq: int,
        call: ToolCall,
        action: str,
        resource: str,
        targets: list[str],
        decision: Decision,
    ) -> Decision:
        """A held call: wait for a person, or go on with what they decided."""
        assert self._approvals is not None
        resolution = self._approvals.resolve(
            HeldCall(
                org_id=ctx.org_id,
                run_id=ctx.run_id,
                agent_id=ctx.agent_id,
                owner_id=ctx.user_id,
                seq=seq,
                tool_call_id=call.id,
                tool=call.name,
                action=action,
                arguments=call.arguments,
                decision=decision,
            )
        )
        if resolution.verdict == "pending":
            reason = f"waiting for approval {resolution.approval_id} ({decision.reason})"
            return Decision(allowed=False, needs_approval=True, reason=reason)
        if resolution.verdict != "approved":
            return Decision(allowed=False, reason=resolution.reason, policies=decision.policies)
        # Approved: the policy decides again, knowing it. The call must still be in scope.
        extra = {"arguments": call.arguments, "targets": targets, "approved": True}
        again = self._authorize(ctx, action, resource, extra)
        return Decision(
            allowed=again.allowed,
            reason=f"{again.reason}; {resolution.reason}",
            policies=again.policies,
        )

    def _authorize(
        self, ctx: RunContext, action: str, resource: str, extra: dict[str, Any] | None = None
    ) -> Decision:
        context = {
            "run_id": ctx.run_id,
            "trigger": ctx.trigger,
            "untrusted_content_seen": ctx.untrusted_content_seen,
        } | (extra or {})
        return self._authorizer.authorize(
            AuthzRequest(
                principal=Principal(
                    org_id=ctx.org_id,
                    user_id=ctx.user_id,
                    agent_id=ctx.agent_id,
                    team_id=ctx.team_id,
                ),
                action=action,  # type: ignore[arg-type]
                resource=resource,
                spec=ctx.spec,
                context=context,
            )
        )

    def provider_kind(self, ctx: RunContext) -> str:
        """The wire protocol of the run's provider (``openai``, ``anthropic``, ``bedrock``)."""
        try:
            return self._providers.config(ctx.spec.model.provider).kind
        except MeshClawError:
            return "unknown"

    def _start_step(
        self,
        ctx: RunContext,
        seq: int,
        kind: str,
        name: str,
        request: dict[str, Any],
        planned: PlannedCall,
        resource: str,
    ) -> tuple[str, Reservation]:
        """Reserve the call's budget and start its step in one transaction, before the
        call is made; a refusal is recorded and raised. If that transaction fails, the
        reservation went with it: there is nothing to release."""
        try:
            return self._steps.start(
                ctx,
                seq,
                kind,
                name,
                request,
                lambda conn: self._budget.reserve(planned, ctx.spec, ctx.totals, conn=conn),
            )
        except BudgetExceeded as exc:
            refusal = Decision(allowed=False, reason=f"budget: {exc}")
            self._refuse(ctx, seq, kind, name, f"{kind}.budget", resource, refusal)
            raise

    @staticmethod
    def _scope(ctx: RunContext) -> BudgetScope:
        return BudgetScope(
            org_id=ctx.org_id,
            team_id=ctx.team_id,
            user_id=ctx.user_id,
            agent_id=ctx.agent_id,
            run_id=ctx.run_id,
        )

    def _refuse(
        self,
        ctx: RunContext,
        seq: int,
        kind: str,
        name: str,
        action: str,
        resource: str,
        decision: Decision,
        *,
        request: dict[str, Any] | None = None,
        content: str | None = None,
        status: str = "denied",
    ) -> None:
        """A refused call still leaves a step and an audit record: refusals are evidence.

        ``status="waiting_approval"`` records a call held for a person instead."""
        if status == "denied":
            self.telemetry.denied(ctx, kind=kind, action=action)
        details = {"step": seq, "reason": decision.reason}
        record = self._record(ctx, action, resource, status, details)
        self._steps.refused(
            ctx,
            seq,
            kind=kind,
            name=name,
            status=status,
            request=request or {},
            response={"content": content} if content is not None else None,
            decision=str(decision),
            reason=decision.reason,
            then=lambda session: self._audit.append(session, record),
        )

    # -- writing steps (``runtime.steps``) ----------------------------------------------

    def transaction(
        self, ctx: RunContext, *, strict: bool = True
    ) -> AbstractContextManager[Session]:
        """A transaction for ``ctx``'s run that commits its pending call end first."""
        return self._steps.transaction(ctx, strict=strict)

    def commit_pending(self, ctx: RunContext) -> None:
        """The run stops: commit its pending call end, and keep none back from now on."""
        self._steps.commit_pending(ctx)

    def _record(
        self, ctx: RunContext, action: str, resource: str, outcome: str, details: dict[str, Any]
    ) -> AuditRecord:
        return AuditRecord(
            action=action,
            resource=resource,
            outcome=outcome,
            org_id=ctx.org_id,
            actor_user_id=ctx.user_id,
            actor_agent_id=ctx.agent_id,
            details={"run_id": ctx.run_id} | details,
        )


MAX_CALLED_NAME = 199
"""A step's name holds 200 characters on PostgreSQL. A model can answer with any name:
a call to a longer one is clipped (it names no tool then, and is denied and stored as
such). MCP advises tool names of at most 128 characters, OpenAI allows 64."""


def _clipped(name: str) -> str:
    return name[: MAX_CALLED_NAME - 1] + "\N{HORIZONTAL ELLIPSIS}"


def _without_nul(response: ModelResponse) -> ModelResponse:
    """The model's answer and tool calls with every NUL replaced (``meshclaw.text``);
    the same response when there is none (every model call comes through here)."""
    texts = [response.content or ""]
    texts += [t for c in response.tool_calls for t in (c.id, c.name, c.raw_arguments)]
    calls_clean = all(without_nul_in(c.arguments) is c.arguments for c in response.tool_calls)
    if calls_clean and not any(NUL in text for text in texts):
        return response
    calls = tuple(
        replace(
            call,
            id=without_nul(call.id),
            name=without_nul(call.name),
            arguments=without_nul_in(call.arguments),
            raw_arguments=without_nul(call.raw_arguments),
        )
        for call in response.tool_calls
    )
    content = None if response.content is None else without_nul(response.content)
    return replace(response, content=content, tool_calls=calls)
