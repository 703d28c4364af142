"""Hand-built histories for detector tests: a small honest org plus chosen behaviours."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from meshclaw.events import load_frame, write_events
from meshclaw.integrity import History, build_history

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
TOPICS = [
    "billing",
    "auth",
    "search",
    "ledger",
    "checkout",
    "gateway",
    "reporting",
    "inventory",
    "mobile",
    "web",
]
VERBS = [
    "fix",
    "review",
    "draft",
    "investigate",
    "upgrade",
    "document",
    "test",
    "refactor",
    "plan",
    "migrate",
]
WORDS = [
    "latency",
    "rollout",
    "canary",
    "shard",
    "replica",
    "quota",
    "tenant",
    "invoice",
    "schema",
    "index",
    "partition",
    "backfill",
    "cohort",
    "funnel",
    "metric",
    "alert",
    "threshold",
    "budget",
    "forecast",
    "contract",
    "renewal",
    "escalation",
    "runbook",
    "dependency",
    "patch",
    "release",
    "branch",
    "pipeline",
    "artifact",
    "coverage",
]


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Person:
    user: str
    team: str
    role: str


@dataclass
class Org:
    seed: int = 1
    rows: list[dict[str, Any]] = field(default_factory=list)
    n: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def _id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def _ev(self, p: Person, kind: str, t: datetime, **fields: Any) -> dict[str, Any]:
        row = {"v": 1, "kind": kind, "id": self._id("e"), "ts": iso(t), "org": "acme",
               "team": p.team, "user": p.user, **fields}  # fmt: skip
        self.rows.append(row)
        return row

    def task(self) -> str:
        r = self.rng
        words = f"{r.choice(WORDS)} {r.choice(WORDS)}"
        return f"{r.choice(VERBS)} the {r.choice(TOPICS)} {words} #{r.randint(1, 9999)}"

    def run(
        self,
        p: Person,
        t: datetime,
        *,
        task: str | None = None,
        agent: str | None = None,
        trigger: str = "manual",
        outcome: str | None = None,
        beneficiary: str | None = None,
        accepted_by: str | None = None,
        accept_after: timedelta = timedelta(hours=5),
        verified: bool = True,
        undone: str | None = None,
        reads: list[str] | None = None,
        calls: int = 1,
        prompt: str | None = None,
        input_tokens: int = 2000,
        ref: str | None = None,
    ) -> str:
        r = self.rng
        agent = agent or f"ag-{p.user}"
        rid = self._id("r")
        who = {"agent": agent, "run": rid}
        task = task or self.task()
        self._ev(p, "run", t, **who, trigger=trigger, ended_at=iso(t + timedelta(minutes=3)),
                 status="ok", task=task, role=p.role)  # fmt: skip
        for i in range(calls):
            text = prompt or f"{task} context: {' '.join(r.sample(WORDS, 12))}"
            self._ev(p, "llm_call", t + timedelta(seconds=10 + i), **who, provider="openai",
                     model="gpt-4.1", input_tokens=int(input_tokens * r.uniform(0.8, 1.2)),
                     output_tokens=300, prompt=text)  # fmt: skip
        for k, target in enumerate(reads if reads is not None else [f"doc:{r.randint(1, 10**6)}"]):
            self._ev(p, "tool_call", t + timedelta(seconds=30 + k), **who, tool="docs.read",
                     action="read", target=target, status="ok")  # fmt: skip
        if outcome is not None:
            ben = beneficiary or "external"
            target = ref or f"doc:{r.randint(1, 10**7)}"
            w = self._ev(p, "tool_call", t + timedelta(minutes=1), **who, tool="docs.publish",
                         action="write", target=target, status="ok",
                         recipients=[ben] if ben != "external" else [])  # fmt: skip
            o = self._ev(p, "outcome", t + timedelta(minutes=2), **who, type=outcome, ref=target,
                         beneficiary=ben, verified=verified, tool_call=w["id"])  # fmt: skip
            if accepted_by is not None:
                self._ev(p, "feedback", t + timedelta(minutes=2) + accept_after, outcome=o["id"],
                         by=accepted_by, verdict="accepted")  # fmt: skip
            if undone is not None:
                self._ev(p, "feedback", t + timedelta(days=1), outcome=o["id"], by="system",
                         verdict=undone)  # fmt: skip
        return rid

    def workdays(self, weeks: int = 3, first: int = 0) -> list[datetime]:
        days = [START + timedelta(days=d) for d in range(first, weeks * 7)]
        return [d for d in days if d.weekday() < 5]

    def honest(self, p: Person, mates: list[Person], *, weeks: int = 3, per_day: int = 3,
               first_day: int = 0) -> None:  # fmt: skip
        """A normal person: a few varied runs a day, most end in an accepted outcome."""
        r = self.rng
        for day in self.workdays(weeks, first_day):
            for _ in range(per_day + r.choice((-1, 0, 0, 1))):
                t = day + timedelta(hours=r.uniform(8.5, 16.5))
                mate = r.choice([m for m in mates if m != p])
                if r.random() < 0.7:
                    self.run(p, t, outcome="doc_published", beneficiary=mate.user,
                             accepted_by=mate.user if r.random() < 0.8 else None,
                             accept_after=timedelta(hours=r.uniform(2, 20)),
                             verified=r.random() < 0.9)  # fmt: skip
                else:
                    self.run(p, t)

    def history(self, tmp: Path) -> History:
        path = tmp / "history.jsonl"
        write_events(path, self.rows)
        frame, report = load_frame(path)
        assert report.skipped == 0, report.problems
        return build_history(frame)
