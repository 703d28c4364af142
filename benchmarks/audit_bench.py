"""Audit log: append throughput (SQLite, PostgreSQL) and ``audit verify`` time for N records.

Append: single-record transactions through ``StoreAuditSink`` (head lock, RFC 8785
canonicalisation, leaf hash, frontier update, a signed checkpoint every 1,000 records),
against a baseline measured in the same run: the unhashed insert the sink did before the
log was hashed. Verify: a log of N records is synthesised with the real hashing code
(bulk inserts, not timed), then ``AuditLog.verify`` recomputes everything and is timed.
Proofs: a log of N records with its tiles (as the sink writes them) is synthesised, then
inclusion and consistency proofs at random places are built as ``AuditLog`` builds them
(one query: every tile and edge-leaf range planned first) and, for comparison, reading
each range as it is reached (one query per range, as before); time, queries and rows.

    .venv/bin/python benchmarks/audit_bench.py                      # prints only
    .venv/bin/python benchmarks/audit_bench.py --verify-n 1000000   # the issue's 1 M target
    .venv/bin/python benchmarks/audit_bench.py --proofs-only --proof-n 10000000
    .venv/bin/python benchmarks/audit_bench.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform as host
import random
import resource
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, insert, text
from sqlalchemy.orm import Session

from meshclaw.accounts.service import Caller
from meshclaw.audit import tiles
from meshclaw.audit.canonical import Body, Header, body_hash, format_ts, header_json, new_salt
from meshclaw.audit.checkpoint import Checkpoint
from meshclaw.audit.log import AuditLog
from meshclaw.audit.merkle import (
    TILE,
    TILE_HEIGHT,
    Frontier,
    consistency_path,
    hash_leaf,
    inclusion_path,
    verify_consistency,
    verify_inclusion,
)
from meshclaw.audit.models import AuditCheckpoint, AuditHead
from meshclaw.audit.signing import Checkpointer
from meshclaw.audit.sink import AuditRecord, StoreAuditSink
from meshclaw.audit.tiles import store_tile
from meshclaw.clock import utcnow
from meshclaw.config import ProviderConfig, Settings
from meshclaw.ids import new_id
from meshclaw.platform import Platform
from meshclaw.spec.loader import parse_spec
from meshclaw.store.db import Database, migrate
from meshclaw.store.models import AuditEvent

MARK_BEGIN, MARK_END = "<!-- audit:begin -->", "<!-- audit:end -->"
PG_ADMIN = os.environ.get(
    "MESHCLAW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def record(i: int) -> AuditRecord:
    return AuditRecord(
        action="model.invoke",
        resource="model:scripted/test-model",
        outcome="ok",
        org_id="org_bench",
        actor_user_id=f"usr_{i % 50}",
        actor_agent_id=f"agt_{i % 7}",
        details={
            "run_id": f"run_{i // 20}",
            "step": i % 20,
            "input_tokens": 812,
            "output_tokens": 64,
            "cost_nano_usd": 1_234_000,
        },
    )


def checkpointer(home: Path) -> Checkpointer:
    return Checkpointer(key_path=home / "bench.key", origin="meshclaw/bench", every=1000)


def append_hashed(db: Database, sink: StoreAuditSink, n: int, offset: int = 0) -> None:
    for i in range(offset, offset + n):
        with db.session() as session:
            sink.append(session, record(i))


def append_plain(db: Database, n: int, offset: int = 0) -> None:
    """What the sink did before the log was hashed: one unlocked, unhashed insert."""
    for i in range(offset, offset + n):
        r = record(i)
        with db.session() as session:
            session.add(
                AuditEvent(
                    seq=10_000_000 + i,
                    id=new_id("aud"),
                    org_id=r.org_id,
                    actor_user_id=r.actor_user_id,
                    actor_agent_id=r.actor_agent_id,
                    action=r.action,
                    resource=r.resource,
                    outcome=r.outcome,
                    details=r.details,
                    body_sha256="",
                    leaf_hash="",
                )
            )


def append_bare(db: Database, n: int, offset: int = 0) -> None:
    """The cheapest possible record: one Core insert, no lock, no hashing."""
    table = AuditEvent.__table__
    for i in range(offset, offset + n):
        r = record(i)
        with db.session() as session:
            session.connection().execute(
                table.insert(),  # type: ignore[attr-defined]
                {
                    "seq": 20_000_000 + i,
                    "id": new_id("aud"),
                    "ts": utcnow(),
                    "org_id": r.org_id,
                    "actor_user_id": r.actor_user_id,
                    "actor_agent_id": r.actor_agent_id,
                    "action": r.action,
                    "resource": r.resource,
                    "outcome": r.outcome,
                    "details": r.details,
                    "salt": None,
                    "body_sha256": "",
                    "leaf_hash": "",
                    "redacted_at": None,
                },
            )


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and of the children it waited for)."""
    start, cpu, kids = time.perf_counter(), time.process_time(), _children_cpu()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu + _children_cpu() - kids


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_append(url: str, home: Path, n: int, rounds: int) -> dict[str, dict[str, float]]:
    """Records/s (wall) and CPU µs/record of the three variants, medians of ``rounds``."""
    migrate(url)
    db = Database(url)
    sink = StoreAuditSink(checkpointer=checkpointer(home))
    variants: dict[str, Callable[[int], None]] = {
        "hashed": lambda off: append_hashed(db, sink, n, off),
        "old sink": lambda off: append_plain(db, n, off),
        "bare insert": lambda off: append_bare(db, n, off),
    }
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    try:
        append_hashed(db, sink, 50)  # warm-up (creates the key)
        for r in range(rounds):  # alternate, so drift hits all alike
            for name, fn in variants.items():
                samples[name].append(timed(partial(fn, r * n)))
    finally:
        db.dispose()
    return {
        name: {
            "rate": n / statistics.median(w for w, _ in got),
            "cpu_us": statistics.median(c for _, c in got) / n * 1e6,
        }
        for name, got in samples.items()
    }


def bench_parallel(url: str, home: Path, writers: int, per_writer: int) -> float:
    migrate(url)
    db = Database(url)
    sink = StoreAuditSink(checkpointer=checkpointer(home))
    barrier = threading.Barrier(writers + 1)

    def work(w: int) -> None:
        barrier.wait()
        append_hashed(db, sink, per_writer, w * per_writer)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    db.dispose()
    return writers * per_writer / elapsed


def synthesise(url: str, home: Path, n: int) -> Checkpointer:
    """N records hashed exactly as the sink hashes them, bulk-inserted (not timed)."""
    migrate(url)
    cp = checkpointer(home)
    db = Database(url)
    frontier = Frontier()
    try:
        chunk: list[dict[str, Any]] = []
        notes: list[dict[str, Any]] = []
        base = utcnow() - timedelta(days=1)
        with db.session() as session:
            for seq in range(1, n + 1):
                r = record(seq)
                ts = base + timedelta(microseconds=seq * 50)
                salt = new_salt()
                digest = body_hash(
                    Body(
                        actor_user_id=r.actor_user_id,
                        actor_agent_id=r.actor_agent_id,
                        resource=r.resource,
                        details=r.details,
                        salt=salt,
                    )
                )
                eid = f"aud_{seq:026d}"
                leaf = Header(
                    seq=seq,
                    id=eid,
                    ts=format_ts(ts),
                    org_id=r.org_id,
                    action=r.action,
                    outcome=r.outcome,
                    body_sha256=digest,
                ).leaf_hash()
                tile = frontier.append(leaf)
                if tile is not None:  # as the sink does: the tiles it completes are kept
                    store_tile(session.connection(), seq, tile)
                chunk.append(
                    {
                        "seq": seq,
                        "id": eid,
                        "ts": ts,
                        "org_id": r.org_id,
                        "actor_user_id": r.actor_user_id,
                        "actor_agent_id": r.actor_agent_id,
                        "action": r.action,
                        "resource": r.resource,
                        "outcome": r.outcome,
                        "details": r.details,
                        "salt": salt,
                        "body_sha256": digest,
                        "leaf_hash": leaf.hex(),
                    }
                )
                if seq % cp.every == 0 or seq == n:
                    note = cp.signer.sign(
                        Checkpoint(origin=cp.origin, size=seq, root=frontier.root())
                    )
                    notes.append(
                        {
                            "size": seq,
                            "root_hash": frontier.root().hex(),
                            "origin": cp.origin,
                            "key_id": cp.signer.verifier.key_id.hex(),
                            "note": note,
                            "created_at": utcnow(),
                        }
                    )
                if len(chunk) == 10_000 or seq == n:
                    session.execute(insert(AuditEvent), chunk)
                    chunk = []
            session.execute(insert(AuditCheckpoint), notes)
            session.execute(
                text("UPDATE audit_head SET size=:s, frontier=:f, root=:r WHERE id=1"),
                {"s": n, "f": json.dumps(frontier.to_hex()), "r": frontier.root().hex()},
            )
        with db.session() as session:
            head = session.get(AuditHead, 1)
            assert head is not None and head.size == n
    finally:
        db.dispose()
    return cp


def bench_verify(url: str, home: Path, n: int, workers: int) -> dict[str, float]:
    """Wall and CPU seconds of ``AuditLog.verify`` over ``n`` records: one pass, then
    ``workers`` processes (CPU includes the worker processes')."""
    cp = synthesise(url, home, n)
    db = Database(url)
    out: dict[str, float] = {}
    try:
        for label, count in (("serial", 1), ("parallel", workers)):
            log = AuditLog(db, StoreAuditSink(), cp)
            result: list[Any] = []
            kids = _children_cpu()
            wall, cpu = timed(partial(_verify_into, log, count, result))
            out[f"{label}_workers_cpu"] = _children_cpu() - kids
            report = result[0]
            if not report.ok or report.records != n:
                raise SystemExit(f"verify failed on the synthesised log: {report.problem}")
            out[f"{label}_wall"], out[f"{label}_cpu"] = wall, cpu
            out["checkpoints"] = report.checkpoints
    finally:
        db.dispose()
    return out


def _verify_into(log: AuditLog, workers: int, result: list[Any]) -> None:
    result.append(log.verify(workers=workers))


# -- proofs: one query each, whatever the log's size ------------------------------------


def synthesise_tiled(url: str, home: Path, n: int) -> list[tuple[int, bytes]]:
    """N records with their tiles and a checkpoint every 1,000, as the sink writes them,
    but sharing one body (only headers are hashed one by one: 10 M records in minutes).
    Returns the signed (size, root)s."""
    migrate(url)
    cp = checkpointer(home)
    db = Database(url)
    frontier = Frontier()
    signed: list[tuple[int, bytes]] = []
    r = record(0)
    salt = new_salt()
    digest = body_hash(
        Body(
            actor_user_id=r.actor_user_id,
            actor_agent_id=r.actor_agent_id,
            resource=r.resource,
            details=r.details,
            salt=salt,
        )
    )
    base = utcnow() - timedelta(days=30)
    try:
        with db.session() as session:
            conn = session.connection()
            rows: list[dict[str, Any]] = []
            notes: list[dict[str, Any]] = []
            for seq in range(1, n + 1):
                ts = base + timedelta(microseconds=seq * 50)
                eid = f"aud_{seq:026d}"
                # System records (no org): any auditor may prove them.
                leaf = hash_leaf(header_json(seq, eid, format_ts(ts), None, r.action, "ok", digest))
                if (tile := frontier.append(leaf)) is not None:
                    store_tile(conn, seq, tile)
                rows.append(
                    {
                        "seq": seq,
                        "id": eid,
                        "ts": ts,
                        "org_id": None,
                        "actor_user_id": r.actor_user_id,
                        "actor_agent_id": r.actor_agent_id,
                        "action": r.action,
                        "resource": r.resource,
                        "outcome": "ok",
                        "details": r.details,
                        "salt": salt,
                        "body_sha256": digest,
                        "leaf_hash": leaf.hex(),
                    }
                )
                if seq % cp.every == 0 or seq == n:
                    root = frontier.root()
                    signed.append((seq, root))
                    notes.append(
                        {
                            "size": seq,
                            "root_hash": root.hex(),
                            "origin": cp.origin,
                            "key_id": cp.signer.verifier.key_id.hex(),
                            "note": cp.signer.sign(
                                Checkpoint(origin=cp.origin, size=seq, root=root)
                            ),
                            "created_at": utcnow(),
                        }
                    )
                if len(rows) == 10_000 or seq == n:
                    session.execute(insert(AuditEvent), rows)
                    rows = []
            for start in range(0, len(notes), 5_000):
                session.execute(insert(AuditCheckpoint), notes[start : start + 5_000])
            session.execute(
                text("UPDATE audit_head SET size=:s, frontier=:f, root=:r WHERE id=1"),
                {"s": n, "f": json.dumps(frontier.to_hex()), "r": frontier.root().hex()},
            )
    finally:
        db.dispose()
    return signed


def bench_proofs(url: str, home: Path, n: int, samples: int) -> dict[str, dict[str, float]]:
    """Per proof kind and way of reading: median and p95 ms, queries and rows (max)."""
    signed = synthesise_tiled(url, home, n)
    roots = dict(signed)
    sizes = [size for size, _ in signed[:-1]]
    rng = random.Random(6)
    # The same proofs both ways, against the whole signed log: at the edges (the first and
    # last leaf; the first and last signed size) and at random places.
    places = {
        "inclusion": [0, n - 1, *(rng.randrange(n) for _ in range(samples - 2))],
        "consistency": [sizes[0], sizes[-1], *(rng.choice(sizes) for _ in range(samples - 2))],
    }
    db = Database(url)
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    out: dict[str, dict[str, float]] = {}
    try:
        for kind, where in places.items():
            got: dict[str, list[tuple[float, int, int]]] = {"one query": [], "lazy": []}
            for i, at in enumerate(where):
                compute = partial(
                    inclusion_path if kind == "inclusion" else consistency_path, at, n
                )
                results: dict[str, list[bytes]] = {}
                for way in ("one query", "lazy") if i % 2 else ("lazy", "one query"):  # ABBA
                    with db.session() as session:
                        tree = tiles.tree(session)
                        session.connection()  # not the proof's: the session's own setup
                        statements.clear()
                        start = time.perf_counter()
                        proof = tree.run(compute) if way == "one query" else compute(tree.subtree)
                        elapsed = time.perf_counter() - start
                        rows = sum(last - first for _, first, last in tree.last_reads)
                        got[way].append((elapsed, len(statements), rows))
                        results[way] = proof
                if results["one query"] != results["lazy"]:
                    raise SystemExit(f"{kind} proof at {at}: the two ways differ")
                if not _verifies(kind, at, n, results["one query"], roots, db):
                    raise SystemExit(f"{kind} proof at {at} does not verify against the roots")
            for way, samples_ in got.items():
                times = sorted(t for t, _, _ in samples_)
                out[f"{kind} {way}"] = {
                    "median_ms": statistics.median(times) * 1000,
                    "p95_ms": times[max(0, round(len(times) * 0.95) - 1)] * 1000,
                    "queries": max(q for _, q, _ in samples_),
                    "rows_median": statistics.median(r for _, _, r in samples_),
                    "rows_max": max(r for _, _, r in samples_),
                }
    finally:
        db.dispose()
    return out


def _verifies(
    kind: str, at: int, n: int, proof: list[bytes], roots: dict[int, bytes], db: Database
) -> bool:
    """The proof checked against the signed roots (not timed)."""
    if kind == "consistency":
        return verify_consistency(at, n, roots[at], roots[n], proof)
    with db.session() as session:
        leaf = session.scalar(
            text("SELECT leaf_hash FROM audit_events WHERE seq = :s"), {"s": at + 1}
        )
    return verify_inclusion(at, n, bytes.fromhex(str(leaf)), proof, roots[n])


def _proof_rows(engine: str, n: int, got: dict[str, dict[str, float]]) -> list[list[str]]:
    levels = max(0, (n.bit_length() - 1) // TILE_HEIGHT)
    rows = []
    for kind in ("inclusion", "consistency"):
        one, lazy = got[f"{kind} one query"], got[f"{kind} lazy"]
        rows.append(
            [
                f"{engine}, {n:,} records ({levels} tile level{'s' if levels != 1 else ''}), "
                f"{kind}",
                f"{one['median_ms']:.1f} / {one['p95_ms']:.1f}",
                f"{one['queries']:.0f}",
                f"{one['rows_median']:,.0f} / {one['rows_max']:,.0f}",
                f"{lazy['median_ms']:.1f} / {lazy['p95_ms']:.1f}",
                f"{lazy['queries']:.0f}",
            ]
        )
    return rows


PROOF_HEADERS = [
    "proofs (one log, random places)",
    "one query: ms median / p95",
    "queries",
    "rows median / max",
    "a query per range: ms median / p95",
    "queries (max)",
]


# -- the audit write's share of one agent step ------------------------------------------

STEP_ZONES = (
    "UTC",
    "Europe/Paris",
    "Asia/Tokyo",
    "America/New_York",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Australia/Sydney",
    "Africa/Cairo",
    "America/Chicago",
)
STEP_SPEC = """\
name: bench
owner: bench
model: {provider: scripted, model: bench-model}
instructions: Tell the time.
tools:
  - {name: clock.now, scope: read}
budget: {max_steps: 30, timeout_seconds: 120}
"""


class PlainSink:
    """The sink before the log was hashed: one unhashed insert, autoincrement seq."""

    def append(self, session: Session, record: AuditRecord) -> None:
        session.add(
            AuditEvent(
                id=new_id("aud"),
                org_id=record.org_id,
                actor_user_id=record.actor_user_id,
                actor_agent_id=record.actor_agent_id,
                action=record.action,
                resource=record.resource,
                outcome=record.outcome,
                details=record.details,
                body_sha256="",
                leaf_hash="",
            )
        )


class NoSink:
    """No audit write at all: the step the issue's "< 5% of the step" is measured against."""

    def append(self, session: Session, record: AuditRecord) -> None:
        return None


def step_platform(home: Path, base_url: str) -> tuple[Platform, Caller]:
    platform = Platform(
        Settings(
            home=home,
            embedded_model_server=False,
            providers={"scripted": ProviderConfig(base_url=base_url)},
        )
    )
    org = platform.accounts.create_org("bench")
    user = platform.accounts.create_user(org.id, "bench")
    caller = platform.accounts.caller_for(user)
    platform.agents.save(caller, parse_spec(STEP_SPEC))
    return platform, caller


async def one_conversation(platform: Platform, caller: Caller, gateway: Any) -> tuple[float, float]:
    """(wall, CPU) seconds per step; CPU is the whole process (the model server too)."""
    info = platform.runs.create(caller, "bench", "what time is it?")
    assert platform.runs.claim(info.id)
    start, cpu = time.perf_counter(), time.process_time()
    await platform.executor(gateway).execute(info.id)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    done = platform.runs.get(caller, info.id)
    if done.status != "succeeded":
        raise SystemExit(f"bench run failed: {done.error}")
    steps = len(STEP_ZONES) + 1
    return elapsed / steps, cpu / steps


def bench_step(home: Path, reps: int) -> dict[str, float]:
    from meshclaw.providers.scripted import ScriptedServer, load_script

    turns: list[dict[str, Any]] = [
        {"reply": {"tool_calls": [{"name": "clock.now", "arguments": {"tz": z}}]}}
        for z in STEP_ZONES
    ]
    turns.append({"reply": {"content": "done"}})
    server = ScriptedServer(load_script(json.dumps({"models": ["bench-model"], "turns": turns})))
    server.start()
    try:
        variants = {
            name: step_platform(home / name, server.base_url)
            for name in ("hashed", "plain", "none")
        }
        # Every service of a baseline platform appends through its sink: the old unhashed
        # insert ("plain"), or nothing at all ("none", what the step costs without an audit).
        for name, sink in (("plain", PlainSink()), ("none", NoSink())):
            platform = variants[name][0]
            platform.audit = sink  # type: ignore[assignment]
            for service in (platform.accounts, platform.agents, platform.runs):
                service._audit = sink

        async def run_all() -> dict[str, list[tuple[float, float]]]:
            out: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
            gateways = {name: p.build_gateway() for name, (p, _) in variants.items()}
            names = list(variants)
            try:
                for i in range(reps + 2):
                    # Each round starts with a different variant, so none always runs first.
                    for name in names[i % 3 :] + names[: i % 3]:
                        platform, caller = variants[name]
                        t = await one_conversation(platform, caller, gateways[name])
                        if i >= 2:  # two warm-up rounds
                            out[name].append(t)
            finally:
                for gateway in gateways.values():
                    await gateway.aclose()
            return out

        samples = asyncio.run(run_all())
        for platform, _ in variants.values():
            platform.close()
    finally:
        server.stop()

    def med(name: str, i: int) -> float:
        return statistics.median(x[i] for x in samples[name])

    h, p, n = med("hashed", 0), med("plain", 0), med("none", 0)
    h_cpu, p_cpu, n_cpu = med("hashed", 1), med("plain", 1), med("none", 1)
    return {
        "hashed_ms": h * 1000,
        "plain_ms": p * 1000,
        "none_ms": n * 1000,
        "overhead": h / n - 1,
        "hashing_overhead": h / p - 1,
        "hashed_cpu_ms": h_cpu * 1000,
        "plain_cpu_ms": p_cpu * 1000,
        "none_cpu_ms": n_cpu * 1000,
        "cpu_overhead": h_cpu / n_cpu - 1,
    }


class PgDatabase:
    """A throwaway PostgreSQL database, or None when the server is not there."""

    def __init__(self) -> None:
        self.name = f"meshclaw_bench_{uuid.uuid4().hex[:10]}"
        self.admin = create_engine(
            PG_ADMIN, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
        )

    def __enter__(self) -> str | None:
        try:
            with self.admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        except Exception:
            return None
        return PG_ADMIN.rsplit("/", 1)[0] + f"/{self.name}"

    def __exit__(self, *exc: object) -> None:
        try:
            with self.admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        except Exception:
            pass
        self.admin.dispose()


def _append_row(label: str, got: dict[str, dict[str, float]]) -> list[str]:
    h, old, bare = got["hashed"], got["old sink"], got["bare insert"]
    return [
        label,
        f"{h['rate']:,.0f}",
        f"{old['rate']:,.0f}",
        f"{bare['rate']:,.0f}",
        f"{h['cpu_us']:,.0f}",
        f"{bare['cpu_us']:,.0f}",
        f"{h['cpu_us'] - bare['cpu_us']:+,.0f}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--append-n", type=int, default=2000, help="records per append round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per variant")
    parser.add_argument("--writers", type=int, default=8, help="parallel writers (PostgreSQL)")
    parser.add_argument("--verify-n", type=int, default=100_000, help="records to verify")
    parser.add_argument("--step-reps", type=int, default=20, help="conversations per variant")
    parser.add_argument(
        "--verify-workers", type=int, default=os.cpu_count() or 1, help="processes for verify"
    )
    parser.add_argument("--proof-n", type=int, default=1_000_000, help="log size for proofs")
    parser.add_argument(
        "--proof-pg-n",
        type=int,
        default=1_000_000,
        help="log size for proofs on PostgreSQL (0: skip)",
    )
    parser.add_argument("--proof-samples", type=int, default=200, help="proofs per kind and way")
    parser.add_argument("--verify-only", action="store_true", help="only verify")
    parser.add_argument("--proofs-only", action="store_true", help="only proofs")
    parser.add_argument("--write", type=Path, metavar="FILE", help="rewrite FILE's audit section")
    args = parser.parse_args(argv)
    if (args.verify_only or args.proofs_only) and args.write:
        parser.error("--write needs every measurement (drop --verify-only/--proofs-only)")
    if args.verify_only and args.proofs_only:
        parser.error("--verify-only and --proofs-only exclude each other")
    if args.proof_n < 2_000 or 0 < args.proof_pg_n < 2_000:
        parser.error("proof logs need at least 2,000 records (two signed sizes)")

    load_before = os.getloadavg()[0]
    rows: list[list[str]] = []
    lines: list[str] = []
    step: dict[str, float] = {}
    ver: dict[str, float] = {}
    proof_rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        if not (args.verify_only or args.proofs_only):
            sq = bench_append(f"sqlite:///{home / 'append.db'}", home, args.append_n, args.rounds)
            rows.append(_append_row("SQLite, 1 writer", sq))
            with PgDatabase() as pg:
                if pg is None:
                    lines.append("PostgreSQL not reachable: its rows are missing.")
                else:
                    rows.append(
                        _append_row(
                            "PostgreSQL, 1 writer", bench_append(pg, home, args.append_n // 2, 3)
                        )
                    )
            with PgDatabase() as pg:
                if pg is not None:
                    par = bench_parallel(pg, home, args.writers, args.append_n // args.writers)
                    rows.append(
                        [f"PostgreSQL, {args.writers} writers", f"{par:,.0f}", "", "", "", "", ""]
                    )
            step = bench_step(home, args.step_reps)
        if not args.proofs_only:
            ver = bench_verify(
                f"sqlite:///{home / 'verify.db'}", home, args.verify_n, args.verify_workers
            )
        if not args.verify_only:
            got = bench_proofs(
                f"sqlite:///{home / 'proofs.db'}", home, args.proof_n, args.proof_samples
            )
            proof_rows += _proof_rows("SQLite", args.proof_n, got)
            with PgDatabase() as pg:
                if pg is not None and args.proof_pg_n:
                    got = bench_proofs(pg, home, args.proof_pg_n, args.proof_samples)
                    proof_rows += _proof_rows("PostgreSQL", args.proof_pg_n, got)
    load = max(load_before, os.getloadavg()[0])
    scale = 1_000_000 / args.verify_n
    headers = [
        "append (single-record transactions)",
        "hashed rec/s",
        "old sink rec/s",
        "bare insert rec/s",
        "hashed CPU µs/rec",
        "bare CPU µs/rec",
        "CPU added µs/rec",
    ]
    if step:
        lines.append(
            f"One agent step (model turn + its tool call, SQLite, median of {args.step_reps} "
            f"{len(STEP_ZONES) + 1}-step conversations per variant, rotating order): hashed "
            f"log {step['hashed_ms']:.2f} ms wall / {step['hashed_cpu_ms']:.2f} ms CPU, no "
            f"audit write {step['none_ms']:.2f} ms wall / {step['none_cpu_ms']:.2f} ms CPU: "
            f"the audit write adds **{step['overhead'] * 100:+.1f}% wall, "
            f"{step['cpu_overhead'] * 100:+.1f}% CPU** per step (target < 5%). Against the "
            f"old unhashed insert ({step['plain_ms']:.2f} ms wall, {step['plain_cpu_ms']:.2f} "
            f"ms CPU) hashing adds {step['hashing_overhead'] * 100:+.1f}% wall."
        )
    if ver:
        lines.append(
            f"`audit verify` (SQLite) of {args.verify_n:,} records and {ver['checkpoints']:.0f} "
            f"checkpoints: one pass **{ver['serial_wall']:.1f} s wall, {ver['serial_cpu']:.1f} s "
            f"CPU**; {args.verify_workers} processes **{ver['parallel_wall']:.1f} s wall, "
            f"{ver['parallel_cpu']:.1f} s CPU** (all processes; "
            f"{ver['parallel_workers_cpu']:.1f} s in the workers), "
            f"{ver['serial_wall'] / ver['parallel_wall']:.2f} times faster (wall)"
            + (
                ""
                if scale == 1
                else f"; linear extrapolation to 1,000,000 records: one pass "
                f"{ver['serial_wall'] * scale:.0f} s wall, {args.verify_workers} processes "
                f"{ver['parallel_wall'] * scale:.0f} s wall"
            )
            + " (target < 30 s)."
        )
    if proof_rows:
        lines.append(
            f"Proofs: {args.proof_samples} of each kind per log, at the edges and at random "
            "places, against the whole log; *one query*: as `AuditLog` builds them (every "
            "tile and edge-leaf range planned first, then read at once); *a query per "
            "range*: each range read as it is reached (as before). Rows: tile roots plus "
            f"leaf hashes read (fewer than {2 * TILE} per level). Each proof is checked "
            "against the signed roots."
        )
    lines += [
        f"Load average during the run: {load:.1f} on {os.cpu_count()} CPUs"
        + (
            " — the machine was shared, so wall times are inflated and CPU times are the "
            "figures to compare."
            if load > (os.cpu_count() or 1)
            else "."
        ),
    ]
    tables: list[str] = []
    for heads, body in ((headers, rows), (PROOF_HEADERS, proof_rows)):
        if body:
            tables += [
                "| " + " | ".join(heads) + " |",
                "|---|" + "---:|" * (len(heads) - 1),
                *("| " + " | ".join(r) + " |" for r in body),
                "",
            ]
    for line in tables + lines:
        print(line)
    if args.write:
        section = (
            "\n".join(
                [
                    MARK_BEGIN,
                    "Written by `benchmarks/audit_bench.py --write`; "
                    "edit the text outside this section.",
                    "",
                    f"Append: {args.append_n:,} single-record transactions per round and "
                    f"variant, {args.rounds} alternating rounds, medians. *Old sink*: the ORM "
                    "insert the sink did before the log was hashed; *bare insert*: one Core "
                    "insert, no lock, no hashing.",
                    "",
                    *tables,
                    *(f"{line}  " for line in lines),
                    "",
                    f"Machine: {host.machine()}, {os.cpu_count()} CPUs, Python "
                    f"{host.python_version()}, {host.system()}, "
                    f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
                    MARK_END,
                ]
            )
            + "\n"
        )
        write_section(args.write, section)
        print(f"wrote {args.write}")
    return 0


def write_section(path: Path, section: str) -> None:
    """Replace this script's marked section of ``path`` (nothing else), or append one."""
    text_ = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    begin, end = text_.find(MARK_BEGIN), text_.find(MARK_END)
    if begin != -1 and end > begin:
        text_ = text_[:begin] + section.rstrip("\n") + text_[end + len(MARK_END) :]
    else:
        text_ = text_.rstrip("\n") + "\n\n" + section
    path.write_text(text_, encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
