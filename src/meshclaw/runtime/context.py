"""Everything one run carries through the gateway: attribution, spec, totals, step numbers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from meshclaw.connectors.base import ToolDefinition
from meshclaw.metering.budget import RunTotals
from meshclaw.runtime.steps import Fence, StepJournal
from meshclaw.spec.models import AgentSpec


@dataclass(kw_only=True)
class RunContext:
    run_id: str
    org_id: str
    team_id: str | None
    user_id: str
    """The agent's owner: whose credentials and whose cost."""
    agent_id: str
    agent_version: int
    trigger: str
    spec: AgentSpec
    totals: RunTotals = field(default_factory=RunTotals)
    next_step: int = 1
    resumed_through: int = 0
    """The highest step number already stored when this execution began (0: a fresh run)."""
    tool_definitions: dict[str, ToolDefinition] = field(default_factory=dict)
    """``connector.tool`` -> definition, for the tools offered to this run's model."""
    untrusted_content_seen: bool = False
    """Provenance: a tool result from outside the org entered the conversation."""
    held_calls: list[str] = field(default_factory=list)
    """Tool call ids the policy held for a person's approval: the run pauses after them."""
    journal: StepJournal = field(default_factory=StepJournal)
    """Calls in flight and the call end not yet committed (``runtime.steps``)."""
    fence: Fence | None = None
    """The lease this execution holds (scale-out workers): every write of the run is made
    only while it is still ours (``runtime.steps.holds``). None: no lease, no check."""

    def take_step_number(self) -> int:
        seq = self.next_step
        self.next_step += 1
        return seq

    def idempotency_key(self, seq: int) -> str:
        """Stable for (run, step): a re-executed step presents the same key."""
        digest = hashlib.sha256(f"{self.run_id}:{seq}".encode()).hexdigest()
        return f"idem_{digest[:32]}"
