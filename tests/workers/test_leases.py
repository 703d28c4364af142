"""Run leases: one worker wins a claim, an expired lease is taken over and the run goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from meshclaw.clock import utcnow
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.providers.scripted import ScriptedServer
from meshclaw.store.models import Run
from meshclaw.workers.leases import Leases
from tests.conftest import FAST_RETRY, World, agent_yaml
from tests.runtime.test_resume import CountingConnector, first_turn, planned, steps

Start = Callable[[dict[str, Any]], ScriptedServer]

TWO_TURNS = {
    "turns": [
        {"reply": {"tool_calls": [{"name": "counter.bump", "arguments": {}}]}},
        {"reply": {"content": "done"}},
    ]
}


def queued_run(world: World) -> str:
    world.save_agent(agent_yaml(tools=(("counter.bump", "write"),)))
    return world.platform.runs.create(world.alice, "helper", "go").id


def expire(world: World, run_id: str) -> None:
    with world.platform.db.session() as session:
        session.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def run_row(world: World, run_id: str) -> Run:
    with world.platform.db.session() as session:
        row = session.scalar(select(Run).where(Run.id == run_id))
        assert row is not None
        return row


def test_one_worker_wins_a_claim_and_an_expired_lease_is_taken_over(
    database_url: str, make_world: Callable[..., World]
) -> None:
    world = make_world(database_url=database_url)
    run_id = queued_run(world)
    leases = Leases(world.platform.db, ttl_seconds=30)

    first = leases.claim(run_id, "worker-a")
    assert first is not None and first.owner == "worker-a"
    assert leases.claim(run_id, "worker-b") is None  # held and fresh
    assert not world.platform.runs.claim(run_id)  # the in-process claim agrees
    row = run_row(world, run_id)
    assert (row.status, row.lease_owner, row.attempts) == ("running", "worker-a", 1)
    assert leases.renew(run_id, "worker-a")

    expire(world, run_id)  # worker-a stopped heartbeating
    second = leases.claim(run_id, "worker-b")
    assert second is not None
    assert not leases.renew(run_id, "worker-a")  # worker-a learns it lost the run
    assert run_row(world, run_id).attempts == 2
    assert second.release()
    assert run_row(world, run_id).status == "queued"


def test_a_run_whose_worker_died_mid_tool_call_is_continued_by_another(
    database_url: str, scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted(TWO_TURNS)
    world = make_world(server.base_url, database_url)
    run_id = queued_run(world)
    leases = Leases(world.platform.db, ttl_seconds=30)
    counter = CountingConnector()
    registry = ConnectorRegistry([counter])

    async def crash_then_take_over() -> str:
        assert leases.claim(run_id, "worker-a") is not None
        gateway = world.platform.build_gateway(retry=FAST_RETRY, connectors=registry)
        ctx = world.platform.executor(gateway)._context(run_id)
        tools = await gateway.offered_tools(ctx)
        request = first_turn(world, ctx)
        reply = await gateway.invoke_model(
            ctx, type(request)(**{**request.__dict__, "tools": tools})
        )
        (call,) = reply.tool_calls
        seq = ctx.take_step_number()
        gateway._start_step(
            ctx, seq, "tool", call.name, {"tool_call_id": call.id},
            planned(gateway, ctx, "tool"), f"tool:{call.name}",
        )  # fmt: skip
        counter.keys.append(ctx.idempotency_key(seq))  # the side effect happened; then kill -9
        await gateway.aclose()

        expire(world, run_id)
        lease = leases.claim(run_id, "worker-b")
        assert lease is not None
        second = world.platform.build_gateway(retry=FAST_RETRY, connectors=registry)
        try:
            end = await world.platform.executor(second).execute(run_id, lease=lease)
        finally:
            await second.aclose()
        return end.status

    assert asyncio.run(crash_then_take_over()) == "succeeded"
    assert len(set(counter.keys)) == 1  # retried with the same idempotency key
    assert steps(world, run_id) == [(1, "model", "ok"), (2, "tool", "ok"), (3, "model", "ok")]
    assert len(server.requests) == 2
    assert run_row(world, run_id).status == "succeeded"


class LostLease:
    owner = "worker-a"
    attempt = 1  # the first claim

    def __init__(self) -> None:
        self.released = False

    async def keep(self) -> None:
        return None  # lost at once

    def release(self) -> bool:
        self.released = True
        return True


def test_a_worker_that_lost_its_lease_stops_and_writes_no_end(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted({"turns": [{"reply": {"content": "slow"}, "delay_ms": 2000}]})
    world = make_world(server.base_url)
    run_id = queued_run(world)
    leases = Leases(world.platform.db)
    assert leases.claim(run_id, "worker-a") is not None
    with world.platform.db.session() as session:  # another worker took it over
        session.execute(update(Run).where(Run.id == run_id).values(lease_owner="worker-b"))

    async def execute() -> str:
        gateway = world.platform.build_gateway(retry=FAST_RETRY)
        try:
            end = await world.platform.executor(gateway).execute(run_id, lease=LostLease())
        finally:
            await gateway.aclose()
        return end.status

    assert asyncio.run(execute()) == "lost"
    row = run_row(world, run_id)
    assert (row.status, row.lease_owner, row.ended_at) == ("running", "worker-b", None)


def test_a_shutdown_hands_the_run_back_instead_of_cancelling_it(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    server = scripted({"turns": [{"reply": {"content": "slow"}, "delay_ms": 5000}]})
    world = make_world(server.base_url)
    run_id = queued_run(world)
    leases = Leases(world.platform.db)
    lease = leases.claim(run_id, "worker-a")
    assert lease is not None

    async def shut_down_mid_call() -> None:
        gateway = world.platform.build_gateway(retry=FAST_RETRY)
        task = asyncio.create_task(world.platform.executor(gateway).execute(run_id, lease=lease))
        deadline = asyncio.get_running_loop().time() + 5
        while not server.requests and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await gateway.aclose()

    asyncio.run(shut_down_mid_call())
    row = run_row(world, run_id)
    assert (row.status, row.lease_owner, row.error) == ("queued", None, None)
    assert leases.claim(run_id, "worker-b") is not None  # at once, no expiry to wait for


def test_the_sweep_requeues_expired_runs_resends_stale_ones_and_gives_up_on_crash_loops(
    database_url: str, make_world: Callable[..., World]
) -> None:
    world = make_world(database_url=database_url)
    leases = Leases(world.platform.db, ttl_seconds=30, max_attempts=2)
    crashed = queued_run(world)
    never_sent = world.platform.runs.create(world.alice, "helper", "x").id
    looping = world.platform.runs.create(world.alice, "helper", "y").id
    fresh = world.platform.runs.create(world.alice, "helper", "z").id
    leases.mark_sent([fresh])
    assert leases.claim(crashed, "worker-a") is not None
    expire(world, crashed)
    for owner in ("worker-a", "worker-b"):
        assert leases.claim(looping, owner) is not None
        expire(world, looping)
    with world.platform.db.session() as session:  # created long ago, never sent to a broker
        session.execute(
            update(Run).where(Run.id == never_sent).values(created_at=utcnow() - timedelta(hours=1))
        )

    result = leases.sweep()
    assert result.requeued == [crashed]
    assert result.abandoned == [looping]
    assert set(result.redeliver) == {crashed, never_sent}
    assert run_row(world, looping).status == "failed"
    assert "abandoned" in (run_row(world, looping).error or "")
    assert leases.sweep().redeliver == []  # just sent: not sent again at once
    assert leases.claim(crashed, "worker-c") is not None


class HeldLease:
    """A lease whose heartbeat never notices anything (the worker is slow, not dead)."""

    owner = "worker-a"
    attempt = 1  # the first claim

    async def keep(self) -> None:
        await asyncio.sleep(3600)

    def release(self) -> bool:
        return True


def test_a_superseded_worker_does_not_meter_the_model_call_its_successor_makes_again(
    scripted: Start, make_world: Callable[..., World]
) -> None:
    from meshclaw.runtime.resume import load_resumption
    from meshclaw.store.models import UsageRecord

    server = scripted({"turns": [{"reply": {"content": "late"}, "delay_ms": 1500}]})
    world = make_world(server.base_url)
    run_id = queued_run(world)
    assert Leases(world.platform.db).claim(run_id, "worker-a") is not None

    async def slow_worker_superseded() -> str:
        gateway = world.platform.build_gateway(retry=FAST_RETRY)
        task = asyncio.create_task(
            world.platform.executor(gateway).execute(run_id, lease=HeldLease())
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not server.requests and loop.time() < deadline:
            await asyncio.sleep(0.02)
        # Worker B takes over: its resumption marks the unfinished model call lost.
        with world.platform.db.session() as session:
            session.execute(update(Run).where(Run.id == run_id).values(lease_owner="worker-b"))
        await asyncio.to_thread(load_resumption, world.platform.db, run_id)
        end = await task
        await gateway.aclose()
        return end.status

    assert asyncio.run(slow_worker_superseded()) == "lost"
    assert steps(world, run_id) == [(1, "model", "lost")]
    with world.platform.db.session() as session:
        assert session.scalars(select(UsageRecord).where(UsageRecord.run_id == run_id)).all() == []
    assert run_row(world, run_id).status == "running"  # worker-b's to finish
