"""Replay AgentDojo's calls through MeshClaw's policy gate and count what got through.

For every user task: its least-privilege spec (``scopes``), then its ground-truth
calls in order, each decided by ``CedarAuthorizer`` with the tool definition MeshClaw's
``McpConnector`` listed from the suite's MCP server (read/write from the annotations,
targets none). An allowed call is made through the connector, so its real result
comes back; a result of an ``openWorldHint`` tool sets ``untrusted_content_seen`` for
every later call, as the gateway does for an ``untrusted`` result. Utility: the share
of user tasks whose every call is allowed (a held or denied call fails the task).

For every (user task, injection task) pair: the injection task's calls, decided under
the user task's spec *after* untrusted content (the injection arrived in it), as if
the model were fully hijacked. A pair is *executed* when every one of its calls is
allowed without approval, *denied* when some call is denied, else *held*. Injected
calls are decided, never made.

Decisions go through ``CedarAuthorizer.authorize`` directly (the gateway's own
authorise step, same request shape), not through full agent runs with the scripted
model: ~1,000 pairs of full runs would take far longer than ``make bench`` allows.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentdojo.task_suite.load_suites import get_suite
from benchmarks._agentdojo.attacks import Call, injected_calls
from benchmarks._agentdojo.catalog import CATALOG, tool
from benchmarks._agentdojo.scopes import OWNER, plain, spec_for
from benchmarks._agentdojo.server import DEFAULT_VERSION

from meshclaw.connectors.approvals import ToolApprovals
from meshclaw.connectors.base import ToolContext, ToolDefinition
from meshclaw.connectors.config import ConnectorConfig
from meshclaw.connectors.mcp import McpConnector
from meshclaw.connectors.models import ConnectorTool
from meshclaw.policy.arguments import call_targets
from meshclaw.policy.authorizer import AuthzRequest, Decision, Principal
from meshclaw.policy.cedar import CedarAuthorizer, PolicyStore
from meshclaw.spec.models import AgentSpec
from meshclaw.store.db import Database

SUITES = ("workspace", "slack", "banking", "travel")
ORG = "org_agentdojo"
ROOT = Path(__file__).resolve().parents[2]


@dataclass(kw_only=True)
class SuiteResult:
    suite: str
    user_tasks: int = 0
    useful: int = 0
    """User tasks whose every ground-truth call was allowed."""
    calls: int = 0
    calls_allowed: int = 0
    held_user_calls: int = 0
    pairs: int = 0
    executed: int = 0
    held: int = 0
    denied: int = 0
    text_only: int = 0
    """Pairs whose injection task makes no tool call (its goal is the answer's text)."""
    injected_writes_allowed: int = 0
    """Single injected write calls allowed (their pair was stopped by another call)."""
    injected_writes_same_as_task: int = 0
    """... of which the very call the user task itself makes."""
    tool_errors: int = 0
    """Allowed user calls whose tool answered with an error (not a policy matter)."""
    failures: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def utility(self) -> float:
        return 100.0 * self.useful / self.user_tasks if self.user_tasks else 0.0


class Tools:
    """A suite's tools as MeshClaw sees them: listed from, and called on, its MCP server."""

    def __init__(self, suite: str, version: str, workdir: Path) -> None:
        self._db = Database(f"sqlite:///{workdir / f'{suite}.db'}")
        # Only the table tool approvals live in: the rest of the store is not needed.
        ConnectorTool.__table__.create(self._db.engine)  # type: ignore[attr-defined]
        config = ConnectorConfig(
            command=sys.executable,
            args=["-m", "benchmarks._agentdojo.server", suite, "--version", version],
            cwd=str(ROOT),
            approval="first_use",
            max_result_chars=200_000,
        )
        self.connector = McpConnector(suite, config, approvals=ToolApprovals(self._db))
        self.definitions: dict[str, ToolDefinition] = {}
        self.open_world: set[str] = set()

    async def load(self) -> None:
        raw, _ = await self.connector.refresh()
        self.definitions = {d.name: d for d in await self.connector.list_tools()}
        self.open_world = {
            n for n, d in raw.items() if (d.get("annotations") or {}).get("openWorldHint")
        }

    async def call(
        self, run: str, seq: int, name: str, arguments: dict[str, Any]
    ) -> tuple[bool, bool]:
        """Make the call: (answered without an error, result marked untrusted)."""
        ctx = ToolContext(
            org_id=ORG,
            user_id=OWNER,
            agent_id=run,
            run_id=run,
            step_id=f"{run}:{seq}",
            idempotency_key=f"{run}:{seq}",
        )
        try:
            result = await self.connector.call_tool(name, arguments, ctx)
        except Exception:
            return False, False
        return not result.is_error, result.untrusted

    async def aclose(self) -> None:
        await self.connector.aclose()
        self._db.dispose()


def decide(
    authz: CedarAuthorizer,
    suite: str,
    spec: AgentSpec,
    agent_id: str,
    definition: ToolDefinition | None,
    name: str,
    arguments: dict[str, Any],
    untrusted: bool,
) -> Decision:
    """What the gateway's authorise step answers for this call."""
    kind = definition.action if definition else ("write" if tool(suite, name).write else "read")
    targets = call_targets(definition.targets, arguments) if definition else []
    return authz.authorize(
        AuthzRequest(
            principal=Principal(org_id=ORG, user_id=OWNER, agent_id=agent_id),
            action=f"tool.{kind}",  # type: ignore[arg-type]
            resource=f"tool:{suite}.{name}",
            spec=spec,
            context={
                "run_id": agent_id,
                "trigger": "manual",
                "untrusted_content_seen": untrusted,
                "arguments": arguments,
                "targets": targets,
            },
        )
    )


async def replay_suite(
    suite: str,
    authz: CedarAuthorizer,
    *,
    version: str = DEFAULT_VERSION,
    limit: int | None = None,
    tools: Tools | None = None,
    allow_list_only: bool = False,
    blanket_gate: bool = False,
) -> SuiteResult:
    started = time.perf_counter()
    task_suite = get_suite(version, suite)
    result = SuiteResult(suite=suite)
    user_tasks = list(task_suite.user_tasks.values())[:limit]
    injections = list(task_suite.injection_tasks.values())
    attack_calls: dict[str, list[Call]] = {}
    for injection in injections:
        env = task_suite.load_and_inject_default_environment({})
        attack_calls[injection.ID], _ = injected_calls(suite, injection, env)
    definitions = tools.definitions if tools else {}
    open_world = tools.open_world if tools else {n for n, t in CATALOG[suite].items() if t.outside}
    for task in user_tasks:
        env = task_suite.load_and_inject_default_environment({})
        calls = [(c.function, plain(c.args)) for c in task.ground_truth(env)]
        spec = spec_for(
            suite, task.ID, task.PROMPT, calls,
            allow_list_only=allow_list_only, blanket_gate=blanket_gate,
        )  # fmt: skip
        agent_id = f"agt_{suite}_{task.ID}"
        result.user_tasks += 1
        untrusted, ok = False, True
        for seq, (name, arguments) in enumerate(calls):
            result.calls += 1
            d = decide(
                authz, suite, spec, agent_id, definitions.get(name), name, arguments, untrusted
            )
            if not d.allowed:
                ok = False
                result.held_user_calls += d.needs_approval
                result.failures.append(f"{task.ID} {name}: {d}")
                continue
            result.calls_allowed += 1
            marked = False
            if tools is not None:
                answered, marked = await tools.call(agent_id, seq, name, arguments)
                result.tool_errors += not answered
            # The result's own flag (``io.meshclaw/untrusted`` in its ``_meta``), or the
            # tool's ``openWorldHint`` where the connector does not read that flag yet.
            if marked or name in open_world:
                untrusted = True
        result.useful += ok
        own = {(n, repr(sorted(a.items()))) for n, a in calls}
        for injection in injections:
            result.pairs += 1
            injected = attack_calls[injection.ID]
            if not injected:
                result.text_only += 1
                continue
            verdicts = []
            for name, arguments in injected:
                d = decide(
                    authz, suite, spec, agent_id, definitions.get(name), name, arguments, True
                )
                verdicts.append(d)
                if d.allowed and tool(suite, name).write:
                    result.injected_writes_allowed += 1
                    result.injected_writes_same_as_task += (
                        name,
                        repr(sorted(arguments.items())),
                    ) in own
            if all(v.allowed for v in verdicts):
                result.executed += 1
                result.leaks.append(f"{task.ID} x {injection.ID}")
            elif any(not v.allowed and not v.needs_approval for v in verdicts):
                result.denied += 1
            else:
                result.held += 1
    result.seconds = time.perf_counter() - started
    return result


async def replay(
    suites: list[str],
    *,
    provenance_rules: bool,
    version: str = DEFAULT_VERSION,
    limit: int | None = None,
    mcp: bool = True,
    allow_list_only: bool = False,
) -> list[SuiteResult]:
    """``provenance_rules``: specs with provenance rules; else every write grant keeps
    the blanket gate (``scopes.spec_for(blanket_gate=True)``)."""
    results = []
    authz = CedarAuthorizer(PolicyStore())
    with tempfile.TemporaryDirectory() as tmp:
        for suite in suites:
            tools = Tools(suite, version, Path(tmp)) if mcp else None
            try:
                if tools is not None:
                    await tools.load()
                results.append(
                    await replay_suite(
                        suite,
                        authz,
                        version=version,
                        limit=limit,
                        tools=tools,
                        allow_list_only=allow_list_only,
                        blanket_gate=not provenance_rules,
                    )
                )
            finally:
                if tools is not None:
                    await tools.aclose()
    return results
