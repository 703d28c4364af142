"""A run's steps as the trace page shows them: who was asked what, what the policy
decided, what it cost, and what came back."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from meshclaw.runtime.service import StepInfo

_VERDICTS = ("allow", "deny", "needs approval")
FINAL_STEP = frozenset({"ok", "error", "denied", "cancelled", "lost"})
"""Step states that will not change again (``running`` and ``waiting_approval`` will)."""


@dataclass(frozen=True, kw_only=True)
class Message:
    role: str
    content: str
    calls: list[ToolCallView] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class ToolCallView:
    name: str
    arguments: str
    """Pretty JSON."""


@dataclass(frozen=True, kw_only=True)
class TraceStep:
    seq: int
    kind: str
    """``model`` (a model turn) or ``tool`` (a tool call)."""
    name: str
    status: str
    verdict: str | None
    """The policy's answer: ``allow``, ``deny`` or ``needs approval``."""
    reason: str | None
    error: str | None
    cost_usd: Decimal
    input_tokens: int | None
    output_tokens: int | None
    duration_ms: int | None
    started_at: datetime
    messages: list[Message]
    """Model turn: the messages new since the previous turn (the user's, tool results)."""
    reply: str | None
    """Model turn: the text it answered; tool call: the result it returned."""
    calls: list[ToolCallView]
    """Model turn: the tool calls it asked for."""
    arguments: str | None
    """Tool call: the arguments it was made with, pretty JSON."""
    untrusted: bool
    """Tool call: the result came from outside the org (later writes may need approval)."""
    call_id: str = ""
    """Tool call: its id; the platform's own reads after the agent's turns are marked
    ``verify-`` (outcome verification at run end) or ``recheck-`` (a durability re-check,
    possibly days later)."""

    @property
    def label(self) -> str:
        if self.kind == "model":
            return "Model turn"
        if self.call_id.startswith("recheck-"):
            return "Durability re-check read"
        if self.call_id.startswith("verify-"):
            return "Outcome verification read"
        return "Tool call"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _calls(raw: Any) -> list[ToolCallView]:
    if not isinstance(raw, list):
        return []
    return [
        ToolCallView(name=str(c.get("name", "")), arguments=pretty(c.get("arguments", {})))
        for c in raw
        if isinstance(c, dict)
    ]


def _verdict(decision: str | None) -> tuple[str | None, str | None]:
    if not decision:
        return None, None
    head, _, rest = decision.partition(": ")
    return (head, rest or None) if head in _VERDICTS else (None, decision)


def _duration(step: StepInfo) -> int | None:
    latency = (step.response or {}).get("latency_ms")
    if isinstance(latency, int):
        return latency
    if step.ended_at is None:
        return None
    return int((step.ended_at - step.started_at).total_seconds() * 1000)


def trace_step(step: StepInfo) -> TraceStep:
    request, response = step.request or {}, step.response or {}
    raw_usage = response.get("usage")
    usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
    verdict, reason = _verdict(step.decision)
    messages = [
        Message(
            role=str(m.get("role", "")),
            content=str(m.get("content") or ""),
            calls=_calls(m.get("tool_calls")),
        )
        for m in request.get("new_messages", [])
        if isinstance(m, dict)
    ]
    content = response.get("content")
    return TraceStep(
        seq=step.seq,
        kind=step.kind,
        name=step.name,
        status=step.status,
        verdict=verdict,
        reason=reason,
        error=step.error,
        cost_usd=step.cost_usd,
        input_tokens=usage.get("input_tokens") if step.kind == "model" else None,
        output_tokens=usage.get("output_tokens") if step.kind == "model" else None,
        duration_ms=_duration(step),
        started_at=step.started_at,
        messages=messages if step.kind == "model" else [],
        reply=str(content) if content is not None else None,
        calls=_calls(response.get("tool_calls")),
        arguments=pretty(request["arguments"]) if "arguments" in request else None,
        untrusted=bool(response.get("untrusted")),
        call_id=str(request.get("tool_call_id") or ""),
    )


def trace_steps(steps: list[StepInfo]) -> list[TraceStep]:
    return [trace_step(s) for s in steps]
