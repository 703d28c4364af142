"""Building the simulated org: teams, roles, and who is given which behaviour.

Draws from the simulator's one ``random.Random`` in a fixed order, so the same seed
builds the same org (and everything drawn after it stays byte-identical).
"""

from __future__ import annotations

import math
import random

from meshclaw.events import _vocab as V
from meshclaw.events._sim_types import GAMING_KINDS, HONEST_KINDS, Person, SimConfig, SimulatedOrg


def build_org(
    r: random.Random, c: SimConfig, org: SimulatedOrg
) -> tuple[list[Person], dict[str, list[Person]]]:
    """Everyone (in id order) and the teams; fills ``org``'s labels, teams, roles, rings."""
    people: list[Person] = []
    by_team: dict[str, list[Person]] = {}
    functions = list(V.TEAM_FUNCTIONS)
    made, t = 0, 0
    while made < c.users:
        fn = functions[t % len(functions)]
        size = min(r.randint(6, 14), c.users - made)
        team = f"t{t:02d}-{fn}"
        members: list[Person] = []
        for i in range(size):
            if i == 0:
                role = "manager"
            else:
                roles, weights = zip(*V.TEAM_FUNCTIONS[fn], strict=True)
                role = r.choices(roles, weights)[0]
            uid = f"u{made:04d}"
            made += 1
            person = Person(
                id=uid,
                team=team,
                role=role,
                kind="normal",
                rate=math.exp(r.gauss(math.log(4.0), 0.35)) * c.activity,
                token_scale=math.exp(r.gauss(0.0, 0.3)) * (3.0 if role == "researcher" else 1.0),
            )
            members.append(person)
        by_team[team] = members
        people.extend(members)
        t += 1
    _assign_kinds(r, c, org, people, by_team)
    for p in people:
        n_agents = r.randint(2, 4)
        p.agents = [f"ag-{p.id}-{k}" for k in range(n_agents)]
        org.labels[p.id] = p.kind
        org.teams[p.id] = p.team
        org.roles[p.id] = p.role
    return people, by_team


def _assign_kinds(
    r: random.Random,
    c: SimConfig,
    org: SimulatedOrg,
    people: list[Person],
    by_team: dict[str, list[Person]],
) -> None:
    pool = people[:]
    r.shuffle(pool)
    # Release weeks are team-wide: every normal member of the team is labelled.
    release = r.sample(sorted(by_team), min(c.release_teams, len(by_team)))
    for team in release:
        week = r.randrange(c.weeks)
        for p in by_team[team]:
            p.kind, p.special_week = "release_week", week
    free = [p for p in pool if p.kind == "normal"]
    n_gamers = max(len(GAMING_KINDS), round(c.gaming_share * c.users))
    n_heavy = max(len(HONEST_KINDS) - 2, round(c.heavy_share * c.users))
    gamers, free = free[:n_gamers], free[n_gamers:]
    for i, p in enumerate(gamers):
        p.kind = GAMING_KINDS[i % len(GAMING_KINDS)]
        p.intensity = r.uniform(*c.intensity)
    _form_rings(r, c, org, people, gamers, free)
    heavy_kinds = (
        "oncall_incident", "long_context_research", "new_hire", "manager_triage", "automation",
    )  # fmt: skip
    for i, p in enumerate(free[:n_heavy]):
        want = heavy_kinds[i % len(heavy_kinds)]
        if want == "oncall_incident":
            p.role = r.choice(("sre", "engineer")) if p.role != "manager" else p.role
        if want == "long_context_research":
            p.role, p.token_scale = "researcher", p.token_scale * r.uniform(1.5, 2.5)
        if want == "manager_triage":
            p.role = "manager"
        p.kind = want
        p.special_week = r.randrange(c.weeks)
        p.special_day = r.randrange(5)
        if want == "new_hire":
            p.start_day = r.randint(5, 10)


def _form_rings(
    r: random.Random,
    c: SimConfig,
    org: SimulatedOrg,
    people: list[Person],
    gamers: list[Person],
    free: list[Person],
) -> None:
    """Acceptance rings of 3-4 people; tops up from ``free`` (in place) to reach three."""
    ring_members = [p for p in gamers if p.kind == "acceptance_ring"]
    if len(ring_members) < 3:  # a ring needs at least three people
        extra = [p for p in free if p.role != "manager"][: 3 - len(ring_members)]
        for p in extra:
            p.kind, p.intensity = "acceptance_ring", r.uniform(*c.intensity)
            free.remove(p)
        ring_members += extra
    for k in range(0, len(ring_members), 4):
        group = ring_members[k : k + 4]
        if len(group) < 3 and org.rings:
            org.rings[-1].extend(q.id for q in group)
            for q in people:
                if q.id in org.rings[-1]:
                    q.ring = org.rings[-1]
            continue
        ids = [q.id for q in group]
        org.rings.append(ids)
        for q in group:
            q.ring = ids
