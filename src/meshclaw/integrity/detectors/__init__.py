"""The detectors, one module each; ``DETECTORS`` maps each name to its ``detect``.

Each module's docstring says what behaviour it catches, why honest heavy use does not
trip it, and what evidence it reports. A detector reads a prepared ``History`` and
returns ``Finding``s only for people it is confident about (strength >= 0.5).
"""

from __future__ import annotations

from collections.abc import Callable

from meshclaw.integrity._history import History
from meshclaw.integrity._stats import Finding
from meshclaw.integrity.detectors import (
    acceptance_ring,
    agent_churn,
    cron_churn,
    deadline_burst,
    no_outcome,
    padded_prompts,
    read_only_churn,
    repeated_tasks,
    reverted_outcomes,
    self_addressed,
    split_tasks,
    token_heavy,
)

Detector = Callable[[History], list[Finding]]

DETECTORS: dict[str, Detector] = {
    m.NAME: m.detect
    for m in (
        no_outcome,
        repeated_tasks,
        cron_churn,
        padded_prompts,
        read_only_churn,
        self_addressed,
        acceptance_ring,
        split_tasks,
        agent_churn,
        deadline_burst,
        reverted_outcomes,
        token_heavy,
    )
}

__all__ = ["DETECTORS", "Detector"]
