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
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from meshclaw.events import _vocab as V

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
class _Person:
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


def _iso(t: float) -> str:
    """RFC 3339 UTC time of epoch seconds ``t`` (whole seconds); cached per day: hot path."""
    day, rest = divmod(int(t), 86400)
    prefix = _DAYS.get(day)
    if prefix is None:
        prefix = _DAYS[day] = datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")
    return f"{prefix}T{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}Z"


class _Sim:
    def __init__(self, config: SimConfig, org: SimulatedOrg) -> None:
        self.c = config
        self.org = org
        self.rng = random.Random(config.seed)
        self.t0 = datetime(config.start.year, config.start.month, config.start.day, tzinfo=UTC)
        self.t0s = self.t0.timestamp()
        self.counter = 0
        self.people: list[_Person] = []
        self.by_team: dict[str, list[_Person]] = {}
        self.out: list[dict[str, Any]] = []

    # ---- ids and texts -------------------------------------------------------------
    def nid(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.c.seed:x}-{self.counter:x}"

    def fill(self, template: str) -> str:
        r = self.rng
        return template.format(
            repo=r.choice(V.REPOS),
            topic=r.choice(V.TOPICS),
            customer=r.choice(V.CUSTOMERS),
            issue=r.choice(V.ISSUES),
            n=r.randint(10, 9999),
        )

    def task(self, p: _Person) -> str:
        return self.fill(self.rng.choice(V.ROLE_TASKS[p.role]))

    def paraphrase(self, text: str) -> str:
        r = self.rng
        words = text.split()
        out = []
        for w in words:
            syn = V.SYNONYMS.get(w)
            out.append(r.choice(syn) if syn and r.random() < 0.5 else w)
        if r.random() < 0.5 and len(out) > 3:
            i = r.randrange(1, len(out) - 1)
            out = out[i:] + out[:i]
        if r.random() < 0.6:
            out.insert(r.randrange(len(out) + 1), r.choice(V.FILLER))
        return " ".join(out)

    def prompt(self, task: str, n_words: int, padded: bool) -> str:
        r = self.rng
        context = " ".join(r.choices(V.CONTEXT_WORDS, k=n_words))
        if padded:
            return V.BOILERPLATE * r.randint(3, 5) + task + " context: " + context[:120]
        return f"{task} context: {context}"

    # ---- org -----------------------------------------------------------------------
    def build(self) -> None:
        r, c = self.rng, self.c
        functions = list(V.TEAM_FUNCTIONS)
        made, t = 0, 0
        while made < c.users:
            fn = functions[t % len(functions)]
            size = min(r.randint(6, 14), c.users - made)
            team = f"t{t:02d}-{fn}"
            members: list[_Person] = []
            for i in range(size):
                if i == 0:
                    role = "manager"
                else:
                    roles, weights = zip(*V.TEAM_FUNCTIONS[fn], strict=True)
                    role = r.choices(roles, weights)[0]
                uid = f"u{made:04d}"
                made += 1
                person = _Person(
                    id=uid,
                    team=team,
                    role=role,
                    kind="normal",
                    rate=math.exp(r.gauss(math.log(4.0), 0.35)) * c.activity,
                    token_scale=math.exp(r.gauss(0.0, 0.3))
                    * (3.0 if role == "researcher" else 1.0),
                )
                members.append(person)
            self.by_team[team] = members
            self.people.extend(members)
            t += 1
        self.assign_kinds()
        for p in self.people:
            n_agents = r.randint(2, 4)
            p.agents = [f"ag-{p.id}-{k}" for k in range(n_agents)]
            self.org.labels[p.id] = p.kind
            self.org.teams[p.id] = p.team
            self.org.roles[p.id] = p.role

    def assign_kinds(self) -> None:
        r, c = self.rng, self.c
        pool = self.people[:]
        r.shuffle(pool)
        # Release weeks are team-wide: every normal member of the team is labelled.
        release = r.sample(sorted(self.by_team), min(c.release_teams, len(self.by_team)))
        for team in release:
            week = r.randrange(c.weeks)
            for p in self.by_team[team]:
                p.kind, p.special_week = "release_week", week
        free = [p for p in pool if p.kind == "normal"]
        n_gamers = max(len(GAMING_KINDS), round(c.gaming_share * c.users))
        n_heavy = max(len(HONEST_KINDS) - 2, round(c.heavy_share * c.users))
        gamers, free = free[:n_gamers], free[n_gamers:]
        for i, p in enumerate(gamers):
            p.kind = GAMING_KINDS[i % len(GAMING_KINDS)]
            p.intensity = r.uniform(*c.intensity)
        ring_members = [p for p in gamers if p.kind == "acceptance_ring"]
        if len(ring_members) < 3:  # a ring needs at least three people
            extra = [p for p in free if p.role != "manager"][: 3 - len(ring_members)]
            for p in extra:
                p.kind, p.intensity = "acceptance_ring", r.uniform(*c.intensity)
                free.remove(p)
            ring_members += extra
        for k in range(0, len(ring_members), 4):
            group = ring_members[k : k + 4]
            if len(group) < 3 and self.org.rings:
                self.org.rings[-1].extend(q.id for q in group)
                for q in self.people:
                    if q.id in self.org.rings[-1]:
                        q.ring = self.org.rings[-1]
                continue
            ids = [q.id for q in group]
            self.org.rings.append(ids)
            for q in group:
                q.ring = ids
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

    # ---- emitting ------------------------------------------------------------------
    def base(
        self, p: _Person, kind: str, t: float, agent: str | None, run: str | None
    ) -> dict[str, Any]:
        e: dict[str, Any] = {
            "v": 1,
            "kind": kind,
            "id": self.nid("e"),
            "ts": _iso(t),
            "org": self.c.org,
            "team": p.team,
            "user": p.id,
        }
        if agent is not None:
            e["agent"], e["run"] = agent, run
        return e

    def run(
        self,
        p: _Person,
        t: float,
        *,
        task: str | None = None,
        agent: str | None = None,
        trigger: str = "manual",
        outcome: str | None = "auto",
        reads: int | None = None,
        read_targets: list[str] | None = None,
        calls: int | None = None,
        padded: bool = False,
        repeat_prompt: bool = False,
        token_mult: float = 1.0,
        beneficiary: str | None = None,
        accepter: str | None = None,
        accept_delay: float | None = None,
        verified: bool | None = None,
        undo_p: float = 0.03,
        value: float | None = None,
        ref: str | None = None,
        self_addressed: bool = False,
    ) -> None:
        r, c = self.rng, self.c
        agent = agent or r.choice(p.agents)
        task = task or self.task(p)
        rid = self.nid("r")
        calls = calls if calls is not None else r.choice((1, 1, 2, 2, 3, 4))
        reads = reads if reads is not None else r.choice((0, 1, 1, 2, 3))
        if p.role == "researcher" and reads is not None and read_targets is None:
            reads = max(reads, r.randint(3, 8) if p.kind == "long_context_research" else reads)
        events: list[dict[str, Any]] = []
        clock = t + r.uniform(1, 5)
        provider, model = V.MODELS[zlib.crc32(agent.encode()) % len(V.MODELS)]
        base_prompt = None
        for i in range(calls):
            e = self.base(p, "llm_call", clock, agent, rid)
            scale = p.token_scale * token_mult * (3.0 if padded else 1.0)
            e.update(
                provider=provider,
                model=model,
                input_tokens=int(r.lognormvariate(math.log(2500 * scale), 0.5)),
                output_tokens=int(r.lognormvariate(math.log(350), 0.5)),
                cost_usd=round(r.uniform(0.001, 0.05) * scale, 6),
                latency_ms=round(r.uniform(400, 9000), 1),
            )
            if c.texts:
                if repeat_prompt and base_prompt is not None:
                    e["prompt"] = base_prompt
                else:
                    e["prompt"] = self.prompt(task, r.randint(25, 45), padded)
                    base_prompt = e["prompt"]
                if i == calls - 1 and r.random() < 0.3:
                    e["output"] = "done: " + " ".join(r.choices(V.CONTEXT_WORDS, k=8))
            events.append(e)
            clock += r.uniform(2, 40)
            if i == 0:
                tools = V.ROLE_TOOLS[p.role]
                for k in range(reads):
                    tool, prefix = r.choice(tools)
                    target = (
                        r.choice(read_targets)
                        if read_targets
                        else f"{prefix}:{r.choice(V.REPOS)}/{r.randint(1, 5000)}"
                    )
                    e = self.base(p, "tool_call", clock + k, agent, rid)
                    e.update(tool=tool, action="read", target=target, status="ok")
                    events.append(e)
                clock += reads
        kind_out = outcome
        if outcome == "auto":
            p_out = 0.7 if p.kind != "new_hire" else 0.35 + 0.15 * self.week_of(t)
            kind_out = r.choice(V.ROLE_OUTCOMES[p.role]) if r.random() < p_out else None
        status = "ok" if r.random() > 0.04 else "error"
        if kind_out and status == "ok":
            self.emit_outcome(
                p, events, clock, agent, rid, kind_out,
                beneficiary=beneficiary, accepter=accepter, accept_delay=accept_delay,
                verified=verified, undo_p=undo_p, value=value, ref=ref,
                self_addressed=self_addressed,
            )  # fmt: skip
            clock += 5
        run = self.base(p, "run", t, agent, rid)
        run.update(trigger=trigger, ended_at=_iso(clock + r.uniform(1, 20)), status=status)
        run["role"] = p.role
        if c.texts:
            run["task"] = task
        self.out.append(run)
        self.out.extend(events)

    def teammate(self, p: _Person) -> _Person:
        mates = [q for q in self.by_team[p.team] if q.id != p.id]
        return self.rng.choice(mates) if mates else p

    def emit_outcome(
        self,
        p: _Person,
        events: list[dict[str, Any]],
        clock: float,
        agent: str,
        rid: str,
        kind_out: str,
        *,
        beneficiary: str | None,
        accepter: str | None,
        accept_delay: float | None,
        verified: bool | None,
        undo_p: float,
        value: float | None,
        ref: str | None,
        self_addressed: bool,
    ) -> None:
        r = self.rng
        tool, prefix = V.OUTCOME_WRITE[kind_out]
        external = kind_out in ("mail_sent", "ticket_resolved") and p.role in ("support", "sales")
        if self_addressed:
            ben = p.id
        elif beneficiary is not None:
            ben = beneficiary
        elif external and r.random() < 0.7:
            ben = "external"
        else:
            ben = self.teammate(p).id
        target = ref or f"{prefix}:{r.choice(V.REPOS)}/{r.randint(1, 99999)}"
        w = self.base(p, "tool_call", clock, agent, rid)
        w.update(tool=tool, action="write", target=target, status="ok")
        if kind_out in ("mail_sent", "meeting_scheduled", "doc_published"):
            w["recipients"] = [ben] if ben != "external" else []
        events.append(w)
        o = self.base(p, "outcome", clock + 1, agent, rid)
        o.update(
            type=kind_out,
            ref=target,
            beneficiary=ben,
            verified=verified if verified is not None else r.random() < 0.9,
            tool_call=w["id"],
        )
        if value is not None:
            o["value"] = value
        events.append(o)
        # Feedback: the beneficiary (or a given accepter) decides; silence is common.
        by = accepter or ben
        if self_addressed:
            by = p.id
        delay = accept_delay if accept_delay is not None else r.uniform(0.5, 30) * 3600
        roll = r.random()
        verdict = "accepted" if roll < 0.78 else ("rejected" if roll < 0.85 else None)
        if verdict:
            f = self.base(p, "feedback", clock + delay, None, None)
            f.update(outcome=o["id"], by=by, verdict=verdict)
            events.append(f)
        if r.random() < undo_p:
            f = self.base(p, "feedback", clock + r.uniform(6, 72) * 3600, None, None)
            f.update(outcome=o["id"], by="system", verdict=V.UNDO_VERDICT[kind_out])
            events.append(f)

    def week_of(self, t: float) -> int:
        return int((t - self.t0s) // (7 * 86400))

    # ---- days ----------------------------------------------------------------------
    def workday_time(self, day: int) -> float:
        hour = min(max(self.rng.gauss(13, 2.6), 7), 20)
        return self.t0s + day * 86400 + hour * 3600

    def day(self, day: int) -> None:
        weekday = (self.c.start.weekday() + day) % 7
        for p in self.people:
            if day < p.start_day:
                continue
            self.person_day(p, day, weekday)

    def n_runs(self, p: _Person, weekday: int, mult: float = 1.0) -> int:
        lam = p.rate * mult * (0.08 if weekday >= 5 else 1.0)
        return _poisson(self.rng, lam)

    def person_day(self, p: _Person, day: int, weekday: int) -> None:
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
        self.kind_day(p, day, weekday, week)

    def normal_run(self, p: _Person, t: float) -> None:
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

    def kind_day(self, p: _Person, day: int, weekday: int, week: int) -> None:
        r, k, f = self.rng, p.kind, p.intensity
        workday = weekday < 5
        extra = _poisson(r, p.rate * (f - 1.0)) if workday else 0
        if k == "oncall_incident" and week == p.special_week and weekday == p.special_day:
            # A two-day incident: around the clock, many investigations, then fixes.
            for _ in range(_poisson(r, p.rate * 8)):
                t = self.t0s + day * 86400 + r.uniform(0, 36) * 3600
                inc = f"incident INC-{p.id[1:]}{week}: {r.choice(V.ISSUES)} on {r.choice(V.REPOS)}"
                if r.random() < 0.55:
                    self.run(p, t, task=inc, outcome=None, reads=r.randint(3, 12))
                else:
                    self.run(p, t, task=inc, outcome=r.choice(("deploy", "ticket_resolved")),
                             reads=r.randint(2, 6), undo_p=0.08)  # fmt: skip
        elif k == "automation" and workday:
            agent = p.agents[0]
            task = f"post the digest of open {p.team} tickets and auto-close resolved duplicates"
            for h in range(9, 18):
                t = self.t0s + day * 86400 + h * 3600 + r.uniform(0, 120)
                out = "doc_published" if r.random() < 0.85 else None
                self.run(p, t, task=task, agent=agent, trigger="cron", outcome=out, reads=2)
        elif k == "no_outcome_runs":
            for _ in range(extra):
                self.run(p, self.workday_time(day), outcome=None, reads=r.choice((0, 1, 2)))
        elif k == "repeated_tasks":
            if not p.pet_tasks:
                p.pet_tasks = [
                    f"summarise the weekly status report for {p.team} and list open items",
                    f"check the {r.choice(V.REPOS)} backlog and draft a weekly report",
                ]
            for _ in range(extra):
                task = self.paraphrase(r.choice(p.pet_tasks))
                out = "auto" if r.random() < 0.15 else None
                self.run(p, self.workday_time(day), task=task, outcome=out)
        elif k == "cron_churn":
            agent = p.agents[-1]
            task = f"scan {r.choice(V.REPOS)} for changes" if not p.pet_tasks else p.pet_tasks[0]
            p.pet_tasks = [task]
            every = 24.0 / max(1.0, p.rate * (f - 1.0) * 5 / 7)
            hour = r.uniform(0, every)
            while hour < 24:
                t = self.t0s + day * 86400 + hour * 3600
                self.run(p, t, task=task, agent=agent, trigger="cron", outcome=None, reads=2)
                hour += every * r.uniform(0.8, 1.2)
        elif k == "padded_prompts":
            pass  # every run is padded: see _GamingSim.run
        elif k == "read_only_churn":
            if not p.pet_tasks:
                p.pet_tasks = [f"{V.ROLE_TOOLS[p.role][0][1]}:{r.choice(V.REPOS)}/{i}" for i in
                               range(4)]  # fmt: skip
            for _ in range(extra):
                self.run(p, self.workday_time(day), outcome=None, reads=r.randint(4, 12),
                         read_targets=p.pet_tasks)  # fmt: skip
        elif k == "self_addressed":
            for _ in range(extra):
                self.run(p, self.workday_time(day), outcome=r.choice(("mail_sent",
                         "doc_published", "meeting_scheduled")), self_addressed=True)  # fmt: skip
        elif k == "acceptance_ring":
            others = [u for u in p.ring if u != p.id]
            for _ in range(extra):
                mate = r.choice(others)
                self.run(p, self.workday_time(day), outcome=r.choice(("doc_published",
                         "mail_sent")), beneficiary=mate, accepter=mate,
                         accept_delay=r.uniform(2, 25) * 60, verified=r.random() < 0.4)  # fmt: skip
        elif k == "split_tasks":
            if workday and r.random() < 0.35 * (f - 1.0):
                task = self.task(p)
                ref = f"doc:{p.id}-{day}"
                parts = r.randint(5, 9)
                t = self.workday_time(day)
                for i in range(parts):
                    self.run(
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
                    self.run(p, self.workday_time(day), agent=agent,
                             outcome="auto" if r.random() < 0.3 else None)  # fmt: skip
        elif k == "deadline_burst" and weekday == CUTOFF_WEEKDAY:
            cutoff = self.t0s + day * 86400 + CUTOFF_HOUR * 3600
            for _ in range(_poisson(r, p.rate * 5 * (f - 1.0))):
                self.run(p, cutoff - r.uniform(0.05, 4) * 3600,
                         outcome="auto" if r.random() < 0.2 else None)  # fmt: skip
        elif k == "reverted_outcomes":
            for _ in range(max(extra, 1) if workday else 0):
                self.run(p, self.workday_time(day), outcome=r.choice(V.ROLE_OUTCOMES[p.role]),
                         undo_p=0.7)  # fmt: skip
        elif k == "token_heavy":
            pass  # every run loops on the model: see _GamingSim.run


def _poisson(r: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(r.gauss(lam, math.sqrt(lam))))
    limit, k, prod = math.exp(-lam), 0, r.random()
    while prod > limit:
        k += 1
        prod *= r.random()
    return k


class _GamingSim(_Sim):
    """Applies the per-run gaming styles (padding, token loops) to every run."""

    def run(self, p: _Person, t: float, **kw: Any) -> None:
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
        horizon = _iso(sim.t0s + (day + 1) * 86400)
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
