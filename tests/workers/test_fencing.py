"""A worker whose run was taken over writes nothing more for it: each call is metered,
audited and ended once, by the worker that holds the lease."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from meshclaw.connectors.base import ToolContext, ToolDefinition, ToolResult
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.store.models import AuditEvent, RunStep, UsageRecord
from meshclaw.workers.leases import Leases
from tests.conftest import FAST_RETRY, World, agent_yaml
from tests.workers.test_leases import expire, run_row

Start = Callable[[dict[str, Any]], ScriptedServer]

TWO_CALLS_THEN_DONE = {
    "turns": [
        {
            "reply": {
                "tool_calls": [
                    {"name": "counter.bump", "arguments": {"n": 1}},
                    {"name": "counter.bump", "arguments": {"n": 2}},
                ]
            }
        },
        {"reply": {"content": "done"}},
    ]
}


class GatedConnector:
    """The first ``held`` calls (the slow worker's) wait until ``release`` is set; later
    calls (its successor's) answer at once. Side effects are counted by idempotency key."""

    name = "counter"

    def __init__(self, held: int) -> None:
        self.held = held
        self.keys: list[str] = []
        self.waiting = 0
        self.all_waiting = asyncio.Event()
        self.release = asyncio.Event()

    async def list_tools(self) -> list[ToolDefinition]:
        return [ToolDefinition(name="bump", description="Bump.", action="write")]

    async def call_tool(self, tool: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        self.keys.append(ctx.idempotency_key)
        if len(self.keys) <= self.held:
            self.waiting += 1
            if self.waiting == self.held:
                self.all_waiting.set()
            await self.release.wait()
            return ToolResult(content=f"late {arguments['n']}")
        return ToolResult(content=f"bumped {arguments['n']}")

    async def aclose(self) -> None:
        return None


def writes_per_step(world: World, run_id: str) -> dict[str, Any]:
    """Each step's status and response, and how many usage and audit records name it."""
    with world.platform.db.session() as session:
        steps = session.execute(
            select(RunStep.id, RunStep.seq, RunStep.kind, RunStep.status, RunStep.response)
            .where(RunStep.run_id == run_id)
            .order_by(RunStep.seq)
        ).all()
        usage = Counter(
            session.scalars(select(UsageRecord.step_id).where(UsageRecord.run_id == run_id))
        )
        audited = Counter(
            (e.action, e.details["step"])
            for e in session.scalars(select(AuditEvent))
            if e.details.get("run_id") == run_id and "step" in e.details
        )
    return {
        "steps": [(s.seq, s.kind, s.status, (s.response or {}).get("content")) for s in steps],
        "usage": [usage[s.id] for s in steps],
        "audit": sorted(audited.items()),
    }


def test_a_superseded_worker_whose_tool_calls_finish_late_writes_nothing_for_them(
    database_url: str, scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted(TWO_CALLS_THEN_DONE)
    world = make_world(server.base_url, database_url)
    world.save_agent(agent_yaml(tools=(("counter.bump", "write"),)))
    run_id = world.platform.runs.create(world.alice, "helper", "go").id
    leases = Leases(world.platform.db, ttl_seconds=30)
    counter = GatedConnector(held=2)
    registry = ConnectorRegistry([counter])

    async def race() -> tuple[str, str]:
        first = leases.claim(run_id, "worker-a")
        assert first is not None
        slow = world.platform.build_gateway(retry=FAST_RETRY, connectors=registry)
        fast = world.platform.build_gateway(retry=FAST_RETRY, connectors=registry)
        try:
            task = asyncio.create_task(world.platform.executor(slow).execute(run_id, lease=first))
            # Both of worker A's tool calls are in flight; its heartbeat has not run yet.
            await asyncio.wait_for(counter.all_waiting.wait(), timeout=10)
            expire(world, run_id)  # A looks dead: its lease ran out
            second = leases.claim(run_id, "worker-b")
            assert second is not None
            # B continues the run from its steps: both calls again (same keys), then done.
            b_end = await world.platform.executor(fast).execute(run_id, lease=second)
            counter.release.set()  # A's calls come back late
            a_end = await asyncio.wait_for(task, timeout=10)
            return a_end.status, b_end.status
        finally:
            await slow.aclose()
            await fast.aclose()

    assert asyncio.run(race()) == ("lost", "succeeded")
    assert len(counter.keys) == 4 and len(set(counter.keys)) == 2  # re-made with A's keys
    assert len(server.requests) == 2  # A never made another model call
    written = writes_per_step(world, run_id)
    assert written["steps"] == [
        (1, "model", "ok", None),
        (2, "tool", "ok", "bumped 1"),
        (3, "tool", "ok", "bumped 2"),
        (4, "model", "ok", "done"),
    ]
    assert written["usage"] == [1, 1, 1, 1]  # each call metered once
    assert written["audit"] == [
        (("model.invoke", 1), 1),
        (("model.invoke", 4), 1),
        (("tool.write", 2), 1),
        (("tool.write", 3), 1),
    ]
    row = run_row(world, run_id)
    assert (row.status, row.output, row.lease_owner) == ("succeeded", "done", "worker-b")
