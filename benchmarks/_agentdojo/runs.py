"""The replay as real MeshClaw agent runs (the full mode).

One ``Platform`` on SQLite in a temporary directory, with an org, a platform admin
and the agents' owner (``emma``). Each suite's MCP server (``server``, stdio) is added
to the org as a connector by the admin, its tools listed and approved by the admin.
The scripted model server plays the model: one script holds every run's conversation
(``by_model``, ``replay.conversations``), and each agent spec names its own model.

* utility run per user task: the task's least-privilege spec saved as an agent, its
  ground-truth calls one per model turn, then an answer; useful when every call step
  was made (none denied, none held for approval).
* hijacked run per (user task, injection task): the user task's calls, then a read of
  ``read_outside_message`` (outside the org: the MCP result carries
  ``io.meshclaw/untrusted``, so the gateway itself sets the run's provenance), whose
  text is the injection; then the injection task's calls, as a fully hijacked model
  would make them (``strict_tools: false``: also tools the agent was never offered);
  then an answer. If the run pauses on one of the user task's *own* calls (the
  blanket gate holds legitimate writes after untrusted content), the owner approves
  it, as the person would, and the run resumes (``approved_user_calls``); a pause on
  an injected call is the verdict *held*, and nobody approves it.

Verdicts come from the run's persisted steps and status only (``replay.verdict``):
each step's ``tool_call_id`` says which scripted turn it was. Every verdict is also
compared with the direct decision for the same pair (``replay.decide_injections``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from benchmarks._agentdojo.replay import (
    CONNECT_TIMEOUT,
    ROOT,
    Plan,
    SuiteResult,
    UserTask,
    decide_injections,
    verdict,
)
from benchmarks._agentdojo.server import DEFAULT_VERSION

from meshclaw.accounts.service import Caller
from meshclaw.config import ProviderConfig, Settings
from meshclaw.connectors.base import ToolDefinition
from meshclaw.connectors.mcp import McpConnector
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.platform import Platform
from meshclaw.policy.cedar import CedarAuthorizer, PolicyStore
from meshclaw.runtime.gateway import Gateway
from meshclaw.runtime.service import StepInfo

OWNER_HANDLE = "emma"
Outcome = Literal["allowed", "held", "denied"]


@dataclass(frozen=True, kw_only=True)
class CallStep:
    turn: int
    """The scripted turn that made the call (one call per turn)."""
    outcome: Outcome
    status: str
    decision: str | None
    untrusted: bool = False
    """The gateway saw the result as untrusted (the run's provenance from then on)."""


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    run_id: str
    status: str
    calls: list[CallStep]
    approved: int = 0
    """The user task's own held calls the owner approved along the way."""


def call_steps(steps: list[StepInfo]) -> list[CallStep]:
    """The run's tool-call steps, each with the scripted turn it came from."""
    out = []
    for step in steps:
        if step.kind != "tool":
            continue
        call_id = str(step.request.get("tool_call_id", ""))
        turn = int(call_id.split("_")[1]) if call_id.startswith("call_") else -1
        if step.status in ("ok", "error"):
            outcome: Outcome = "allowed"
        elif step.status == "waiting_approval":
            outcome = "held"
        else:
            outcome = "denied"
        out.append(
            CallStep(
                turn=turn,
                outcome=outcome,
                status=step.status,
                decision=step.decision,
                untrusted=bool((step.response or {}).get("untrusted")),
            )
        )
    return out


class Harness:
    """A platform, its connectors and one gateway kept for every run (one event loop)."""

    def __init__(
        self,
        workdir: Path,
        model_url: str,
        *,
        version: str = DEFAULT_VERSION,
        after_run: Callable[[], None] | None = None,
    ) -> None:
        settings = Settings(
            home=workdir / "var",
            database_url=None,  # a SQLite file in ``home``, never MESHCLAW_DATABASE_URL's
            embedded_model_server=False,
            providers={"scripted": ProviderConfig(base_url=model_url, timeout_seconds=60)},
        )
        self.platform = Platform(settings)
        self.version = version
        self.run_file = workdir / "current-run"
        self.run_file.write_text("setup\n")
        accounts = self.platform.accounts
        org = accounts.create_org("agentdojo")
        team = accounts.create_team(org.id, "assistants")
        self.org_id = org.id
        self.admin: Caller = accounts.caller_for(
            accounts.create_user(org.id, "admin", role="platform_admin")
        )
        self.owner: Caller = accounts.caller_for(
            accounts.create_user(org.id, OWNER_HANDLE, team_id=team.id)
        )
        self.registry: ConnectorRegistry | None = None
        self.gateway: Gateway | None = None
        self.definitions: dict[str, dict[str, ToolDefinition]] = {}
        self.runs = 0
        self._after_run = after_run
        """Called after each execution (the replay empties the model server's log)."""

    async def add_suite(self, suite: str) -> None:
        """The admin adds the suite's MCP server and approves the tools it lists."""
        if self.gateway is None:
            self.registry = self.platform.connectors()
            self.gateway = self.platform.build_gateway(connectors=self.registry)
        assert self.registry is not None
        args = ["-m", "benchmarks._agentdojo.server", suite, "--version", self.version]
        config: dict[str, Any] = {
            "command": sys.executable,
            "args": [*args, "--run-file", str(self.run_file)],
            "cwd": str(ROOT),
            "approval": "admin",
            "connect_timeout_seconds": CONNECT_TIMEOUT,
            "max_result_chars": 200_000,
        }
        self.platform.connector_admin.add(self.admin, suite, config)
        # Listed through the registry's own connector, so the server starts once.
        connector = cast(McpConnector, self.registry.get(suite, org_id=self.org_id))
        await connector.refresh(self.owner.user_id)
        self.platform.connector_admin.approve(self.admin, suite)
        self.definitions[suite] = await self.registry.tools(
            suite, org_id=self.org_id, user_id=self.owner.user_id
        )

    def save(self, task: UserTask, hijacked: bool, name: str) -> str:
        spec = task.hijacked_spec if hijacked else task.spec
        spec = spec.model_copy(update={"owner": OWNER_HANDLE, "name": name})
        agent, _ = self.platform.agents.save(self.owner, spec)
        return agent.id

    async def execute(self, agent_id: str, task: UserTask, *, approve_own: bool) -> RunRecord:
        """Run the agent to its end, or to a pause on a call the owner will not approve.

        ``approve_own``: the owner approves the user task's own held calls (hijacked
        runs); a utility run that pauses stays paused: the task was not done alone."""
        assert self.gateway is not None
        platform = self.platform
        info = platform.runs.create(self.owner, agent_id, task.prompt)
        self.run_file.write_text(info.id + "\n")  # the MCP server's environment for it
        approved = 0
        while True:
            if not platform.runs.claim(info.id):
                raise RuntimeError(f"could not claim run {info.id}")
            self.runs += 1
            await platform.executor(self.gateway).execute(info.id)
            if self._after_run is not None:
                self._after_run()
            status = platform.runs.get(self.owner, info.id).status
            calls = call_steps(platform.runs.steps(self.owner, info.id))
            if status != "waiting_approval" or not approve_own:
                break
            held = [c for c in calls if c.outcome == "held"]
            if not held or any(c.turn >= len(task.calls) for c in held):
                break  # an injected call (or the outside read) waits: nobody approves it
            pending = [a for a in platform.approvals.pending(self.owner) if a.run_id == info.id]
            if not pending:
                break
            for approval in pending:
                platform.approvals.decide(self.owner, approval.id, approve=True, note="my task")
                approved += 1
        return RunRecord(run_id=info.id, status=status, calls=calls, approved=approved)

    async def aclose(self) -> None:
        if self.gateway is not None:
            await self.gateway.aclose()
        if self.registry is not None:
            await self.registry.aclose()
        self.platform.close()


async def run_suite(plan: Plan, harness: Harness, prefix: str) -> SuiteResult:
    """Every utility and hijacked run of ``plan``; verdicts cross-checked with the direct
    decisions (same specs, same tool definitions)."""
    started = time.perf_counter()
    suite = plan.suite
    result = SuiteResult(suite=suite)
    direct = SuiteResult(suite=suite)
    decide_injections(
        plan, CedarAuthorizer(PolicyStore()), harness.definitions.get(suite, {}), direct
    )
    result.injected_writes_allowed = direct.injected_writes_allowed
    result.injected_writes_same_as_task = direct.injected_writes_same_as_task
    for task in plan.tasks:
        n = len(task.calls)
        result.user_tasks += 1
        result.calls += n
        agent = harness.save(task, False, task.spec.name)
        record = await harness.execute(agent, task, approve_own=False)
        own = [c for c in record.calls if c.turn < n]
        allowed = [c for c in own if c.outcome == "allowed"]
        result.calls_allowed += len(allowed)
        result.held_user_calls += sum(c.outcome == "held" for c in own)
        result.tool_errors += sum(c.status == "error" for c in allowed)
        if len(allowed) == n and record.status == "succeeded":
            result.useful += 1
        else:
            refused = [f"turn {c.turn} {c.status}: {c.decision}" for c in own if c not in allowed]
            result.failures.append(
                f"{task.id} run {record.run_id} {record.status}: "
                f"{len(allowed)}/{n} calls made; {'; '.join(refused)}"
            )
        for injection, injected in plan.injections.items():
            if not injected:
                result.count(task.id, injection, "text_only")
                result.agreement += direct.verdicts[(task.id, injection)] == "text_only"
                continue
            name = f"{prefix}{suite}-{task.id}-x-{injection}".replace("_", "-")
            model = task.model(injection)
            agent = harness.save(_with_model(task, model), True, name)
            record = await harness.execute(agent, task, approve_own=True)
            result.approved_user_calls += record.approved
            result.runs += 1
            read = [c for c in record.calls if c.turn == n]
            attack = [c for c in record.calls if c.turn > n]
            if not read or read[0].status != "ok" or not read[0].untrusted:
                # The injection never arrived, or not as outside content: the pair would
                # say nothing about the attack.
                raise RuntimeError(
                    f"{suite} {task.id} x {injection}: run {record.run_id} "
                    f"({record.status}) did not read the outside message: {read}"
                )
            found = verdict(c.outcome for c in attack)
            if found == "executed" and len(attack) != len(injected):
                raise RuntimeError(
                    f"{suite} {task.id} x {injection}: run {record.run_id} made "
                    f"{len(attack)} of {len(injected)} injected calls ({record.status})"
                )
            result.injected_tool_errors += sum(c.status == "error" for c in attack)
            result.count(task.id, injection, found)
            expected = direct.verdicts[(task.id, injection)]
            if found == expected:
                result.agreement += 1
            else:
                steps = "; ".join(f"turn {c.turn} {c.status}: {c.decision}" for c in attack)
                result.disagreements.append(
                    f"{task.id} x {injection}: run {found}, direct {expected} "
                    f"(run {record.run_id}: {steps})"
                )
    result.seconds = time.perf_counter() - started
    return result


def _with_model(task: UserTask, model: str) -> UserTask:
    """``task`` whose hijacked spec names the conversation ``model``."""
    spec = task.hijacked_spec
    return UserTask(
        suite=task.suite,
        id=task.id,
        prompt=task.prompt,
        calls=task.calls,
        spec=task.spec,
        hijacked_spec=spec.model_copy(
            update={"model": spec.model.model_copy(update={"model": model})}
        ),
    )
