"""The outcome types MeshClaw knows, with the defaults an org starts from.

Each type says which write tools produce it, how much it weighs (admins can change the
weight per org), when its durability is re-checked and what a failed re-check records,
and whether silence counts as acceptance (a merged PR was accepted by whoever merged
it). An agent spec's ``outcomes`` entries may override the tools, the verification read
and the windows per agent (``spec.models.OutcomeClaim``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

from meshclaw.spec.models import OutcomeClaim


@dataclass(frozen=True, kw_only=True)
class OutcomeType:
    name: str
    weight: float = 1.0
    """Default weight (points per outcome of value 1.0, before diminishing returns)."""
    tools: tuple[str, ...] = ()
    """``connector.tool`` writes whose evidence produces this outcome."""
    verify_tool: str | None = None
    """A read tool the verifier queries for the outcome's current state (e.g. the ticket)."""
    verify_argument: str = "ref"
    """The read tool's argument that takes the outcome's ``ref``."""
    durability: timedelta | None = None
    """Re-check the outcome this long after it was recorded; None: no re-check."""
    undo_verdict: str = "reverted"
    """What a failed durability re-check records."""
    silence_accepts: timedelta | None = None
    """No feedback this long after verification counts as acceptance; None: never."""


DEFAULT_TYPES: dict[str, OutcomeType] = {
    t.name: t
    for t in (
        OutcomeType(name="mail_sent", weight=0.5, tools=("mail.send", "mail.reply"),
                    undo_verdict="rejected"),
        OutcomeType(name="meeting_scheduled", weight=1.0, tools=("calendar.create_event",),
                    verify_tool="calendar.get_event", verify_argument="event_id",
                    durability=timedelta(hours=24),
                    undo_verdict="cancelled"),
        OutcomeType(name="ticket_resolved", weight=2.0, tools=("tickets.resolve",),
                    verify_tool="tickets.get_ticket", verify_argument="number",
                    durability=timedelta(hours=72),
                    undo_verdict="reopened"),
        # The built-in ``tickets`` server's GitHub pull requests first; a third party's
        # merge tool (``code.merge``) is read with the agent's own ``verify_tool``.
        OutcomeType(name="pr_merged", weight=3.0,
                    tools=("tickets.merge_pull_request", "code.merge"),
                    verify_tool="tickets.get_pull_request", verify_argument="number",
                    durability=timedelta(days=7),
                    undo_verdict="reverted", silence_accepts=timedelta(hours=72)),
        # The built-in ``deploy`` server's pipeline run first; a third party's deploy
        # tool (``deploy.run``) is read with the agent's own ``verify_tool`` override.
        OutcomeType(name="deploy", weight=3.0, tools=("deploy.trigger_pipeline", "deploy.run"),
                    verify_tool="deploy.pipeline_status", verify_argument="pipeline_id",
                    durability=timedelta(hours=24),
                    undo_verdict="rolled_back"),
        OutcomeType(name="doc_published", weight=1.0,
                    tools=("docs.write_document", "files.publish"),
                    verify_tool="docs.read_document", verify_argument="path",
                    durability=timedelta(hours=72),
                    undo_verdict="reverted"),
    )
}  # fmt: skip


def resolve_type(claim: OutcomeClaim) -> OutcomeType:
    """The type's defaults with the agent's claim applied on top."""
    base = DEFAULT_TYPES.get(claim.type, OutcomeType(name=claim.type))
    changes: dict[str, object] = {}
    if claim.tools:
        changes["tools"] = tuple(claim.tools)
    if claim.verify_tool is not None:
        changes["verify_tool"] = claim.verify_tool
    if claim.verify_argument is not None:
        changes["verify_argument"] = claim.verify_argument
    if claim.durability_hours is not None:
        changes["durability"] = (
            timedelta(hours=claim.durability_hours) if claim.durability_hours > 0 else None
        )
    if claim.silence_accepts_hours is not None:
        changes["silence_accepts"] = timedelta(hours=claim.silence_accepts_hours)
    return replace(base, **changes)  # type: ignore[arg-type]
