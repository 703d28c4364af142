"""The agent loop: model -> tool calls (in parallel) -> results -> model, until done.

The runner only talks to the gateway; it owns the conversation and the loop's limits.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from meshclaw.providers.base import Message, ModelRequest
from meshclaw.runtime.context import RunContext
from meshclaw.runtime.gateway import Gateway
from meshclaw.runtime.resume import Resumption


@dataclass(frozen=True, kw_only=True)
class LoopResult:
    output: str | None
    steps: int


class MaxStepsReached(Exception):
    """The model kept calling tools until the spec's max_steps ran out."""


class RunPaused(Exception):
    """A tool call waits for a person's approval; the run continues once it is decided.

    Raised after the whole turn's calls ran (the others are not lost), so resuming
    re-runs only the held ones."""

    def __init__(self, held: list[str]) -> None:
        super().__init__(f"waiting for approval of {len(held)} tool call(s)")
        self.held = held


async def run_agent_loop(
    gateway: Gateway, ctx: RunContext, user_input: str, resumption: Resumption | None = None
) -> LoopResult:
    """Run the loop from the start, or from where ``resumption`` says the run stands."""
    spec = ctx.spec
    state = resumption or Resumption()
    if state.ended:
        return LoopResult(output=state.final_output, steps=state.turns_done)
    tools = await gateway.offered_tools(ctx)
    messages: list[Message] = list(state.messages)
    if not messages:
        messages.append(Message(role="system", content=spec.instructions))
        messages.append(Message(role="user", content=user_input or "Start."))
    elif messages[-1].role == "assistant":
        # The last turn's tool calls: run what is pending, reuse what already finished.
        pending = state.pending
        results = await asyncio.gather(
            *(gateway.invoke_tool(ctx, p.call, seq=p.seq) for p in pending)
        )
        done = state.finished_results | {
            p.call.id: r.content for p, r in zip(pending, results, strict=True)
        }
        if ctx.held_calls:
            raise RunPaused(list(ctx.held_calls))
        for call in messages[-1].tool_calls:
            messages.append(Message(role="tool", content=done[call.id], tool_call_id=call.id))
    for turn in range(state.turns_done, spec.budget.max_steps):
        request = ModelRequest(
            model=spec.model.model,
            messages=tuple(messages),
            tools=tools,
            parameters=dict(spec.model.parameters),
        )
        response = await gateway.invoke_model(ctx, request)
        messages.append(response.as_message())
        if not response.tool_calls:
            return LoopResult(output=response.content, steps=turn + 1)
        results = await asyncio.gather(*(gateway.invoke_tool(ctx, c) for c in response.tool_calls))
        if ctx.held_calls:
            raise RunPaused(list(ctx.held_calls))
        for call, result in zip(response.tool_calls, results, strict=True):
            messages.append(Message(role="tool", content=result.content, tool_call_id=call.id))
    raise MaxStepsReached(f"the model was still calling tools after {spec.budget.max_steps} turns")
