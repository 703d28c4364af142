"""Verifying with several processes finds exactly what one pass finds.

A 3,000-record log (SQLite file, a checkpoint every 500 records) is tampered with at
several places, a copy per case; each copy is verified by one pass and by two worker
processes over small ranges (so a problem can sit at a range's edge), and the two
reports must be identical, field for field.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from meshclaw.audit._parallel import checked_runs, ranges
from meshclaw.audit._rows import record_views
from meshclaw.audit.log import AuditLog
from meshclaw.audit.models import AuditHead
from meshclaw.audit.sink import StoreAuditSink
from meshclaw.audit.verify import Report, SignedNote, verify_checked, verify_log
from meshclaw.store.db import Database
from tests.audit.conftest import AuditWorld, append_many
from tests.audit.test_tamper import _alter_and_rehash, _delete, _flip_field, _truncate

N = 3_000
EVERY = 500
RANGE = 400  # seq ranges per worker task: 1..400, 401..800, ...


def _delete_span(con: sqlite3.Connection, *, first: int, last: int) -> None:
    con.execute("DELETE FROM audit_events WHERE seq BETWEEN ? AND ?", (first, last))


def _redact_silently(con: sqlite3.Connection, *, seq: int) -> None:
    con.execute(
        "UPDATE audit_events SET salt = NULL, details = ?, redacted_at = ts WHERE seq = ?",
        (json.dumps({}), seq),
    )


def _extra_after_head(con: sqlite3.Connection) -> None:
    con.execute(
        "INSERT INTO audit_events (seq, id, ts, org_id, action, resource, outcome, details, "
        f"body_sha256, leaf_hash) SELECT {N + 1}, 'aud_extra', ts, org_id, action, resource, "
        f"outcome, details, body_sha256, leaf_hash FROM audit_events WHERE seq = {N}"
    )


class _Rng(random.Random):
    """``_flip_field`` picks a character with ``randrange``: always the first here."""

    def randrange(self, *args: Any, **kwargs: Any) -> int:
        return 0


TAMPERING: dict[str, Callable[[sqlite3.Connection], None]] = {
    "untouched": lambda con: None,
    "flip a byte mid-range": partial(_flip_field, seq=1234, column="resource", rng=_Rng()),
    "flip at a range's first record": partial(_flip_field, seq=801, column="action", rng=_Rng()),
    "delete a range's last record": partial(_delete, seq=1200),
    "delete a whole range and more": partial(_delete_span, first=1195, last=2010),
    "delete the first record": partial(_delete, seq=1),
    "alter and re-hash": partial(_alter_and_rehash, seq=2222),
    "truncate": partial(_truncate, keep=2100),
    "unauthorised redaction": partial(_redact_silently, seq=1500),
    "a record beyond the head": _extra_after_head,
}


def _both_ways(url: str, log: AuditLog) -> tuple[Report, Report]:
    db = Database(url)
    try:
        with db.session() as session:
            head = session.get(AuditHead, 1)
            size = head.size if head is not None else 0
            notes = [
                SignedNote(note=n, row_size=s)
                for s, n in session.execute(
                    text("SELECT size, note FROM audit_checkpoints ORDER BY size")
                )
            ]
            verifier = log.verifier()
            serial = verify_log(
                record_views(session), notes, verifier, origin=log.origin, expected_size=size
            )
            spans = ranges(session, workers=2, size=RANGE)
            parallel = verify_checked(
                checked_runs(url, spans, 2),
                notes,
                verifier,
                origin=log.origin,
                expected_size=size,
            )
        return serial, parallel
    finally:
        db.dispose()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, AuditWorld]]:
    from meshclaw.config import AuditSettings, Settings
    from meshclaw.platform import Platform

    home = tmp_path_factory.mktemp("parallel")
    platform = Platform(
        Settings(
            home=home / "var",
            embedded_model_server=False,
            audit=AuditSettings(checkpoint_every=EVERY, checkpoint_seconds=0),
        )
    )
    world = AuditWorld(platform)
    append_many(platform, N - world.log.head()[0], batch=1000)
    platform.db.dispose()
    yield home / "var" / "meshclaw.db", world
    platform.close()


@pytest.mark.parametrize("case", list(TAMPERING))
def test_parallel_findings_equal_the_serial_ones(
    case: str, source: tuple[Path, AuditWorld], tmp_path: Path
) -> None:
    db_file, world = source
    copy = tmp_path / "copy.db"
    shutil.copy(db_file, copy)
    con = sqlite3.connect(copy)
    with con:
        TAMPERING[case](con)
    con.close()
    serial, parallel = _both_ways(f"sqlite:///{copy}", world.log)
    assert asdict(parallel) == asdict(serial)
    assert serial.ok == (case == "untouched"), serial.problem
    print(f"{case}: {serial.problem or 'ok'}")


def test_audit_log_verify_with_workers(source: tuple[Path, AuditWorld], tmp_path: Path) -> None:
    """Through ``AuditLog.verify``: two processes, the same report as one pass."""
    db_file, world = source
    copy = tmp_path / "copy.db"
    shutil.copy(db_file, copy)
    db = Database(f"sqlite:///{copy}")
    try:
        log = AuditLog(db, StoreAuditSink(), world.log._checkpointer)
        one = log.verify(workers=1)
        two = log.verify(workers=2)
        assert one.ok and one.records == N and one.checkpoints == N // EVERY
        assert asdict(two) == asdict(one)
    finally:
        db.dispose()


def test_workers_must_be_positive(source: tuple[Path, AuditWorld]) -> None:
    from meshclaw.errors import UserError

    _, world = source
    with pytest.raises(UserError, match="workers must be >= 1"):
        world.log.verify(workers=0)
