"""Randomised tamper trials on a 10,000-record log: each one detected, at the right place.

The log is built once through the real sink (SQLite, checkpoint every 1,000 records);
each trial copies the database file, tampers with it the way someone with write access
to the database would (plain SQL, bypassing MeshClaw), and runs the store verifier.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshclaw.audit.canonical import Body, Header, body_hash
from meshclaw.audit.checkpoint import Checkpoint, Signer
from meshclaw.audit.log import AuditLog
from meshclaw.audit.sink import StoreAuditSink
from meshclaw.audit.verify import Report
from meshclaw.store.db import Database
from tests.audit.conftest import AuditWorld, append_many

N = 10_000
EVERY = 1_000
TRIALS_PER_KIND = 6
TEXT_COLUMNS = (
    "id",
    "action",
    "resource",
    "outcome",
    "actor_user_id",
    "actor_agent_id",
    "details",
    "body_sha256",
    "leaf_hash",
)


def _flip(value: str, rng: random.Random) -> str:
    i = rng.randrange(len(value))
    return value[:i] + chr(ord(value[i]) ^ 1) + value[i + 1 :]


class Trial:
    def __init__(self, source: Path, workdir: Path, log: AuditLog, n: int) -> None:
        self.source, self.workdir, self.n = source, workdir, n
        self.checkpointer = log._checkpointer
        self.count = 0

    def run(self, tamper: Callable[[sqlite3.Connection], None]) -> Report:
        self.count += 1
        copy = self.workdir / f"trial{self.count}.db"
        shutil.copy(self.source, copy)
        con = sqlite3.connect(copy)
        with con:
            tamper(con)
        con.close()
        db = Database(f"sqlite:///{copy}")
        try:
            log = AuditLog(db, StoreAuditSink(), self.checkpointer)
            return log.verify()
        finally:
            db.dispose()
            copy.unlink()


@pytest.mark.slow
@pytest.mark.sqlite_only  # tampers with the database file's copies
def test_every_tampering_is_detected_at_the_right_place(
    audit_world: Callable[..., AuditWorld], tmp_path: Path
) -> None:
    world = audit_world(checkpoint_every=EVERY)
    size0 = world.log.head()[0]  # the accounts setup already wrote a few records
    append_many(world.platform, N - size0, batch=1000)
    assert world.log.head()[0] == N
    clean = world.log.verify()
    assert clean.ok and clean.records == N and clean.checkpoints == N // EVERY
    source = tmp_path / "var" / "meshclaw.db"
    world.platform.db.dispose()
    rng = random.Random(20261127)
    trial = Trial(source, tmp_path, world.log, N)
    detected: Counter[str] = Counter()

    for _ in range(TRIALS_PER_KIND):
        # 1. flip one byte of one stored field
        seq, column = rng.randint(1, N), rng.choice(TEXT_COLUMNS)
        report = trial.run(partial(_flip_field, seq=seq, column=column, rng=rng))
        assert not report.ok and report.problem is not None
        assert report.problem.seq == seq, (column, report.problem)
        detected["flip a byte"] += 1

        # 2. delete one record
        gone = rng.randint(1, N)
        report = trial.run(partial(_delete, seq=gone))
        assert not report.ok and report.problem is not None
        assert report.problem.seq == gone, report.problem
        detected["delete a record"] += 1

        # 3. swap two records' positions
        a, b = sorted(rng.sample(range(1, N + 1), 2))
        report = trial.run(partial(_swap, a=a, b=b))
        assert not report.ok and report.problem is not None
        assert report.problem.seq == a, report.problem
        detected["reorder two"] += 1

        # 4. truncate the tail (and fix the head row to match, as a careful attacker would)
        keep = rng.randint(1, N - 1)
        report = trial.run(partial(_truncate, keep=keep))
        assert not report.ok and report.problem is not None
        assert report.problem.kind == "truncated" and report.problem.seq == keep + 1
        detected["truncate"] += 1

        # 5. replace a checkpoint: a forged root signed with another key, or another
        #    size's genuine note filed in its place
        size = rng.randrange(EVERY, N + 1, EVERY)
        report = trial.run(partial(_replace_checkpoint, size=size, rng=rng))
        assert not report.ok and report.problem is not None
        assert report.problem.checkpoint_size == size, report.problem
        detected["replace a checkpoint"] += 1

        # 6. alter a record and re-hash it (and the head): only the signed root catches it
        victim = rng.randint(1, N)
        report = trial.run(partial(_alter_and_rehash, seq=victim))
        assert not report.ok and report.problem is not None and report.problem.range
        low, high = report.problem.range
        assert low <= victim <= high and high - low < EVERY, report.problem
        detected["alter and re-hash"] += 1

    total = sum(detected.values())
    print(f"\ntamper trials on a {N}-record log: {total}/{trial.count} detected at the right place")
    for kind, count in detected.items():
        print(f"  {kind}: {count}")
    assert total == trial.count == 6 * TRIALS_PER_KIND


def _sqlite_ts(stored: str) -> str:
    from datetime import datetime

    from meshclaw.audit.canonical import format_ts
    from meshclaw.clock import as_utc

    return format_ts(as_utc(datetime.fromisoformat(stored)))


def _flip_field(con: sqlite3.Connection, *, seq: int, column: str, rng: random.Random) -> None:
    (value,) = con.execute(f"SELECT {column} FROM audit_events WHERE seq=?", (seq,)).fetchone()
    con.execute(f"UPDATE audit_events SET {column}=? WHERE seq=?", (_flip(value, rng), seq))


def _delete(con: sqlite3.Connection, *, seq: int) -> None:
    con.execute("DELETE FROM audit_events WHERE seq=?", (seq,))


def _swap(con: sqlite3.Connection, *, a: int, b: int) -> None:
    con.execute("UPDATE audit_events SET seq=-1 WHERE seq=?", (a,))
    con.execute("UPDATE audit_events SET seq=? WHERE seq=?", (a, b))
    con.execute("UPDATE audit_events SET seq=? WHERE seq=-1", (b,))


def _truncate(con: sqlite3.Connection, *, keep: int) -> None:
    con.execute("DELETE FROM audit_events WHERE seq>?", (keep,))
    con.execute("UPDATE audit_head SET size=?", (keep,))


def _replace_checkpoint(con: sqlite3.Connection, *, size: int, rng: random.Random) -> None:
    if rng.random() < 0.5:
        note = Signer("meshclaw/audit", Ed25519PrivateKey.generate()).sign(
            Checkpoint(origin="meshclaw/audit", size=size, root=rng.randbytes(32))
        )
    else:
        other = size - EVERY if size > EVERY else size + EVERY
        (note,) = con.execute(
            "SELECT note FROM audit_checkpoints WHERE size=?", (other,)
        ).fetchone()
    con.execute("UPDATE audit_checkpoints SET note=? WHERE size=?", (note, size))


def _alter_and_rehash(con: sqlite3.Connection, *, seq: int) -> None:
    row = con.execute(
        "SELECT id, ts, org_id, action, outcome, actor_agent_id, resource, salt "
        "FROM audit_events WHERE seq=?",
        (seq,),
    ).fetchone()
    details = {"n": -1}
    digest = body_hash(
        Body(
            actor_user_id="usr_framed",
            actor_agent_id=row[5],
            resource=row[6],
            details=details,
            salt=row[7],
        )
    )
    leaf = Header(
        seq=seq,
        id=row[0],
        ts=_sqlite_ts(row[1]),
        org_id=row[2],
        action=row[3],
        outcome=row[4],
        body_sha256=digest,
    ).leaf_hash()
    con.execute(
        "UPDATE audit_events SET actor_user_id='usr_framed', details=?, body_sha256=?, "
        "leaf_hash=? WHERE seq=?",
        (json.dumps(details), digest, leaf.hex(), seq),
    )
