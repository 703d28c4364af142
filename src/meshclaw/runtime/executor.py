"""Executes one claimed run: builds its context, runs the loop, records how it ended.

Cancellation is cooperative across processes: ``RunService.cancel`` sets a flag in the
store, and a watcher here polls it and cancels the loop task, which interrupts any
model or tool call in flight. The wall-clock limit comes from ``spec.budget``.

After the run's end is written, its outcomes are recorded (``on_finish``: verification
reads the connectors, so it cannot share the end's transaction), and then the run is
marked *settled* (``runs.outcomes_settled_at``, with ``outcomes_error`` if recording
failed): a client that sees a run settled reads all of its outcomes. A run whose process
died in between stays unsettled until ``settle_ended`` (the scheduled sweep) records them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol, cast

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.exc import IntegrityError

from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.clock import utcnow
from meshclaw.connectors.base import ToolResult
from meshclaw.errors import ConflictError, MeshClawError, NotFoundError, PolicyDenied
from meshclaw.metering.budget import RunTotals
from meshclaw.providers.base import ToolCall
from meshclaw.runtime.context import RunContext
from meshclaw.runtime.gateway import Gateway
from meshclaw.runtime.resume import Resumption, read_resumption
from meshclaw.runtime.runner import LoopResult, MaxStepsReached, RunPaused, run_agent_loop
from meshclaw.runtime.steps import STEPS, USAGE, Fence
from meshclaw.spec.loader import parse_stored_spec
from meshclaw.store.db import Database
from meshclaw.store.models import AgentVersion, Run
from meshclaw.text import without_nul

log = logging.getLogger(__name__)

# Core statements built once: a run's start and end, and the cancel flag polled meanwhile.
_RUNS = cast(Table, Run.__table__)
_VERSIONS = cast(Table, AgentVersion.__table__)
_RUN_ROW = (
    select(_RUNS, _VERSIONS.c.spec_yaml)
    .join_from(_RUNS, _VERSIONS, _VERSIONS.c.id == _RUNS.c.agent_version_id, isouter=True)
    .where(_RUNS.c.id == bindparam("b_run"))
)
_PROGRESS = select(
    select(func.max(STEPS.c.seq)).where(STEPS.c.run_id == bindparam("b_run")).scalar_subquery(),
    select(func.coalesce(func.sum(USAGE.c.input_tokens + USAGE.c.output_tokens), 0))
    .where(USAGE.c.run_id == bindparam("b_run"))
    .scalar_subquery(),
    select(func.coalesce(func.sum(USAGE.c.cost_nano_usd), 0))
    .where(USAGE.c.run_id == bindparam("b_run"))
    .scalar_subquery(),
)
_CANCEL_REQUESTED = select(_RUNS.c.cancel_requested).where(_RUNS.c.id == bindparam("b_run"))
_END_RUN = (
    _RUNS.update()
    .where(_RUNS.c.id == bindparam("b_run"))
    # The step count is written once per execution, not bumped on every call.
    .values(
        step_count=select(func.count(STEPS.c.id))
        .where(STEPS.c.run_id == bindparam("b_run"))
        .scalar_subquery()
    )
)
_END_LEASED_RUN = _END_RUN.where(
    _RUNS.c.lease_owner == bindparam("b_owner"),
    _RUNS.c.attempts == bindparam("b_attempt"),
    _RUNS.c.status == "running",
)
# Once only: whoever settles an ended run first (its executor, or the sweep) says how.
_SETTLE = (
    _RUNS.update()
    .where(
        _RUNS.c.id == bindparam("b_run"),
        _RUNS.c.ended_at.is_not(None),
        _RUNS.c.outcomes_settled_at.is_(None),
    )
    .values(outcomes_settled_at=bindparam("b_at"), outcomes_error=bindparam("b_error"))
)
_ERROR_CHARS = 2000

ToolReader = Callable[[str, dict[str, Any]], Awaitable[ToolResult]]
"""Call a tool in an ended run's context, through the gateway (authorised, metered, audited):
how outcome verification reads the connector's real state."""


@dataclass(frozen=True, kw_only=True)
class RunEnd:
    status: str
    output: str | None = None
    error: str | None = None


class RunLease(Protocol):
    """A scale-out worker's hold on a run (``workers.leases.Lease``)."""

    owner: str
    attempt: int
    """Which claim of the run this is (``runs.attempts`` after it): with ``owner``, the
    fence every write of this execution is made under (``runtime.steps.Fence``)."""

    async def keep(self) -> None:
        """Heartbeat until cancelled; return if the lease was lost to another worker."""
        ...

    def release(self) -> bool:
        """Hand the unfinished run back so another worker continues it."""
        ...


class RunExecutor:
    def __init__(
        self,
        *,
        db: Database,
        gateway: Gateway,
        audit: AuditSink,
        cancel_poll_seconds: float = 0.2,
        on_finish: Callable[[str, ToolReader], Awaitable[object]] | None = None,
    ) -> None:
        self._db = db
        self._gateway = gateway
        self._audit = audit
        self._cancel_poll = cancel_poll_seconds
        self._on_finish = on_finish
        """Called once a run has ended with its id and a ``ToolReader`` for the run (outcomes
        are recorded and verified there)."""

    async def execute(self, run_id: str, *, lease: RunLease | None = None) -> RunEnd:
        """Run a claimed (``running``) run to its end and persist how it ended.

        With a ``lease`` the run's end is written only while the lease is still ours; a
        lost lease stops the run here (another worker continues it), and a shutdown hands
        it back instead of recording it as cancelled.
        """
        ctx, user_input, resumption = self._prepare(run_id)
        if lease is not None:
            ctx.fence = Fence(owner=lease.owner, attempt=lease.attempt)
        self._gateway.telemetry.start_run(ctx, self._gateway.provider_kind(ctx))
        ctx.untrusted_content_seen = resumption.untrusted_content_seen
        # Each call's end is committed with the run's next write (``runtime.steps``); every
        # way out of this method below commits the last one.
        ctx.journal.write_behind = True
        loop_task = asyncio.create_task(run_agent_loop(self._gateway, ctx, user_input, resumption))
        watch_task = asyncio.create_task(self._watch_cancel(run_id))
        lease_task = asyncio.create_task(lease.keep()) if lease is not None else None
        waited = {loop_task, watch_task} | ({lease_task} if lease_task is not None else set())
        try:
            done, _ = await asyncio.wait(
                waited,
                timeout=ctx.spec.budget.timeout_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if loop_task in done:
                end = self._ending(loop_task)
            else:
                loop_task.cancel()
                await asyncio.gather(loop_task, return_exceptions=True)
                if lease_task is not None and lease_task in done:
                    self._gateway.commit_pending(ctx)
                    return RunEnd(status="lost", error="lease lost to another worker")
                if watch_task in done:
                    end = RunEnd(status="cancelled", error="cancelled on request")
                else:
                    limit = ctx.spec.budget.timeout_seconds
                    end = RunEnd(status="failed", error=f"timed out after {limit:g} s")
        except asyncio.CancelledError:
            # The worker itself is shutting down: leave a truthful record, then propagate.
            loop_task.cancel()
            await asyncio.gather(loop_task, return_exceptions=True)
            if lease is not None:
                self._gateway.commit_pending(ctx)
                lease.release()  # another worker continues from the persisted steps
            else:
                self._finish(ctx, RunEnd(status="cancelled", error="worker shut down"))
            raise
        finally:
            watch_task.cancel()
            if lease_task is not None:
                lease_task.cancel()
        if not self._finish(ctx, end):
            return RunEnd(status="lost", error="lease lost to another worker")
        if end.status != "waiting_approval":  # a paused run has not ended
            gateway = self._gateway

            async def read(tool: str, arguments: dict[str, Any]) -> ToolResult:
                call = ToolCall(id=f"verify-{ctx.run_id}-{tool}", name=tool, arguments=arguments)
                return await gateway.invoke_tool(ctx, call)

            # A worker shut down here (CancelledError), or a store that failed even to
            # say so, leaves the run unsettled: the sweep records its outcomes later.
            try:
                await self._settle(ctx.run_id, read)
            except Exception:  # the run's end stands; it is what the caller gets
                log.exception("run %s: settling its outcomes failed", ctx.run_id)
        return end

    async def settle_ended(self, run_id: str) -> bool:
        """Record the outcomes of an ended run left unsettled, then mark it settled (the
        sweep, ``Platform.settle_outcomes``). Verification reads go through
        ``reader_for_ended_run`` (read tools only, as steps ``verify-<n>`` of the run).
        Recording skips outcomes already stored, so a run settled half-way before its
        process died is finished, not doubled. False if it was not settled here."""
        try:
            read = await self.reader_for_ended_run(run_id, "verify")
        except MeshClawError as exc:  # no agent version, a spec that no longer loads
            return self._mark_settled(run_id, f"{type(exc).__name__}: {exc}")
        return await self._settle(run_id, read)

    async def _settle(self, run_id: str, read: ToolReader) -> bool:
        """Record the ended run's outcomes (``on_finish``) and mark it settled, also when
        recording failed (with why: a client waiting for the outcomes stops waiting)."""
        error = None
        if self._on_finish is not None:
            try:
                await self._on_finish(run_id, read)
            except IntegrityError:
                # Another recorder stored the same outcome meanwhile (the sweep and a slow
                # executor): that one settles the run.
                log.warning("run %s: its outcomes are being recorded elsewhere", run_id)
                return False
            except Exception as exc:  # the run's record stands; say why there are none
                log.exception("run %s: recording its outcomes failed", run_id)
                error = f"{type(exc).__name__}: {exc}"
        return self._mark_settled(run_id, error)

    def _mark_settled(self, run_id: str, error: str | None) -> bool:
        values = {"b_run": run_id, "b_at": utcnow(), "b_error": error and error[:_ERROR_CHARS]}
        with self._db.session() as session:
            settled = bool(session.connection().execute(_SETTLE, values).rowcount)
        if not settled:
            log.info("run %s: its outcomes were already settled", run_id)
        return settled

    async def reader_for_ended_run(self, run_id: str, label: str) -> ToolReader:
        """A read-only ``ToolReader`` in an ended run's context, for reads after its end
        (outcome durability re-checks).

        The context is the run's own: its agent version's spec, owner, team and org, so a
        read is authorised by the spec's grant, made with the owner's delegated
        credential, metered and audited like the run's calls. Each read is a step of the
        run numbered after its last, with ``tool_call_id`` ``<label>-<n>``; the run's
        status, end and step count do not change. A read the gateway refuses (not
        granted, denied by policy) raises ``PolicyDenied``; a write tool is never called.
        """
        with self._db.session() as session:
            conn = session.connection()
            run = conn.execute(_RUN_ROW, {"b_run": run_id}).one_or_none()
            if run is None or run.spec_yaml is None:
                raise NotFoundError(f"no run {run_id!r} with its agent version")
            if run.ended_at is None:
                raise ConflictError(f"run {run_id} is {run.status}: it has not ended")
            last_seq = conn.execute(_PROGRESS, {"b_run": run_id}).one()[0] or 0
        ctx = RunContext(
            run_id=run.id, org_id=run.org_id, team_id=run.team_id, user_id=run.user_id,
            agent_id=run.agent_id, agent_version=run.agent_version, trigger=run.trigger,
            spec=parse_stored_spec(run.spec_yaml), next_step=last_seq + 1,
            resumed_through=last_seq,
        )  # fmt: skip
        gateway, made = self._gateway, 0

        async def read(tool: str, arguments: dict[str, Any]) -> ToolResult:
            nonlocal made
            connector = tool.split(".", 1)[0]
            grants = [g for g in ctx.spec.tools if g.name.split(".", 1)[0] == connector]
            if tool not in ctx.tool_definitions:
                # Offer this connector's grants only (other connectors need not answer);
                # the copy shares ``tool_definitions``, which the offer fills.
                only = ctx.spec.model_copy(update={"tools": grants})
                await gateway.offered_tools(replace(ctx, spec=only))
            definition = ctx.tool_definitions.get(tool)
            if definition is not None and definition.action != "read":
                raise PolicyDenied(f"{tool} is a {definition.action} tool: re-checks only read")
            made += 1
            calls_before = ctx.totals.tool_calls
            call = ToolCall(id=f"{label}-{made}", name=tool, arguments=arguments)
            result = await gateway.invoke_tool(ctx, call)  # a refusal is a step, audited
            if not result.is_error or ctx.totals.tool_calls > calls_before:
                return result  # made: an error here is the connector's (the caller retries)
            if definition is not None:
                raise PolicyDenied(result.content)
            if not any(g.name in (tool, f"{connector}.*") for g in grants):
                raise PolicyDenied(f"the agent's spec does not grant {tool}")
            raise PolicyDenied(f"{tool} is not offered to this agent (not approved, or denied)")

        return read

    @staticmethod
    def _ending(task: asyncio.Task[LoopResult]) -> RunEnd:
        exc = task.exception()
        if exc is None:
            return RunEnd(status="succeeded", output=task.result().output)
        if isinstance(exc, RunPaused):
            return RunEnd(status="waiting_approval")  # not an end: approvals queue it again
        if isinstance(exc, MeshClawError | MaxStepsReached):
            return RunEnd(status="failed", error=f"{type(exc).__name__}: {exc}")
        log.error("run failed with an internal error", exc_info=exc)
        return RunEnd(status="failed", error=f"internal error: {type(exc).__name__}: {exc}")

    async def _watch_cancel(self, run_id: str) -> None:
        while True:
            await asyncio.sleep(self._cancel_poll)
            with self._db.engine.connect() as conn:
                if conn.execute(_CANCEL_REQUESTED, {"b_run": run_id}).scalar():
                    return

    def _context(self, run_id: str) -> RunContext:
        return self._prepare(run_id)[0]

    def _prepare(self, run_id: str) -> tuple[RunContext, str, Resumption]:
        """The run's context, its input, and where it stands: one read transaction."""
        with self._db.session() as session:
            conn = session.connection()
            run = conn.execute(_RUN_ROW, {"b_run": run_id}).one_or_none()
            if run is None:
                raise NotFoundError(f"no run {run_id!r}")
            if run.spec_yaml is None:
                raise NotFoundError(f"no agent version {run.agent_version_id!r}")
            spec = parse_stored_spec(run.spec_yaml)
            # A resumed run continues numbering and spending where it stopped.
            last_seq, tokens, cost = conn.execute(_PROGRESS, {"b_run": run_id}).one()
            # A run that already has steps (its worker died, or it waited for an approval)
            # continues from them instead of starting over.
            resumption = read_resumption(session, run_id) if last_seq else Resumption()
            ctx = RunContext(
                run_id=run.id,
                org_id=run.org_id,
                team_id=run.team_id,
                user_id=run.user_id,
                agent_id=run.agent_id,
                agent_version=run.agent_version,
                trigger=run.trigger,
                spec=spec,
                totals=RunTotals(tokens=int(tokens), cost_nano_usd=int(cost)),
                next_step=(last_seq or 0) + 1,
                resumed_through=last_seq or 0,
            )
            return ctx, run.input or "", resumption

    def _finish(self, ctx: RunContext, end: RunEnd) -> bool:
        """Record the end; with a lease (``ctx.fence``), only if the lease is still ours.

        The run's last call end (kept back by write-behind) commits in the same
        transaction, also only while the lease is ours (``runtime.steps``), so a successor
        that took the run over is neither overwritten nor metered twice."""
        self._gateway.telemetry.end_run(ctx, end.status, end.error)
        ctx.journal.write_behind = False
        with self._gateway.transaction(ctx, strict=False) as session:
            paused = end.status == "waiting_approval"
            values = {
                "b_run": ctx.run_id,
                "status": end.status,
                # The answer was cleaned as it came in; an error may quote anything.
                "output": end.output,
                "error": None if end.error is None else without_nul(end.error),
                "ended_at": None if paused else utcnow(),
            }
            fence = ctx.fence
            if fence is None:
                result = session.connection().execute(_END_RUN, values)
            else:
                leased = values | {"b_owner": fence.owner, "b_attempt": fence.attempt}
                result = session.connection().execute(_END_LEASED_RUN, leased)
            if not result.rowcount:
                log.warning("run %s: lease lost before its end was recorded", ctx.run_id)
                return False
            self._audit.append(
                session,
                AuditRecord(
                    action="run.finish",
                    resource=f"run:{ctx.run_id}",
                    outcome=end.status,
                    org_id=ctx.org_id,
                    actor_user_id=ctx.user_id,
                    actor_agent_id=ctx.agent_id,
                    details={"error": end.error} if end.error else {},
                ),
            )
        return True
