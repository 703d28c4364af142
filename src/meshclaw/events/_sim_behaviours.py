"""The simulated behaviours laid on top of a person's normal day (honest heavy uses and
gaming patterns): one branch per kind in ``HONEST_KINDS`` / ``GAMING_KINDS``.

Padded prompts and token-heavy loops change every run instead: ``simulate._GamingSim``.
"""

from __future__ import annotations

from meshclaw.events import _vocab as V
from meshclaw.events._sim_emit import RunEmitter
from meshclaw.events._sim_types import CUTOFF_HOUR, CUTOFF_WEEKDAY, Person, poisson


def kind_day(sim: RunEmitter, p: Person, day: int, weekday: int, week: int) -> None:
    """The runs ``p``'s behaviour kind adds on ``day`` (besides their normal runs)."""
    r, k, f = sim.rng, p.kind, p.intensity
    workday = weekday < 5
    extra = poisson(r, p.rate * (f - 1.0)) if workday else 0
    if k == "oncall_incident" and week == p.special_week and weekday == p.special_day:
        # A two-day incident: around the clock, many investigations, then fixes.
        for _ in range(poisson(r, p.rate * 8)):
            t = sim.t0s + day * 86400 + r.uniform(0, 36) * 3600
            inc = f"incident INC-{p.id[1:]}{week}: {r.choice(V.ISSUES)} on {r.choice(V.REPOS)}"
            if r.random() < 0.55:
                sim.run(p, t, task=inc, outcome=None, reads=r.randint(3, 12))
            else:
                sim.run(p, t, task=inc, outcome=r.choice(("deploy", "ticket_resolved")),
                        reads=r.randint(2, 6), undo_p=0.08)  # fmt: skip
    elif k == "automation" and workday:
        agent = p.agents[0]
        task = f"post the digest of open {p.team} tickets and auto-close resolved duplicates"
        for h in range(9, 18):
            t = sim.t0s + day * 86400 + h * 3600 + r.uniform(0, 120)
            out = "doc_published" if r.random() < 0.85 else None
            sim.run(p, t, task=task, agent=agent, trigger="cron", outcome=out, reads=2)
    elif k == "no_outcome_runs":
        for _ in range(extra):
            sim.run(p, sim.workday_time(day), outcome=None, reads=r.choice((0, 1, 2)))
    elif k == "repeated_tasks":
        if not p.pet_tasks:
            p.pet_tasks = [
                f"summarise the weekly status report for {p.team} and list open items",
                f"check the {r.choice(V.REPOS)} backlog and draft a weekly report",
            ]
        for _ in range(extra):
            task = sim.paraphrase(r.choice(p.pet_tasks))
            out = "auto" if r.random() < 0.15 else None
            sim.run(p, sim.workday_time(day), task=task, outcome=out)
    elif k == "cron_churn":
        agent = p.agents[-1]
        task = f"scan {r.choice(V.REPOS)} for changes" if not p.pet_tasks else p.pet_tasks[0]
        p.pet_tasks = [task]
        every = 24.0 / max(1.0, p.rate * (f - 1.0) * 5 / 7)
        hour = r.uniform(0, every)
        while hour < 24:
            t = sim.t0s + day * 86400 + hour * 3600
            sim.run(p, t, task=task, agent=agent, trigger="cron", outcome=None, reads=2)
            hour += every * r.uniform(0.8, 1.2)
    elif k == "padded_prompts":
        pass  # every run is padded: see _GamingSim.run
    elif k == "read_only_churn":
        if not p.pet_tasks:
            p.pet_tasks = [f"{V.ROLE_TOOLS[p.role][0][1]}:{r.choice(V.REPOS)}/{i}" for i in
                           range(4)]  # fmt: skip
        for _ in range(extra):
            sim.run(p, sim.workday_time(day), outcome=None, reads=r.randint(4, 12),
                    read_targets=p.pet_tasks)  # fmt: skip
    elif k == "self_addressed":
        for _ in range(extra):
            sim.run(p, sim.workday_time(day), outcome=r.choice(("mail_sent",
                    "doc_published", "meeting_scheduled")), self_addressed=True)  # fmt: skip
    elif k == "acceptance_ring":
        others = [u for u in p.ring if u != p.id]
        for _ in range(extra):
            mate = r.choice(others)
            sim.run(p, sim.workday_time(day), outcome=r.choice(("doc_published",
                    "mail_sent")), beneficiary=mate, accepter=mate,
                    accept_delay=r.uniform(2, 25) * 60, verified=r.random() < 0.4)  # fmt: skip
    elif k == "split_tasks":
        if workday and r.random() < 0.35 * (f - 1.0):
            task = sim.task(p)
            ref = f"doc:{p.id}-{day}"
            parts = r.randint(5, 9)
            t = sim.workday_time(day)
            for i in range(parts):
                sim.run(
                    p,
                    t + i * r.uniform(300, 1500),
                    task=f"{task} (part {i + 1})",
                    outcome="doc_published",
                    ref=ref,
                    value=0.2,
                    calls=1,
                    reads=0,
                )
    elif k == "agent_churn":
        if workday and r.random() < 0.25 * f:
            agent = f"ag-{p.id}-x{day}"
            for _ in range(r.randint(1, 2)):
                sim.run(p, sim.workday_time(day), agent=agent,
                        outcome="auto" if r.random() < 0.3 else None)  # fmt: skip
    elif k == "deadline_burst" and weekday == CUTOFF_WEEKDAY:
        cutoff = sim.t0s + day * 86400 + CUTOFF_HOUR * 3600
        for _ in range(poisson(r, p.rate * 5 * (f - 1.0))):
            sim.run(p, cutoff - r.uniform(0.05, 4) * 3600,
                    outcome="auto" if r.random() < 0.2 else None)  # fmt: skip
    elif k == "reverted_outcomes":
        for _ in range(max(extra, 1) if workday else 0):
            sim.run(p, sim.workday_time(day), outcome=r.choice(V.ROLE_OUTCOMES[p.role]),
                    undo_p=0.7)  # fmt: skip
    elif k == "token_heavy":
        pass  # every run loops on the model: see _GamingSim.run
