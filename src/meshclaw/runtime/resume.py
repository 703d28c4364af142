"""Rebuild a run's conversation from its persisted steps, so a run can continue.

A run continues after its worker died, or after it paused for a human approval. Every
model step stores the messages added since the previous turn (``request.new_messages``)
and the assistant's reply; every tool step stores its call id and the content the model
saw. From those, this module rebuilds the conversation and says what is left to do:

- the last model turn finished without tool calls: the run had in fact ended;
- it finished with tool calls: the ones without a finished tool step are *pending*; a
  started-but-unfinished tool step keeps its step number, so the call is retried with the
  same idempotency key and a connector can tell it already happened;
- a model step never finished: it is marked ``lost`` and the call is made again (it was
  never metered, so it is metered once).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from meshclaw.providers.base import Message, ToolCall
from meshclaw.store.db import Database
from meshclaw.store.models import RunStep

FINISHED_TOOL = ("ok", "error", "denied")


@dataclass(frozen=True, kw_only=True)
class PendingCall:
    call: ToolCall
    seq: int | None
    """The step number of a started-but-unfinished attempt, reused for idempotency."""


@dataclass(kw_only=True)
class Resumption:
    messages: list[Message] = field(default_factory=list)
    turns_done: int = 0
    """Model turns that finished (they count against ``max_steps``)."""
    pending: list[PendingCall] = field(default_factory=list)
    """Tool calls of the last turn still to run, in the model's order."""
    finished_results: dict[str, str] = field(default_factory=dict)
    """tool_call_id -> content, for the last turn's calls that already ran."""
    final_output: str | None = None
    ended: bool = False
    """The last turn answered without tools: nothing is left to do."""
    untrusted_content_seen: bool = False

    @property
    def started(self) -> bool:
        return bool(self.messages)


def _message(data: dict[str, Any]) -> Message:
    calls = tuple(
        ToolCall(id=c["id"], name=c["name"], arguments=c.get("arguments") or {})
        for c in data.get("tool_calls") or []
    )
    return Message(
        role=data["role"],
        content=data.get("content"),
        tool_calls=calls,
        tool_call_id=data.get("tool_call_id"),
    )


def load_resumption(db: Database, run_id: str) -> Resumption:
    """Read the run's steps and work out where it stands. Marks lost model steps."""
    with db.session() as session:
        return read_resumption(session, run_id)


def read_resumption(session: Session, run_id: str) -> Resumption:
    """``load_resumption`` in the caller's transaction."""
    steps = session.scalars(
        select(RunStep).where(RunStep.run_id == run_id).order_by(RunStep.seq)
    ).all()
    state = Resumption()
    last_calls: tuple[ToolCall, ...] = ()
    tool_steps: dict[str, RunStep] = {}
    for step in steps:
        if step.kind == "tool":
            call_id = (step.request or {}).get("tool_call_id")
            if call_id:
                tool_steps[call_id] = step
            if (step.response or {}).get("untrusted"):
                state.untrusted_content_seen = True
            continue
        if step.status == "denied" or not step.request:
            continue  # refused before it was made: no messages were sent
        state.messages.extend(_message(m) for m in step.request.get("new_messages", []))
        if step.status != "ok" or step.response is None:
            session.execute(update(RunStep).where(RunStep.id == step.id).values(status="lost"))
            continue
        reply = step.response
        last_calls = tuple(
            ToolCall(id=c["id"], name=c["name"], arguments=c.get("arguments") or {})
            for c in reply.get("tool_calls") or []
        )
        state.messages.append(
            Message(role="assistant", content=reply.get("content"), tool_calls=last_calls)
        )
        state.turns_done += 1
        state.ended = not last_calls
        state.final_output = reply.get("content")
        tool_steps = {}
    if not state.messages or state.messages[-1].role != "assistant":
        state.ended = False  # the last model call is to be made (again)
        return state
    for call in last_calls:
        attempt = tool_steps.get(call.id)
        if attempt is not None and attempt.status in FINISHED_TOOL:
            content = (attempt.response or {}).get("content") or attempt.error or ""
            state.finished_results[call.id] = content
        else:
            seq = attempt.seq if attempt is not None else None
            state.pending.append(PendingCall(call=call, seq=seq))
    return state
