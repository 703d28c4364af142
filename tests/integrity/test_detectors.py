"""Each detector on a small hand-built org: it flags its gamer, never the honest heavy users.

One history is built for the module: three teams of honest people, one gamer per
detector (at 2-3x a normal person's volume), and the honest heavy uses DESIGN.md names:
an on-call incident, long-context research, a new hire, a team's release week, a
manager triaging a big queue, and automation that delivers.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from meshclaw.integrity import DETECTORS, History, ScanResult, scan_history
from tests.integrity.builder import START, Org, Person

A = [Person(f"a{i:02d}", "team-a", "engineer") for i in range(22)]
B = [Person(f"b{i:02d}", "team-b", "engineer") for i in range(22)]
OPS = [Person(f"o{i:02d}", "ops", "sre") for i in range(14)]
RES = [Person(f"r{i:02d}", "research", "researcher") for i in range(7)]
MANAGER = Person("m00", "team-a", "manager")

GAMERS = {
    "no_outcome_runs": A[0],
    "repeated_tasks": A[1],
    "cron_churn": A[2],
    "padded_prompts": A[3],
    "read_only_churn": A[4],
    "self_addressed": B[0],
    "split_tasks": B[1],
    "agent_churn": B[2],
    "deadline_burst": B[3],
    "reverted_outcomes": B[4],
    "token_heavy": OPS[0],
}
RING = [A[5], B[5], OPS[1]]
HONEST_HEAVY = {
    "oncall_incident": OPS[2],
    "automation": OPS[3],
    "long_context_research": RES[0],
    "new_hire": A[6],
    "manager_triage": MANAGER,
    "release_week": B[6],
}


def build(org: Org) -> None:
    r = org.rng
    for team in (A, B, OPS, RES):
        for p in team:
            if p is HONEST_HEAVY["new_hire"]:
                continue
            org.honest(p, team)
    days = org.workdays()
    at = lambda day, lo=9.0, hi=17.0: day + timedelta(hours=r.uniform(lo, hi))  # noqa: E731
    for day in days:
        for _ in range(6):  # no outcome, ever
            org.run(GAMERS["no_outcome_runs"], at(day))
        for i in range(6):  # the same two chores, lightly reworded, to no effect
            chore = [
                "summarise the weekly status report for team a",
                "check billing backlog and draft weekly report",
            ][i % 2]
            org.run(
                GAMERS["repeated_tasks"],
                at(day),
                task=chore + r.choice(["", " please", " again", " now"]),
            )
        for h in range(0, 24, 3):  # unattended cron every 3 hours, nothing comes of it
            org.run(
                GAMERS["cron_churn"],
                day + timedelta(hours=h, minutes=5),
                agent="ag-a02-cron",
                trigger="cron",
                task="scan the billing repo for changes",
            )
        for _ in range(4):  # reads the same three dashboards again and again
            org.run(GAMERS["read_only_churn"], at(day), reads=["dash:1", "dash:2", "dash:3"] * 3)
        for _ in range(5):  # mails and docs to themselves
            org.run(
                GAMERS["self_addressed"],
                at(day),
                outcome="mail_sent",
                beneficiary=GAMERS["self_addressed"].user,
                accepted_by=GAMERS["self_addressed"].user,
            )
        for _ in range(4):  # quick outcomes that get reverted
            org.run(
                GAMERS["reverted_outcomes"],
                at(day),
                outcome="pr_merged",
                beneficiary=B[7].user,
                accepted_by=B[7].user,
                undone="reverted" if r.random() < 0.6 else None,
            )
        for _ in range(3):  # token loops: the same prompt again and again in one run
            org.run(
                GAMERS["token_heavy"],
                at(day),
                calls=9,
                prompt="try again: make it better",
                outcome="doc_published",
                beneficiary=OPS[4].user,
                accepted_by=OPS[4].user,
            )
        for k, p in enumerate(RING):  # the ring accepts each other's outcomes within minutes
            mate = RING[(k + 1) % 3]
            for _ in range(3):
                org.run(
                    p,
                    at(day),
                    outcome="doc_published",
                    beneficiary=mate.user,
                    accepted_by=mate.user,
                    accept_after=timedelta(minutes=r.uniform(2, 20)),
                    verified=r.random() < 0.4,
                )
        if day.weekday() in (1, 3):  # one report split into many credited slices
            ref = f"doc:plan-{day:%m%d}"
            for i in range(7):
                org.run(
                    GAMERS["split_tasks"],
                    day + timedelta(hours=10, minutes=12 * i),
                    outcome="doc_published",
                    ref=ref,
                    beneficiary=B[8].user,
                    accepted_by=B[8].user,
                )
        if day > START + timedelta(days=1) and day < START + timedelta(days=16):
            agent = f"ag-b02-try{day:%d}"  # a new agent a day, used once or twice, abandoned
            for _ in range(2):
                org.run(GAMERS["agent_churn"], at(day), agent=agent)
        if day.weekday() == 4:  # piles up runs in the 5 hours before the Friday cut-off
            for _ in range(12):
                org.run(GAMERS["deadline_burst"], at(day, 12.2, 16.9))
        for _ in range(5):  # padded prompts: boilerplate, three times the tokens
            org.run(
                GAMERS["padded_prompts"],
                at(day),
                input_tokens=6000,
                prompt="You are a helpful thorough careful assistant. " * 12 + "fix test",
            )
        # Honest heavy use.
        for h in range(9, 18):  # automation that delivers, hourly, same task
            org.run(
                HONEST_HEAVY["automation"],
                day + timedelta(hours=h, minutes=1),
                agent="ag-o03-digest",
                trigger="cron",
                task="post the digest of open ops tickets",
                outcome="doc_published",
                beneficiary=OPS[5].user,
                accepted_by=OPS[5].user if r.random() < 0.7 else None,
            )
        for _ in range(9):  # a manager triaging a big queue: each run a different ticket
            n = r.randint(100, 9999)
            mate = r.choice(A[7:])
            org.run(
                MANAGER,
                at(day),
                task=f"triage queue item OPS-{n}: customer reports login fails",
                outcome="ticket_triaged",
                ref=f"ticket:OPS-{n}",
                beneficiary=mate.user,
                accepted_by=mate.user if r.random() < 0.8 else None,
            )
        for _ in range(2):  # long-context research: huge dense prompts, many sources
            org.run(
                HONEST_HEAVY["long_context_research"],
                at(day),
                input_tokens=60000,
                reads=[f"paper:{r.randint(1, 10**6)}" for _ in range(12)],
                outcome="doc_published",
                beneficiary=RES[1].user,
                accepted_by=RES[1].user,
            )
        if days.index(day) in range(5, 9):  # team B's release week, Mon-Thu: everyone busier
            for p in B:
                for _ in range(5):
                    mate = r.choice(B[7:])
                    org.run(
                        p, at(day), outcome="deploy", beneficiary=mate.user, accepted_by=mate.user
                    )
    incident = START + timedelta(days=9)  # a 30-hour incident: many runs, half find nothing yet
    for _ in range(40):
        t = incident + timedelta(hours=r.uniform(0, 30))
        if r.random() < 0.55:
            org.run(
                HONEST_HEAVY["oncall_incident"],
                t,
                task="incident INC-7 api returns 502 on gateway",
                reads=[f"logs:gateway/{r.randint(1, 50)}" for _ in range(6)],
            )
        else:
            org.run(
                HONEST_HEAVY["oncall_incident"],
                t,
                task="incident INC-7 api returns 502 on gateway",
                outcome="deploy",
                beneficiary=OPS[6].user,
                accepted_by=OPS[6].user,
                undone="rolled_back" if r.random() < 0.1 else None,
            )
    hire = HONEST_HEAVY["new_hire"]  # starts in week 2, reads a lot, few outcomes at first
    for day in org.workdays(first=7):
        week = (day - START).days // 7
        for _ in range(3):
            agent = f"ag-a06-{r.randint(0, 2)}"
            if r.random() < 0.3 + 0.25 * week:
                org.run(
                    hire,
                    at(day),
                    agent=agent,
                    outcome="pr_merged",
                    beneficiary=A[7].user,
                    accepted_by=A[7].user,
                )
            else:
                org.run(
                    hire,
                    at(day),
                    agent=agent,
                    reads=[f"repo:{r.randint(1, 10**6)}" for _ in range(5)],
                )


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    org = Org(seed=3)
    build(org)
    return org.history(Path(tmp_path_factory.mktemp("org")))


@pytest.fixture(scope="module")
def scan(history: History) -> ScanResult:
    return scan_history(history)


@pytest.mark.parametrize("name", sorted(GAMERS))
def test_detector_flags_its_gamer(history: History, name: str) -> None:
    found = {f.user: f for f in DETECTORS[name](history)}
    gamer = GAMERS[name].user
    assert gamer in found, f"{name} missed {gamer}"
    assert 0.5 <= found[gamer].strength <= 1.0
    assert found[gamer].evidence, "a finding needs evidence a reviewer can check"


def test_acceptance_ring_reports_the_whole_group(history: History) -> None:
    found = {f.user: f for f in DETECTORS["acceptance_ring"](history)}
    ring = sorted(p.user for p in RING)
    assert sorted(found) == ring
    assert found[ring[0]].evidence["group"] == ring
    assert all(link["median_minutes_to_accept"] < 30 for link in found[ring[0]].evidence["links"])


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_no_detector_flags_honest_heavy_users(history: History, name: str) -> None:
    found = {f.user for f in DETECTORS[name](history)}
    honest = {kind: p.user for kind, p in HONEST_HEAVY.items() if p.user in found}
    assert honest == {}


def test_only_gamers_are_flagged(scan: ScanResult) -> None:
    gamers = {p.user for p in GAMERS.values()} | {p.user for p in RING}
    flagged = {u.user for u in scan.users if u.flagged}
    assert flagged == gamers


def test_evidence_has_ids_a_reviewer_can_open(history: History) -> None:
    finding = next(f for f in DETECTORS["no_outcome_runs"](history) if f.user == "a00")
    ev = finding.evidence
    assert ev["runs_without_outcome"] > ev["runs"] * ev["peer_median_share"]
    assert all(r.startswith("r") for r in ev["example_runs"])
    assert len(ev["weeks_elevated"]) >= 2
