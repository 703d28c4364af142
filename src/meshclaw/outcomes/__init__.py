"""Outcomes: contracts, verification from connector evidence, feedback, durability.

- ``OutcomeService`` (``outcomes.service``): record a run's outcomes from its writes'
  evidence, beneficiary feedback (API, CLI, signed one-click links), durability
  re-checks (``recheck_due``, for the scheduler), type weights, cost per outcome. The
  last three live in ``outcomes.recheck``, ``outcomes.weights`` and ``outcomes.cost``.
- ``Verifier`` / ``Lookup`` (``outcomes.verify``): the per-type verification seam.
- ``DEFAULT_TYPES`` (``outcomes.types``): shipped weights, windows and tools per type.

The credit rules are shared with the offline analytics (``analytics._credit``).
"""

from __future__ import annotations

from meshclaw.outcomes._rules import outcome_state
from meshclaw.outcomes.types import DEFAULT_TYPES, OutcomeType, resolve_type
from meshclaw.outcomes.verify import (
    VERIFIERS,
    Evidence,
    InMemoryLookup,
    Lookup,
    ReadFailed,
    ToolReadLookup,
    Verification,
    Verifier,
)

__all__ = [
    "DEFAULT_TYPES",
    "VERIFIERS",
    "Evidence",
    "InMemoryLookup",
    "Lookup",
    "OutcomeType",
    "ReadFailed",
    "ToolReadLookup",
    "Verification",
    "Verifier",
    "outcome_state",
    "resolve_type",
]
