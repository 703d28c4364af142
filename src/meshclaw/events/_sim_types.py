"""The org simulator's configuration, people and ground truth (see ``events.simulate``)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

HONEST_KINDS = (
    "normal", "oncall_incident", "long_context_research", "new_hire", "release_week",
    "manager_triage", "automation",
)  # fmt: skip
GAMING_KINDS = (
    "no_outcome_runs", "repeated_tasks", "cron_churn", "padded_prompts", "read_only_churn",
    "self_addressed", "acceptance_ring", "split_tasks", "agent_churn", "deadline_burst",
    "reverted_outcomes", "token_heavy",
)  # fmt: skip

CUTOFF_WEEKDAY, CUTOFF_HOUR = 4, 17
"""Default measurement cut-off: Friday 17:00 UTC."""


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    seed: int = 0
    users: int = 300
    weeks: int = 4
    start: date = date(2026, 1, 5)
    """A Monday."""
    org: str = "acme"
    gaming_share: float = 0.12
    """Share of people given a gaming behaviour (spread evenly over ``GAMING_KINDS``)."""
    heavy_share: float = 0.15
    """Share of people given an honest heavy-use behaviour (besides release weeks)."""
    release_teams: int = 1
    """Teams that have a release-week burst."""
    intensity: tuple[float, float] = (2.0, 3.0)
    """Gaming volume as a multiple of the person's normal volume (low, high)."""
    activity: float = 1.0
    """Scales everyone's runs per day (for building big files)."""
    texts: bool = True
    """Write task and prompt texts."""


@dataclass(kw_only=True)
class Person:
    id: str
    team: str
    role: str
    kind: str
    rate: float
    """Runs per working day."""
    token_scale: float
    intensity: float = 1.0
    start_day: int = 0
    agents: list[str] = field(default_factory=list)
    pet_tasks: list[str] = field(default_factory=list)
    ring: list[str] = field(default_factory=list)
    special_week: int = 0
    special_day: int = 0


@dataclass(kw_only=True)
class SimulatedOrg:
    """What ``simulate`` produced besides the events: the ground truth."""

    labels: dict[str, str] = field(default_factory=dict)
    """user id -> behaviour kind."""
    teams: dict[str, str] = field(default_factory=dict)
    """user id -> team."""
    roles: dict[str, str] = field(default_factory=dict)
    rings: list[list[str]] = field(default_factory=list)
    events: int = 0


_DAYS: dict[int, str] = {}


def iso(t: float) -> str:
    """RFC 3339 UTC time of epoch seconds ``t`` (whole seconds); cached per day: hot path."""
    day, rest = divmod(int(t), 86400)
    prefix = _DAYS.get(day)
    if prefix is None:
        prefix = _DAYS[day] = datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")
    return f"{prefix}T{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}Z"


def poisson(r: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(r.gauss(lam, math.sqrt(lam))))
    limit, k, prod = math.exp(-lam), 0, r.random()
    while prod > limit:
        k += 1
        prod *= r.random()
    return k
