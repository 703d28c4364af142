"""Emitting one simulated run: its model and tool calls, outcome and feedback events.

``RunEmitter`` holds the simulator's state (the one seeded ``random.Random``, the id
counter, the people and the day's output list); the day schedule and the behaviours
build on it (``events.simulate``, ``_sim_behaviours``).
"""

from __future__ import annotations

import math
import random
import zlib
from datetime import UTC, datetime
from typing import Any

from meshclaw.events import _vocab as V
from meshclaw.events._sim_types import Person, SimConfig, SimulatedOrg, iso


class RunEmitter:
    def __init__(self, config: SimConfig, org: SimulatedOrg) -> None:
        self.c = config
        self.org = org
        self.rng = random.Random(config.seed)
        self.t0 = datetime(config.start.year, config.start.month, config.start.day, tzinfo=UTC)
        self.t0s = self.t0.timestamp()
        self.counter = 0
        self.people: list[Person] = []
        self.by_team: dict[str, list[Person]] = {}
        self.out: list[dict[str, Any]] = []

    # ---- ids, times and texts ------------------------------------------------------
    def nid(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.c.seed:x}-{self.counter:x}"

    def week_of(self, t: float) -> int:
        return int((t - self.t0s) // (7 * 86400))

    def workday_time(self, day: int) -> float:
        hour = min(max(self.rng.gauss(13, 2.6), 7), 20)
        return self.t0s + day * 86400 + hour * 3600

    def fill(self, template: str) -> str:
        r = self.rng
        return template.format(
            repo=r.choice(V.REPOS),
            topic=r.choice(V.TOPICS),
            customer=r.choice(V.CUSTOMERS),
            issue=r.choice(V.ISSUES),
            n=r.randint(10, 9999),
        )

    def task(self, p: Person) -> str:
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

    # ---- emitting ------------------------------------------------------------------
    def base(
        self, p: Person, kind: str, t: float, agent: str | None, run: str | None
    ) -> dict[str, Any]:
        e: dict[str, Any] = {
            "v": 1,
            "kind": kind,
            "id": self.nid("e"),
            "ts": iso(t),
            "org": self.c.org,
            "team": p.team,
            "user": p.id,
        }
        if agent is not None:
            e["agent"], e["run"] = agent, run
        return e

    def run(
        self,
        p: Person,
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
        run.update(trigger=trigger, ended_at=iso(clock + r.uniform(1, 20)), status=status)
        run["role"] = p.role
        if c.texts:
            run["task"] = task
        self.out.append(run)
        self.out.extend(events)

    def teammate(self, p: Person) -> Person:
        mates = [q for q in self.by_team[p.team] if q.id != p.id]
        return self.rng.choice(mates) if mates else p

    def emit_outcome(
        self,
        p: Person,
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
