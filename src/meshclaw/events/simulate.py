"""A seeded, labelled org history in event format v1: the integrity engine's test bed.

``simulate(SimConfig(seed=7))`` yields events (wire-form dicts, day by day) for an org
of teams with job roles over several weeks, and ``labels`` says which behaviour each
person was given. Honest kinds (``HONEST_KINDS``) include the heavy uses that must not
be flagged: an on-call engineer's incident, long-context research, a new hire ramping
up, a whole team's release-week burst, a manager triaging a big queue, automation that
really delivers. Gaming kinds (``GAMING_KINDS``) are one per pattern in DESIGN.md's
Integrity list, laid *on top of* an otherwise normal person's work at a subtle
intensity (2-3x their normal volume by default), so volume alone does not give them
away. Everything random comes from one ``random.Random(seed)``: same seed, same bytes.

The parts: configuration and ground truth in ``_sim_types``, building the org in
``_sim_org``, emitting one run's events in ``_sim_emit``, the behaviours in
``_sim_behaviours``; this module schedules the days and is the public entry point.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from meshclaw.events import _vocab as V
from meshclaw.events._sim_behaviours import kind_day
from meshclaw.events._sim_emit import RunEmitter
from meshclaw.events._sim_org import build_org
from meshclaw.events._sim_types import (
    CUTOFF_HOUR,
    CUTOFF_WEEKDAY,
    GAMING_KINDS,
    HONEST_KINDS,
    Person,
    SimConfig,
    SimulatedOrg,
    iso,
    poisson,
)

__all__ = [
    "CUTOFF_HOUR",
    "CUTOFF_WEEKDAY",
    "GAMING_KINDS",
    "HONEST_KINDS",
    "SimConfig",
    "SimulatedOrg",
    "cutoffs",
    "labels_document",
    "simulate",
]


class _Sim(RunEmitter):
    """The day schedule: everyone's normal runs, then what their kind adds."""

    def build(self) -> None:
        self.people, self.by_team = build_org(self.rng, self.c, self.org)

    def day(self, day: int) -> None:
        weekday = (self.c.start.weekday() + day) % 7
        for p in self.people:
            if day < p.start_day:
                continue
            self.person_day(p, day, weekday)

    def n_runs(self, p: Person, weekday: int, mult: float = 1.0) -> int:
        lam = p.rate * mult * (0.08 if weekday >= 5 else 1.0)
        return poisson(self.rng, lam)

    def person_day(self, p: Person, day: int, weekday: int) -> None:
        r = self.rng
        week = day // 7
        mult = 1.0
        if p.kind == "new_hire":
            mult = min(1.0, 0.5 + 0.2 * ((day - p.start_day) // 5))
        if p.kind == "release_week" and week == p.special_week and weekday < 4:
            mult = r.uniform(2.0, 3.0)
        if p.kind == "long_context_research":
            mult = 0.7
        if p.kind == "manager_triage":
            mult = 2.5
        n = self.n_runs(p, weekday, mult)
        for _ in range(n):
            self.normal_run(p, self.workday_time(day))
        kind_day(self, p, day, weekday, week)

    def normal_run(self, p: Person, t: float) -> None:
        r = self.rng
        trigger = r.choices(("manual", "chat", "mail", "api", "webhook"), (6, 3, 1, 1, 1))[0]
        if p.kind == "manager_triage" and r.random() < 0.7:
            self.run(
                p, t, task=self.fill(r.choice(V.ROLE_TASKS["manager"][:2])),
                outcome="ticket_triaged" if r.random() < 0.8 else None, reads=2,
            )  # fmt: skip
            return
        if p.kind == "long_context_research":
            self.run(p, t, trigger=trigger, token_mult=r.uniform(3, 6), reads=r.randint(6, 20))
            return
        self.run(p, t, trigger=trigger)


class _GamingSim(_Sim):
    """Applies the per-run gaming styles (padding, token loops) to every run."""

    def run(self, p: Person, t: float, **kw: Any) -> None:
        if p.kind == "padded_prompts":
            kw.setdefault("padded", True)
            kw["token_mult"] = kw.get("token_mult", 1.0) * (p.intensity / 3.0)
        elif p.kind == "token_heavy":
            kw.setdefault("calls", self.rng.randint(2, 4) * round(p.intensity + 0.5))
            kw.setdefault("repeat_prompt", True)
        super().run(p, t, **kw)


def simulate(config: SimConfig, org: SimulatedOrg | None = None) -> Iterator[dict[str, Any]]:
    """Yield the org's events day by day (each day in time order); fills ``org``."""
    org = org if org is not None else SimulatedOrg()
    sim = _GamingSim(config, org)
    sim.build()
    pending: list[dict[str, Any]] = []
    for day in range(config.weeks * 7):
        sim.out = []
        sim.day(day)
        horizon = iso(sim.t0s + (day + 1) * 86400)
        pending.extend(sim.out)
        pending.sort(key=lambda e: e["ts"])
        cut = 0
        while cut < len(pending) and pending[cut]["ts"] < horizon:
            cut += 1
        ready, pending = pending[:cut], pending[cut:]
        org.events += len(ready)
        yield from ready
    org.events += len(pending)
    yield from pending


def labels_document(config: SimConfig, org: SimulatedOrg) -> dict[str, Any]:
    """The labels file's content."""
    return {
        "seed": config.seed,
        "users": config.users,
        "weeks": config.weeks,
        "honest_kinds": list(HONEST_KINDS),
        "gaming_kinds": list(GAMING_KINDS),
        "labels": org.labels,
        "teams": org.teams,
        "roles": org.roles,
        "rings": org.rings,
    }


def cutoffs(config: SimConfig) -> list[datetime]:
    """The weekly measurement cut-offs the simulated weeks contain."""
    first = config.start + timedelta(days=(CUTOFF_WEEKDAY - config.start.weekday()) % 7)
    return [
        datetime(first.year, first.month, first.day, CUTOFF_HOUR, tzinfo=UTC) + timedelta(weeks=w)
        for w in range(config.weeks)
    ]
