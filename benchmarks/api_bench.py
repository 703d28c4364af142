"""API and dashboard latency with 100 k runs in the store, on SQLite and PostgreSQL.

Question: how fast do run-start and the dashboard's pages answer once an org has a real
history? Target (issue #10): p99 < 200 ms for every page, with 100,000 runs in the store,
on SQLite and on PostgreSQL.

Workload: the demo org (``meshclaw.demo.seed_demo``: teams platform/support/sales, alice
and erin employees, bob team admin, carol platform admin, dave auditor) plus nine more
agents saved through ``AgentRegistry.save`` from ``examples/``. Then N runs (default
100,000) spread over 90 days and four owners are bulk-inserted with SQLAlchemy Core into
the migrated schema (not N service calls): 3 or 5 steps per run (model, tool, model, ...)
with one usage record each, outcomes from about a third of the successful runs that end
in an outcome-producing write (beneficiaries, acceptances, rejections, undoings; ``state``
computed by ``outcomes._rules``), a held-and-approved call in 1 % of runs plus a few
approvals still pending, integrity findings, and one hash-chained ``run.create`` audit
record per run (hashed exactly as ``StoreAuditSink`` hashes, checkpoints signed, so
``audit verify`` passes). SQLite lives in a temporary directory; PostgreSQL in a fresh
database that is dropped afterwards (``ANALYZE`` after the load, as autovacuum would do;
SQLite gets no ``ANALYZE``, as a real embedded store has none).

Method: the real app (``meshclaw.api.app.create_app``, no worker: ``POST /v1/runs`` only
queues) served by uvicorn on loopback in a thread, driven by one ``httpx`` client in the
same process, one request at a time. API calls use an API token; pages use the session
cookie from ``POST /v1/auth/login``. Every target gets a warm-up, then the targets take
turns in a shuffled order each round (so the machine's noise spreads over all of them)
until each has N requests, or at least 20 after its time budget. Reported: p50/p95/p99
wall time and the process's median CPU time per request (server and client threads;
PostgreSQL's own CPU is not in it), which other load on the machine disturbs less. The
baselines measured in the same run: ``GET /health`` (no auth, no database: the HTTP stack
alone) and ``GET /v1/me`` (token auth only). A page that answers 404 is reported "not
built"; any other unexpected status is reported as an error (and its body printed).

    .venv/bin/python benchmarks/api_bench.py --runs 5000 --requests 50   # quick look
    .venv/bin/python benchmarks/api_bench.py --write docs/benchmarks.md  # full run
    .venv/bin/python benchmarks/api_bench.py --db sqlite --only /ui/     # one database, some rows
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import itertools
import json
import math
import os
import platform as host
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
from sqlalchemy import (
    JSON,
    Connection,
    Table,
    column,
    create_engine,
    insert,
    select,
    table,
    text,
    update,
)
from sqlalchemy.pool import NullPool

from meshclaw._loopback import LoopbackServer
from meshclaw.api.app import create_app
from meshclaw.audit.canonical import body_digest, format_ts, header_json, new_salt
from meshclaw.audit.checkpoint import Checkpoint
from meshclaw.audit.merkle import Frontier, hash_leaf
from meshclaw.audit.models import HEAD_ID, AuditCheckpoint, AuditHead
from meshclaw.audit.signing import Checkpointer
from meshclaw.config import Settings
from meshclaw.demo import DEMO_ORG, DEMO_PASSWORD, seed_demo
from meshclaw.integrity.models import IntegrityFinding
from meshclaw.outcomes._rules import outcome_state
from meshclaw.outcomes.models import Outcome, OutcomeFeedback
from meshclaw.outcomes.types import DEFAULT_TYPES
from meshclaw.platform import Platform
from meshclaw.policy.models import Approval
from meshclaw.spec.loader import parse_spec
from meshclaw.store.models import (
    Agent,
    AgentVersion,
    AuditEvent,
    Run,
    RunStep,
    UsageRecord,
    User,
    UTCDateTime,
)

BEGIN, END = "<!-- api:begin -->", "<!-- api:end -->"
ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get(
    "MESHCLAW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TARGET_MS = 200.0
MIN_REQUESTS = 10
"""A target over its time budget still gets at least this many measured requests."""

# ---- what is measured -------------------------------------------------------------------
# One table for every request, so rows are added where the pages are built. ``{run}`` is
# replaced by one of the viewer's runs (a different one on each request). Pages answering
# 404 are "not built". Who: alice (employee: her own data) and carol (platform admin: the
# whole org) where the data differs; dave is the auditor.
BASELINES: list[tuple[str, str, tuple[str, ...]]] = [
    ("GET", "/health", ("alice",)),
    ("GET", "/v1/me", ("alice",)),
]
API: list[tuple[str, str, tuple[str, ...]]] = [
    ("POST", "/v1/runs", ("alice",)),
    ("GET", "/v1/runs?limit=50", ("alice", "carol")),
    ("GET", "/v1/runs/{run}", ("alice", "carol")),
    ("GET", "/v1/usage", ("alice", "carol")),
    ("GET", "/v1/outcomes", ("alice", "carol")),
    ("GET", "/v1/analytics/leaderboard", ("alice",)),
]
PAGES: list[tuple[str, tuple[str, ...]]] = [
    ("/ui/", ("alice", "carol")),
    ("/ui/runs", ("alice", "carol")),
    ("/ui/runs/{run}", ("alice", "carol")),
    ("/ui/agents", ("alice", "carol")),
    ("/ui/insights", ("alice", "carol")),
    ("/ui/leaderboard", ("alice", "carol")),
    ("/ui/approvals", ("alice", "carol")),
    ("/ui/audit", ("dave",)),
    ("/ui/integrity", ("dave",)),
    ("/ui/admin", ("carol",)),
]

# ---- the synthetic history ---------------------------------------------------------------
# Agent templates: (example spec, tools its runs call, (outcome type, the tool making it)).
TEMPLATES: dict[str, tuple[str | None, tuple[str, ...], tuple[str, str] | None]] = {
    "daily-notes": (None, ("clock.now", "notes.write"), None),
    "mail-triage": ("mail-triage", ("mail.search", "mail.send"), ("mail_sent", "mail.send")),
    "ticket-updater": (
        "ticket-updater",
        ("tickets.get", "tickets.resolve"),
        ("ticket_resolved", "tickets.resolve"),
    ),
    "deploy-helper": ("deploy-helper", ("deploy.status", "deploy.run"), ("deploy", "deploy.run")),
    "standup-scheduler": (
        "standup-scheduler",
        ("calendar.list_events", "calendar.create_event"),
        ("meeting_scheduled", "calendar.create_event"),
    ),
    "doc-publisher": (
        "doc-publisher",
        ("docs.search", "docs.publish"),
        ("doc_published", "docs.publish"),
    ),
}
OWNED: dict[str, tuple[str, ...]] = {
    "alice": ("daily-notes", "mail-triage", "ticket-updater", "deploy-helper"),
    "bob": ("ticket-updater", "mail-triage"),
    "carol": ("deploy-helper", "standup-scheduler"),
    "erin": ("mail-triage", "doc-publisher"),
}
SHARE = {"alice": 0.35, "bob": 0.2, "carol": 0.15, "erin": 0.3}
"""Share of the runs per owner."""
DAYS = 90
CHUNK = 5_000
PENDING_APPROVALS = 12
FINDINGS = 24
DETECTORS = ("no_outcome_runs", "repeated_tasks", "cron_churn", "read_only_churn",
             "self_addressed", "deadline_burst")  # fmt: skip
_B32 = "0123456789abcdefghjkmnpqrstvwxyz"


_PAIRS = [a + b for a in _B32 for b in _B32]
"""Every 10-bit value as its two base32 characters."""


def _encode_time(millis: int) -> str:
    """``millis`` as 10 base32 characters, like ``meshclaw.ids`` (five table look-ups)."""
    return "".join(_PAIRS[(millis >> shift) & 1023] for shift in (40, 30, 20, 10, 0))


@dataclass(frozen=True)
class Person:
    handle: str
    id: str
    team_id: str | None
    role: str


@dataclass(frozen=True)
class AgentRow:
    id: str
    name: str
    owner: Person
    version_id: str
    version: int
    tools: tuple[str, ...]
    outcome: tuple[str, str] | None


@dataclass
class Store:
    """What the benchmark needs to know about the store it built."""

    platform: Platform
    people: dict[str, Person]
    agents: list[AgentRow]
    tokens: dict[str, str]
    runs_of: dict[str, list[str]]
    """Sample run ids visible to each viewer (their own; the whole org for carol)."""
    counts: dict[str, int]
    seconds: float


class Builder:
    """Bulk-inserts the synthetic history; ids sort by time like ``meshclaw.ids.new_id``."""

    def __init__(self, platform: Platform, n_runs: int, seed: int) -> None:
        self.platform = platform
        self.n_runs = n_runs
        self.rng = random.Random(seed)
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.counts: dict[str, int] = dict.fromkeys(
            ("runs", "run_steps", "usage_records", "outcomes", "outcome_feedback",
             "approvals", "audit_events", "integrity_findings"), 0,
        )  # fmt: skip
        self.sample: dict[str, list[str]] = {}

    def id(self, prefix: str, when: datetime) -> str:
        # Time part as in ``new_id``; hex digits are a subset of its base32 alphabet.
        millis = int(when.timestamp() * 1000)
        return f"{prefix}_{_encode_time(millis)}{self.rng.getrandbits(64):016x}"

    def between(self, low: int, high: int) -> int:
        """``randint`` without its overhead (called a few million times)."""
        return low + int(self.rng.random() * (high - low + 1))

    # ---- accounts and agents (service calls: a handful) ---------------------------------

    def people_and_agents(self) -> tuple[dict[str, Person], list[AgentRow]]:
        platform = self.platform
        seed_demo(platform)
        org = platform.accounts.org_by_name(DEMO_ORG)
        assert org is not None
        self.org_id = org.id
        with platform.db.session() as session:
            users = session.scalars(select(User).where(User.org_id == org.id)).all()
            people = {u.handle: Person(u.handle, u.id, u.team_id, u.role) for u in users}
        for handle, names in OWNED.items():
            caller = platform.accounts.caller_for(platform.accounts.user_by_handle(org.id, handle))
            for name in names:
                example = TEMPLATES[name][0]
                if example is None:
                    continue  # the demo's own agent
                yaml = (ROOT / "examples" / f"{example}.yaml").read_text("utf-8")
                yaml = yaml.replace("owner: alice", f"owner: {handle}")
                if handle != "alice":
                    yaml = yaml.replace(f"name: {name}", f"name: {handle}-{name}")
                platform.agents.save(caller, parse_spec(yaml))
        agents: list[AgentRow] = []
        by_id = {p.id: p for p in people.values()}
        with platform.db.session() as session:
            rows = session.execute(
                select(Agent, AgentVersion)
                .join(AgentVersion, AgentVersion.agent_id == Agent.id)
                .where(Agent.org_id == org.id, AgentVersion.version == Agent.latest_version)
                .order_by(Agent.name)
            ).all()
            for agent, version in rows:
                owner = by_id[agent.owner_id]
                template = agent.name.removeprefix(f"{owner.handle}-")
                _, tools, outcome = TEMPLATES[template]
                agents.append(
                    AgentRow(agent.id, agent.name, owner, version.id, version.version, tools,
                             outcome)
                )  # fmt: skip
        return people, agents

    # ---- the history (Core bulk inserts) -------------------------------------------------

    def history(self, people: dict[str, Person], agents: list[AgentRow]) -> None:
        rng = self.rng
        owners = [people[h] for h in SHARE]
        weights = [SHARE[h] for h in SHARE]
        agents_of = {p.id: [a for a in agents if a.owner.id == p.id] for p in owners}
        start = self.now - timedelta(days=DAYS)
        span = (self.now - timedelta(minutes=5) - start).total_seconds()
        times = sorted(rng.random() * span for _ in range(self.n_runs))
        pending = set(range(self.n_runs - PENDING_APPROVALS * 4, self.n_runs, 4))
        others = [p for p in people.values()]
        engine = self.platform.db.engine
        sqlite = engine.dialect.name == "sqlite"
        audit = AuditWriter(self.platform, engine)
        for chunk_start in range(0, self.n_runs, CHUNK):
            rows: dict[str, list[dict[str, Any]]] = {
                "runs": [], "run_steps": [], "usage_records": [], "outcomes": [],
                "outcome_feedback": [], "approvals": [],
            }  # fmt: skip
            audit_rows: list[tuple[datetime, dict[str, Any]]] = []
            for i in range(chunk_start, min(chunk_start + CHUNK, self.n_runs)):
                owner = rng.choices(owners, weights)[0]
                agent = rng.choice(agents_of[owner.id])
                created = start + timedelta(seconds=times[i])
                self._run(rows, audit_rows, i, agent, created, i in pending, others)
            with engine.begin() as conn:
                for table in ("runs", "run_steps", "usage_records", "outcomes",
                              "outcome_feedback", "approvals"):  # fmt: skip
                    if rows[table]:
                        bulk_insert(conn, table, rows[table], sqlite)
                        self.counts[table] += len(rows[table])
                audit.append(conn, audit_rows, sqlite)
        audit.finish()
        self.counts["audit_events"] = audit.written
        self._findings(people)

    def _run(
        self,
        rows: dict[str, list[dict[str, Any]]],
        audit_rows: list[tuple[datetime, dict[str, Any]]],
        index: int,
        agent: AgentRow,
        created: datetime,
        waiting: bool,
        people: list[Person],
    ) -> None:
        rng = self.rng
        owner = agent.owner
        run_id = self.id("run", created)
        trigger = rng.choices(("manual", "cron", "api", "webhook"), (5, 3, 1, 1))[0]
        tools = (agent.tools[-1],) if rng.random() < 0.5 else agent.tools
        roll = rng.random()
        status = "succeeded" if roll < 0.90 else "failed" if roll < 0.96 else "cancelled"
        if waiting:
            status = "waiting_approval"
        task = f"{agent.name}: task #{index}"
        started = created + timedelta(milliseconds=self.between(20, 2000))
        t = started
        attribution = {
            "org_id": self.org_id, "team_id": owner.team_id, "user_id": owner.id,
            "agent_id": agent.id, "agent_version": agent.version, "run_id": run_id,
            "trigger": trigger,
        }  # fmt: skip
        plan = [("model", "scripted-demo")]
        for tool in tools:
            plan += [("tool", tool), ("model", "scripted-demo")]
        if status == "failed":
            plan = plan[: rng.choice(range(1, len(plan) + 1, 2))]
        elif status in ("cancelled", "waiting_approval"):
            plan = plan[:2]
        last_write: str | None = None
        for seq, (kind, name) in enumerate(plan, start=1):
            step_id = self.id("stp", t)
            latency = self.between(300, 4000) if kind == "model" else self.between(20, 800)
            ended = t + timedelta(milliseconds=latency)
            failed_here = status == "failed" and seq == len(plan)
            step_status = "error" if failed_here else "ok"
            if status == "waiting_approval" and kind == "tool":
                step_status, ended_at = "running", None
            else:
                ended_at = ended
            cost = 0
            request: dict[str, Any]
            response: dict[str, Any]
            if kind == "model":
                inp, out = self.between(800, 6000), self.between(40, 900)
                cached = self.between(0, inp // 2)
                cost = inp * 2_500 + out * 10_000 - cached * 1_250  # nano-dollars
                call = None
                if seq < len(plan):
                    call = {"id": f"call_{seq}", "name": plan[seq][1], "arguments": {"q": task}}
                request = {"model": name, "message_count": seq + 1,
                           "new_messages": [{"role": "user", "content": task}],
                           "tools": list(agent.tools)}  # fmt: skip
                response = {
                    "content": None if call else f"Done: {task}",
                    "tool_calls": [call] if call else [], "finish_reason":
                    "tool_calls" if call else "stop",
                    "usage": {"input_tokens": inp, "output_tokens": out, "cached_tokens": cached,
                              "cache_write_tokens": 0, "reasoning_tokens": 0,
                              "estimated": False},
                    "attempts": [], "latency_ms": latency,
                }  # fmt: skip
            else:
                inp = out = cached = 0
                request = {"tool_call_id": f"call_{seq - 1}", "arguments": {"q": task}}
                response = {"content": f"{name}: ok", "data": {"ref": f"{name}/{index}"},
                            "latency_ms": latency, "untrusted": False}  # fmt: skip
                if step_status == "ok" and agent.outcome and name == agent.outcome[1]:
                    last_write = step_id
            rows["run_steps"].append({
                "id": step_id, "run_id": run_id, "seq": seq, "kind": kind, "name": name,
                "status": step_status, "request": request,
                "response": response if ended_at else None,
                "decision": "allow: spec grants it", "error": "provider error" if failed_here
                else None, "cost_nano_usd": cost, "started_at": t, "ended_at": ended_at,
            })  # fmt: skip
            if ended_at is not None:
                rows["usage_records"].append({
                    "id": self.id("use", ended), **attribution, "kind": kind, "step_id": step_id,
                    "provider": "scripted" if kind == "model" else None,
                    "model": name if kind == "model" else None,
                    "tool": name if kind == "tool" else None,
                    "status": "error" if failed_here else "ok", "input_tokens": inp,
                    "output_tokens": out, "cached_tokens": cached, "cache_write_tokens": 0,
                    "reasoning_tokens": 0, "estimated": False, "latency_ms": latency,
                    "cost_nano_usd": cost, "price_version": "bench" if kind == "model" else None,
                    "created_at": ended,
                })  # fmt: skip
            t = ended + timedelta(milliseconds=self.between(5, 50))
        rows["runs"].append({
            "id": run_id, "org_id": self.org_id, "team_id": owner.team_id,
            "user_id": owner.id, "started_by": owner.id, "agent_id": agent.id,
            "agent_version_id": agent.version_id, "agent_version": agent.version,
            "trigger": trigger, "input": task, "status": status,
            "output": f"Done: {task}" if status == "succeeded" else None,
            "error": {"failed": "provider error", "cancelled": "cancelled by the owner"}.get(
                status),
            "cancel_requested": status == "cancelled", "step_count": len(plan),
            "created_at": created, "started_at": started,
            "ended_at": t if status in ("succeeded", "failed", "cancelled") else None,
            "lease_owner": None, "lease_expires_at": None, "attempts": 0,
        })  # fmt: skip
        audit_rows.append((created, {
            "action": "run.create", "resource": f"run:{run_id}", "outcome": "ok",
            "org_id": self.org_id, "actor_user_id": owner.id, "actor_agent_id": agent.id,
            "details": {"agent_version": agent.version, "trigger": trigger},
        }))  # fmt: skip
        self.sample.setdefault(owner.handle, []).append(run_id)
        if waiting or (status == "succeeded" and rng.random() < 0.01 and len(plan) > 1):
            tool = plan[1][1]
            rows["approvals"].append({
                "id": self.id("apr", started), "org_id": self.org_id, "run_id": run_id,
                "agent_id": agent.id, "owner_id": owner.id, "step_seq": 2,
                "tool_call_id": "call_1", "tool": tool, "action": "tool.write",
                "arguments": {"q": task},
                "arguments_hash": hashlib.sha256(task.encode()).hexdigest(),
                "reason": "write after untrusted content", "requested_at": started,
                "expires_at": started + timedelta(hours=24),
                "status": "pending" if waiting else "used",
                "decided_by": None if waiting else owner.id,
                "decided_at": None if waiting else started + timedelta(minutes=3),
                "note": None, "used_at": None if waiting else started + timedelta(minutes=3),
            })  # fmt: skip
        if last_write is not None and agent.outcome is not None and rng.random() < 0.35:
            self._outcome(rows, agent, run_id, last_write, t, people)

    def _outcome(
        self,
        rows: dict[str, list[dict[str, Any]]],
        agent: AgentRow,
        run_id: str,
        step_id: str,
        created: datetime,
        people: list[Person],
    ) -> None:
        rng = self.rng
        assert agent.outcome is not None
        type_name, tool = agent.outcome
        kind = DEFAULT_TYPES[type_name]
        owner = agent.owner.id
        roll = rng.random()
        others = [p.id for p in people if p.id != owner]
        beneficiaries = [rng.choice(others)] if roll < 0.7 else ["external"] if roll < 0.85 else []
        verified = rng.random() < 0.92
        outcome_id = self.id("out", created)
        feedback: list[tuple[datetime, str, str]] = []
        if beneficiaries:
            by = beneficiaries[0] if beneficiaries[0] != "external" else "external:x@example.com"
            when = created + timedelta(hours=rng.uniform(0.2, 48))
            verdict_roll = rng.random()
            if verdict_roll < 0.65:
                feedback.append((when, by, "accepted"))
                if rng.random() < 0.08 and kind.undo_verdict:
                    feedback.append((when + timedelta(hours=5), "system", kind.undo_verdict))
            elif verdict_roll < 0.75:
                feedback.append((when, by, "rejected"))
        feedback = [f for f in feedback if f[0] < self.now]
        state = outcome_state(
            verified=verified, owner=owner, beneficiaries=beneficiaries,
            feedback=[(ts, "external" if by.startswith("external:") else by, v)
                      for ts, by, v in feedback],
        )  # fmt: skip
        due = created + kind.durability if kind.durability and verified else None
        checked = None
        if due is not None and due < self.now:
            due, checked = None, due
        rows["outcomes"].append({
            "id": outcome_id, "org_id": self.org_id, "team_id": agent.owner.team_id,
            "user_id": owner, "agent_id": agent.id, "run_id": run_id, "step_id": step_id,
            "tool": tool, "type": type_name, "ref": f"{type_name}:{outcome_id[-8:]}",
            "beneficiaries": beneficiaries, "verified": verified,
            "verification": {"checked": kind.verify_tool or "evidence", "found": verified},
            "evidence": {"ref": f"{type_name}:{outcome_id[-8:]}"}, "value": 1.0,
            "state": state, "durability_due_at": due, "durability_checked_at": checked,
            "silence_accepts_at": None, "created_at": created,
        })  # fmt: skip
        for ts, by, verdict in feedback:
            rows["outcome_feedback"].append({
                "id": self.id("fbk", ts), "org_id": self.org_id, "outcome_id": outcome_id,
                "by": by, "verdict": verdict, "via": "system" if by == "system" else "api",
                "note": None, "created_at": ts,
            })  # fmt: skip

    def _findings(self, people: dict[str, Person]) -> None:
        rng = self.rng
        subjects = [people[h] for h in ("alice", "bob", "carol", "erin")]
        statuses = ["open"] * 4 + ["under_review"] * 2 + ["dismissed"] * 12 + ["confirmed"] * 6
        rows = []
        for i in range(FINDINGS):
            person = subjects[i % len(subjects)]
            when = self.now - timedelta(days=rng.uniform(0, DAYS))
            status = statuses[i % len(statuses)]
            examples = rng.sample(self.sample.get(person.handle, []) or ["run_none"], 1)
            rows.append({
                "id": self.id("fnd", when), "org_id": self.org_id, "subject": person.id,
                "detector": DETECTORS[i % len(DETECTORS)], "status": status,
                "strength": round(rng.uniform(0.3, 1.0), 3),
                "score": round(rng.uniform(2.0, 9.0), 3),
                "evidence": {"summary": "pattern seen in the person's runs",
                             "example": examples[0]},
                "source": "scan:store", "reason": None if status in ("open", "under_review")
                else "reviewed with the team lead",
                "reviewed_by": None if status == "open" else people["dave"].id,
                "created_at": when, "updated_at": when,
            })  # fmt: skip
        with self.platform.db.engine.begin() as conn:
            bulk_insert(conn, "integrity_findings", rows, conn.dialect.name == "sqlite")
        self.counts["integrity_findings"] = len(rows)


class AuditWriter:
    """Appends records after the log's current head, hashed as ``StoreAuditSink`` does."""

    def __init__(self, platform: Platform, engine: Any) -> None:
        cfg = platform.settings.audit
        self.checkpointer = Checkpointer(  # the platform's key and cadence
            key_path=cfg.signing_key or platform.settings.home / "audit-signing.key",
            origin=cfg.origin,
            every=cfg.checkpoint_every,
        )
        with engine.connect() as conn:
            head = conn.execute(select(AuditHead.size, AuditHead.frontier)).one()
        self.frontier = Frontier.from_hex(int(head.size), list(head.frontier))
        self.engine = engine
        self.written = 0

    def append(
        self, conn: Connection, records: list[tuple[datetime, dict[str, Any]]], sqlite: bool
    ) -> None:
        events, notes = [], []
        cp = self.checkpointer
        for ts, r in records:
            seq = self.frontier.size + 1
            salt = new_salt()
            digest = body_digest(
                r["actor_user_id"], r["actor_agent_id"], r["resource"], r["details"], salt
            )
            event_id = f"aud_{_encode_time(int(ts.timestamp() * 1000))}{uuid.uuid4().hex[:16]}"
            leaf = hash_leaf(
                header_json(
                    seq, event_id, format_ts(ts), r["org_id"], r["action"], r["outcome"], digest
                )
            )
            self.frontier.append(leaf)
            events.append({**r, "seq": seq, "id": event_id, "ts": ts, "salt": salt,
                           "body_sha256": digest, "leaf_hash": leaf.hex(),
                           "redacted_at": None})  # fmt: skip
            if cp.due(seq):
                root = self.frontier.root()
                note = cp.signer.sign(Checkpoint(origin=cp.origin, size=seq, root=root))
                notes.append({"size": seq, "root_hash": root.hex(), "origin": cp.origin,
                              "key_id": cp.signer.verifier.key_id.hex(), "note": note,
                              "created_at": ts})  # fmt: skip
        if events:
            bulk_insert(conn, "audit_events", events, sqlite)
        if notes:
            bulk_insert(conn, "audit_checkpoints", notes, sqlite)
        conn.execute(
            update(_table("audit_head"))
            .where(_table("audit_head").c.id == HEAD_ID)
            .values(size=self.frontier.size, frontier=self.frontier.to_hex(),
                    root=self.frontier.root().hex(), updated_at=datetime.now(UTC))
        )  # fmt: skip
        self.written += len(events)

    def finish(self) -> None:
        """Nothing buffered: each chunk committed its records and the head together."""


def bulk_insert(conn: Connection, name: str, rows: list[dict[str, Any]], sqlite: bool) -> None:
    """One Core ``INSERT`` executed for many rows, values already in their stored form.

    The model tables' types would run a Python bind processor for every value (the UTC
    check, date formatting, JSON encoding): most of the load time. So datetimes and JSON
    are converted here once, exactly as those types store them (SQLite: ISO text with
    microseconds; PostgreSQL: the driver adapts the aware datetime), and the insert goes
    to an untyped ``table()`` clause with the same name and columns.
    """
    real = _table(name)
    stamps = [c.name for c in real.columns if isinstance(c.type, UTCDateTime)]
    documents = [c.name for c in real.columns if isinstance(c.type, JSON)]
    dumps = json.dumps
    for row in rows:
        if sqlite:
            for key in stamps:
                value = row[key]
                if value is not None:  # UTC: "YYYY-MM-DD HH:MM:SS.ffffff", zone cut off
                    row[key] = value.isoformat(" ", "microseconds")[:26]
        for key in documents:
            row[key] = dumps(row[key])  # None as JSON null, as the JSON type stores it
    plain = table(name, *(column(c.name) for c in real.columns))
    conn.execute(insert(plain), rows)


def _table(name: str) -> Table:
    models: dict[str, Any] = {
        "runs": Run, "run_steps": RunStep, "usage_records": UsageRecord, "outcomes": Outcome,
        "outcome_feedback": OutcomeFeedback, "approvals": Approval, "audit_events": AuditEvent,
        "audit_checkpoints": AuditCheckpoint, "audit_head": AuditHead,
        "integrity_findings": IntegrityFinding,
    }  # fmt: skip
    return cast(Table, models[name].__table__)


def build_store(url: str, home: Path, n_runs: int, seed: int) -> Store:
    started = time.perf_counter()
    settings = Settings(home=home, database_url=url, embedded_model_server=False, _env_file=None)
    platform = Platform(settings)  # migrates the schema
    builder = Builder(platform, n_runs, seed)
    people, agents = builder.people_and_agents()
    setup = time.perf_counter() - started
    builder.history(people, agents)
    print(
        f"  schema, demo org and agents {setup:.1f} s, history "
        f"{time.perf_counter() - started - setup:.1f} s",
        file=sys.stderr,
    )
    if platform.db.engine.dialect.name == "postgresql":
        with platform.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("ANALYZE"))
    tokens = {h: platform.accounts.issue_token(p.id, "api bench") for h, p in people.items()}
    rng = random.Random(seed + 1)
    runs_of = {h: rng.sample(ids, min(40, len(ids))) for h, ids in builder.sample.items()}
    everyone = [r for ids in builder.sample.values() for r in ids]
    runs_of["carol"] = rng.sample(everyone, min(40, len(everyone)))
    return Store(
        platform=platform, people=people, agents=agents, tokens=tokens, runs_of=runs_of,
        counts=builder.counts, seconds=time.perf_counter() - started,
    )  # fmt: skip


# ---- measuring -------------------------------------------------------------------------


@dataclass
class Target:
    group: str
    """baseline, api or page."""
    method: str
    path: str
    who: str
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    spent: float = 0.0
    problem: str | None = None
    """"not built" (404) or "error NNN"; the target is then dropped."""
    runs: Iterator[str] | None = None

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


def targets(only: str | None) -> list[Target]:
    out = [Target("baseline", m, p, w) for m, p, who in BASELINES for w in who]
    out += [Target("api", m, p, w) for m, p, who in API for w in who]
    out += [Target("page", "GET", p, w) for p, who in PAGES for w in who]
    if only:
        keep = [s.strip() for s in only.split(",") if s.strip()]
        out = [t for t in out if t.group == "baseline" or any(k in t.path for k in keep)]
    return out


def _clients(url: str, store: Store) -> dict[tuple[str, str], httpx.Client]:
    """(handle, api|page) -> a client: API calls with a token, pages with a session."""
    clients: dict[tuple[str, str], httpx.Client] = {}
    for handle in ("alice", "carol", "dave"):
        api = httpx.Client(base_url=url, timeout=120, follow_redirects=False)
        api.headers["Authorization"] = f"Bearer {store.tokens[handle]}"
        page = httpx.Client(base_url=url, timeout=120, follow_redirects=False)
        answer = page.post("/v1/auth/login", json={"handle": handle, "password": DEMO_PASSWORD})
        answer.raise_for_status()
        clients[(handle, "api")], clients[(handle, "page")] = api, page
    return clients


class CpuMeter:
    """CPU seconds of this process (server and client threads) and, on PostgreSQL, of the
    backends serving this database (``/proc/<pid>/schedstat``: nanoseconds on a CPU), so
    the CPU column means the same on both engines. Without access to the backends' /proc
    (a server on another host) only this process is counted."""

    def __init__(self, store: Store) -> None:
        engine = store.platform.db.engine
        self._pg = engine.dialect.name == "postgresql"
        # Its own connection: one taken from the app's pool would hide that backend.
        self._engine = create_engine(engine.url, poolclass=NullPool) if self._pg else engine
        self._pids: list[int] = []
        self.backends_counted = False

    def refresh(self) -> None:
        """Learn the backends' pids (the pool opens connections as it needs them)."""
        if not self._pg:
            return
        with self._engine.connect() as conn:
            pids = conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalars()
            self._pids = [int(p) for p in pids if Path(f"/proc/{p}/schedstat").exists()]
        self.backends_counted = self.backends_counted or bool(self._pids)

    def close(self) -> None:
        if self._pg:
            self._engine.dispose()

    def seconds(self) -> float:
        total = time.process_time()
        for pid in self._pids:
            with suppress(OSError, ValueError, IndexError):  # the backend may have ended
                total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
        return total


def _one(
    target: Target, client: httpx.Client, store: Store, meter: CpuMeter
) -> tuple[float, float, int, str]:
    path = target.path
    if "{run}" in path:
        if target.runs is None:
            target.runs = itertools.cycle(store.runs_of[target.who])
        path = path.replace("{run}", next(target.runs))
    body = None
    if target.method == "POST":
        agent = next(a for a in store.agents if a.owner.handle == target.who)
        body = {"agent": agent.name, "input": "benchmark run", "trigger": "api"}
    cpu0, t0 = meter.seconds(), time.perf_counter()
    answer = client.request(target.method, path, json=body)
    wall, cpu = time.perf_counter() - t0, meter.seconds() - cpu0
    return wall * 1000, cpu * 1000, answer.status_code, answer.text[:400]


def measure(
    store: Store, wanted: list[Target], requests: int, warmup: int, budget: float, seed: int
) -> tuple[list[Target], bool]:
    """The targets with their times; and whether PostgreSQL's CPU is in the CPU column."""
    app = create_app(store.platform, None)  # no worker: POST /v1/runs only queues
    meter = CpuMeter(store)
    # As `meshclaw serve` does after start-up; here it also keeps the store builder's
    # objects, which a server does not have, out of every full collection.
    gc.collect()
    gc.freeze()
    with LoopbackServer(app, name="api-bench") as server:
        clients = _clients(server.url, store)
        try:
            live = list(wanted)
            for _ in range(warmup):
                meter.refresh()
                for target in live:
                    kind = "page" if target.group == "page" else "api"
                    _, _, status, body = _one(target, clients[(target.who, kind)], store, meter)
                    expected = 202 if target.method == "POST" else 200
                    if status == 404 and target.group == "page":
                        target.problem = "not built"
                    elif status != expected:
                        target.problem = f"error {status}"
                        print(f"{target.label} as {target.who}: {status} {body}", file=sys.stderr)
                live = [t for t in live if t.problem is None]
            rng = random.Random(seed)
            while live:
                meter.refresh()
                rng.shuffle(live)
                for target in live:
                    kind = "page" if target.group == "page" else "api"
                    client = clients[(target.who, kind)]
                    wall, cpu, status, body = _one(target, client, store, meter)
                    if status >= 400:
                        target.problem = f"error {status}"
                        print(f"{target.label} as {target.who}: {status} {body}", file=sys.stderr)
                        continue
                    target.wall.append(wall)
                    target.cpu.append(cpu)
                    target.spent += wall / 1000
                live = [
                    t for t in live
                    if t.problem is None and len(t.wall) < requests
                    and not (t.spent > budget and len(t.wall) >= MIN_REQUESTS)
                ]  # fmt: skip
        finally:
            for open_client in clients.values():
                open_client.close()
            meter.close()
    return wanted, meter.backends_counted


# ---- reporting -------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered), math.ceil(q * len(ordered))) - 1)]


def result_table(results: list[Target]) -> list[str]:
    rows = [
        "| request | as | n | p50 ms | p95 ms | p99 ms | CPU p50 ms | CPU p99 ms | p99 < 200 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for t in results:
        if t.problem is not None:
            rows.append(f"| {t.label} | {t.who} | | | | | | | {t.problem} |")
            continue
        p99, cpu99 = pct(t.wall, 0.99), pct(t.cpu, 0.99)
        if t.group == "baseline":
            verdict = "baseline"
        elif p99 < TARGET_MS:
            verdict = "yes"
        else:  # on a shared machine a wall-clock p99 can be the scheduler's doing
            verdict = "**no**" if cpu99 >= TARGET_MS else "no (CPU p99 yes)"
        rows.append(
            f"| {t.label} | {t.who} | {len(t.wall)} | {statistics.median(t.wall):.1f} | "
            f"{pct(t.wall, 0.95):.1f} | {p99:.1f} | {statistics.median(t.cpu):.1f} | "
            f"{pct(t.cpu, 0.99):.1f} | {verdict} |"
        )
    return rows


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return host.processor() or host.machine()


def _commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{sha} (with local changes in src/)" if dirty else sha


@dataclass
class DbResult:
    name: str
    version: str
    store_counts: dict[str, int]
    build_seconds: float
    results: list[Target]
    load: tuple[float, float]
    db_cpu: bool
    """Whether the CPU column includes the database server's CPU (PostgreSQL backends)."""


def section(done: list[DbResult], args: argparse.Namespace) -> str:
    lines = [
        BEGIN,
        "Written by `benchmarks/api_bench.py --write`; edit the text outside this section.",
        "",
    ]
    for db in done:
        counts = ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in db.store_counts.items())
        pages = [t for t in db.results if t.group == "page" and t.problem is None]
        over = [t for t in pages if pct(t.wall, 0.99) >= TARGET_MS]
        cpu = "this process and the PostgreSQL backends" if db.db_cpu else "this process"
        lines += [
            f"### {db.name}",
            "",
            f"Store: {counts}; built in {db.build_seconds:.0f} s. Load average "
            f"{db.load[0]:.2f} before, {db.load[1]:.2f} after measuring. CPU: {cpu}.",
            "",
            *result_table(db.results),
            "",
            f"Pages measured: {len(pages)}; p99 < {TARGET_MS:.0f} ms: "
            f"{len(pages) - len(over)} of {len(pages)}"
            + (f" (over: {', '.join(f'{t.path} as {t.who}' for t in over)})." if over else "."),
            "",
        ]
    versions = {db.name: db.version for db in done}
    lines += [
        f"{args.requests} requests per row after {args.warmup} warm-up (fewer where a row "
        f"hit its {args.budget:.0f} s budget: at least {MIN_REQUESTS}), one at a time, rows "
        "interleaved in a shuffled order each round. `POST /v1/runs` only queues the run "
        "(no worker). CPU is the CPU time of the benchmark process (server and client "
        "threads), plus the PostgreSQL backends serving it where counted.",
        "",
        "| Machine | |",
        "|---|---|",
        f"| Date | {datetime.now(UTC):%Y-%m-%d %H:%M UTC} |",
        f"| CPU | {_cpu_model()} |",
        f"| Cores | {os.cpu_count()} |",
        f"| OS | {host.system()} {host.release()} |",
        f"| Python | {sys.version.split()[0]} |",
        f"| SQLite | {versions.get('SQLite', sqlite3.sqlite_version)} |",
        f"| PostgreSQL | {versions.get('PostgreSQL', 'not measured')} |",
        f"| MeshClaw | {_commit()} |",
        END,
    ]
    return "\n".join(lines)


def write_section(path: Path, text_: str) -> None:
    """Replace this script's marked section of ``path`` (nothing else), or append one."""
    doc = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    begin, end = doc.find(BEGIN), doc.find(END)
    if begin != -1 and end > begin:
        doc = doc[:begin] + text_ + doc[end + len(END) :]
    else:
        doc = doc.rstrip("\n") + "\n\n## API and dashboard latency (`benchmarks/api_bench.py`)\n\n"
        doc += text_ + "\n"
    path.write_text(doc, encoding="utf-8")


@contextmanager
def pg_database() -> Iterator[tuple[str, str] | None]:
    """A fresh PostgreSQL database (URL, server version), dropped afterwards; None if absent."""
    name = f"meshclaw_apibench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(
        PG_ADMIN, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with admin.connect() as conn:
            version = str(conn.execute(text("SHOW server_version")).scalar())
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        print(f"PostgreSQL skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
        admin.dispose()
        yield None
        return
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}", version.split()[0]
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run_one(name: str, url: str, version: str, home: Path, args: argparse.Namespace) -> DbResult:
    print(f"{name}: building a store with {args.runs:,} runs ...", file=sys.stderr, flush=True)
    store = build_store(url, home, args.runs, args.seed)
    print(f"{name}: built in {store.seconds:.1f} s: {store.counts}", file=sys.stderr, flush=True)
    try:
        before = os.getloadavg()[0]
        results, db_cpu = measure(
            store, targets(args.only), args.requests, args.warmup, args.budget, args.seed
        )
        after = os.getloadavg()[0]
    finally:
        store.platform.close()
    done = DbResult(name, version, store.counts, store.seconds, results, (before, after), db_cpu)
    print(f"\n{name}\n" + "\n".join(result_table(results)), flush=True)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000, help="runs in the store")
    parser.add_argument("--requests", type=int, default=200, help="measured requests per row")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up requests per row")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per row (soft)")
    parser.add_argument("--db", default="sqlite,postgresql", help="sqlite, postgresql or both")
    parser.add_argument("--only", help="comma-separated path fragments to measure (and baselines)")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--write", type=Path, help="replace this script's section in FILE")
    args = parser.parse_args(argv)
    wanted = [d.strip() for d in args.db.split(",")]
    done: list[DbResult] = []
    with tempfile.TemporaryDirectory(prefix="meshclaw-api-bench-") as tmp:
        if "sqlite" in wanted:
            home = Path(tmp) / "sqlite"
            url = f"sqlite:///{home / 'meshclaw.db'}"
            done.append(run_one("SQLite", url, sqlite3.sqlite_version, home, args))
        if "postgresql" in wanted:
            with pg_database() as pg:
                if pg is not None:
                    done.append(run_one("PostgreSQL", pg[0], pg[1], Path(tmp) / "pg", args))
    if args.write and done:
        write_section(args.write, section(done, args))
        print(f"wrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
