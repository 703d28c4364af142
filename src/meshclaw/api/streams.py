"""Live streams over server-sent events: ``GET /v1/runs/{run_id}/events``.

A run's steps and status changes as they happen, until it finishes:

* ``status``: the run's status (sent first, then on every change), with its totals;
* ``step``: a step (the body of ``GET /v1/runs/{id}/steps``), when it appears and again
  whenever its status changes (a tool call ``running`` -> ``ok``, a held call
  ``waiting_approval`` -> ``ok``);
* ``end``: the run finished (``succeeded``, ``failed``, ``cancelled``) *and* its outcomes
  are recorded (``outcomes_settled_at``, with ``outcomes_error`` if that failed), so the
  run's outcomes can be read now; the stream closes. The finished status itself comes
  first as a ``status`` event, a moment earlier.

Every event's ``id`` is a resume point: the highest step number up to which every step
has reached its final state. A client that reconnects with ``Last-Event-ID`` (browsers do
it by themselves) or ``?after=N`` gets the steps after it again; nothing is lost, a step
may come twice. The stream is authorised like ``GET /v1/runs/{id}`` (a run the caller may
not read does not exist for them: 404), and re-checked on every poll. The store is polled
(DB work in a worker thread), so this works the same with any number of API replicas and
workers; a long-lived stream ends after ``MAX_STREAM_SECONDS`` and the browser reconnects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from time import monotonic
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from meshclaw.accounts.service import Caller
from meshclaw.api.deps import Authed, PlatformDep
from meshclaw.api.schemas import StepOut
from meshclaw.platform import Platform
from meshclaw.runtime.service import RunInfo, StepInfo

router = APIRouter(tags=["runs"])

POLL_SECONDS = 0.4
MAX_STREAM_SECONDS = 600.0
RETRY_MS = 2_000
"""How long a browser waits before it reconnects a stream that ended early."""
_FINAL_STEP = frozenset({"ok", "error", "denied", "cancelled", "lost"})


def readable_run(run_id: str, platform: PlatformDep, caller: Authed) -> RunInfo:
    """The run, if the caller may read it; checked before the stream starts (404 else)."""
    return platform.runs.get(caller, run_id)


@dataclass
class RunFollower:
    """What one stream has told its client so far; ``poll`` returns what is new."""

    platform: Platform
    caller: Caller
    run_id: str
    cursor: int = 0
    """Every step up to this number has been sent in its final state."""
    status: str | None = None
    step_count: int = -1
    cost: str | None = None
    sent: dict[int, str] = field(default_factory=dict)
    """Steps sent (after the cursor) and the status they were sent with."""

    def poll(self) -> tuple[list[ServerSentEvent], bool]:
        """New events, and whether the run has finished (runs in a worker thread)."""
        run = self.platform.runs.get(self.caller, self.run_id)  # still allowed to read it?
        events: list[ServerSentEvent] = []
        changed = (run.status, run.step_count, str(run.cost_usd)) != (
            self.status,
            self.step_count,
            self.cost,
        )
        open_steps = any(s not in _FINAL_STEP for s in self.sent.values())
        # Once settled, a last look: recording the outcomes may have added verification
        # reads (steps after the run's end).
        if changed or (open_steps and run.status == "running") or run.settled:
            steps = self.platform.runs.steps(self.caller, self.run_id, self.cursor)
            events.extend(self._step_events(steps))
        if run.status != self.status:
            events.append(self._event("status", _status(run)))
        self.status, self.step_count, self.cost = run.status, run.step_count, str(run.cost_usd)
        if run.settled:  # nothing about the run changes any more
            events.append(self._event("end", _status(run) | {"output": run.output}))
        return events, run.settled

    def _step_events(self, steps: list[StepInfo]) -> list[ServerSentEvent]:
        """Steps new or changed since last sent, in order, each with its resume point."""
        events = []
        advancing = True
        for step in steps:
            changed = self.sent.get(step.seq) != step.status
            self.sent[step.seq] = step.status
            if advancing and step.status in _FINAL_STEP:
                self.cursor = step.seq  # this and every step before it are final
                del self.sent[step.seq]
            else:
                advancing = False
            if changed:
                data = StepOut.model_validate(step).model_dump(mode="json")
                events.append(self._event("step", data))
        return events

    def _event(self, name: str, data: dict[str, Any]) -> ServerSentEvent:
        return ServerSentEvent(event=name, data=data, id=str(self.cursor), retry=RETRY_MS)


def _status(run: RunInfo) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.status,
        "step_count": run.step_count,
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
        "cost_usd": str(run.cost_usd),
        "error": run.error,
        "outcomes_settled_at": run.outcomes_settled_at and run.outcomes_settled_at.isoformat(),
        "outcomes_error": run.outcomes_error,
    }


def _resume_point(after: int | None, last_event_id: str | None) -> int:
    """``Last-Event-ID`` (a reconnecting browser) wins over ``after``; junk means 0."""
    if last_event_id is not None and last_event_id.isascii() and last_event_id.strip().isdigit():
        return int(last_event_id.strip())
    return after or 0


@router.get(
    "/v1/runs/{run_id}/events",
    response_class=EventSourceResponse,
    responses={404: {"description": "No such run, or one the caller may not read."}},
)
async def run_events(
    request: Request,
    run: Annotated[RunInfo, Depends(readable_run)],
    platform: PlatformDep,
    caller: Authed,
    after: Annotated[int | None, Query(ge=0, description="Resume after this step.")] = None,
    last_event_id: Annotated[str | None, Header(max_length=40)] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events of a run: ``status``, ``step`` and a final ``end`` once the
    run has finished and its outcomes are recorded."""
    follower = RunFollower(
        platform=platform,
        caller=caller,
        run_id=run.id,
        cursor=_resume_point(after, last_event_id),
    )
    deadline = monotonic() + MAX_STREAM_SECONDS
    while True:
        if await request.is_disconnected():
            return
        events, finished = await anyio.to_thread.run_sync(follower.poll)
        for event in events:
            yield event
        if finished or monotonic() > deadline:
            return
        await anyio.sleep(POLL_SECONDS)
