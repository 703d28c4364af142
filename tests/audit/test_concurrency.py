"""Parallel writers on PostgreSQL: dense sequence numbers in commit order, no forks."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import select

from meshclaw.audit.models import AuditCheckpoint
from meshclaw.audit.sink import AuditRecord
from meshclaw.store.models import AuditEvent
from tests.audit.conftest import AuditWorld

WRITERS = 8
PER_WRITER = 40


class _Rollback(Exception):
    pass


@pytest.mark.postgres
def test_parallel_writers_leave_no_gaps_and_no_forks(
    pg_url: str, audit_world: Callable[..., AuditWorld]
) -> None:
    world = audit_world(pg_url, checkpoint_every=25)
    platform = world.platform
    start = world.log.head()[0]
    barrier = threading.Barrier(WRITERS)
    failures: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            barrier.wait(timeout=30)
            for i in range(PER_WRITER):
                try:
                    with platform.db.session() as session:
                        platform.audit.append(
                            session,
                            AuditRecord(
                                action="tool.write",
                                resource=f"w{w}",
                                outcome="ok",
                                details={"writer": w, "i": i},
                            ),
                        )
                        if i % 5 == 4:
                            raise _Rollback  # the act failed after its audit write
                except _Rollback:
                    pass
        except BaseException as exc:  # surfaced in the main thread
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures, failures
    committed = WRITERS * PER_WRITER * 4 // 5

    with platform.db.session() as session:
        rows = session.execute(
            select(AuditEvent.seq, AuditEvent.details).where(AuditEvent.seq > start)
        ).all()
        sizes = session.scalars(select(AuditCheckpoint.size).order_by(AuditCheckpoint.size)).all()
    seqs = sorted(r.seq for r in rows)
    assert seqs == list(range(start + 1, start + committed + 1))  # dense: rollbacks left no gap
    assert all(r.details["i"] % 5 != 4 for r in rows)  # rolled-back records are not there
    # each writer's own records appear in its program order
    for w in range(WRITERS):
        mine = [
            r.details["i"] for r in sorted(rows, key=lambda r: r.seq) if r.details["writer"] == w
        ]
        assert mine == sorted(mine)
    assert sizes == [s for s in range(25, start + committed + 1, 25)]
    report = world.log.verify()
    assert report.ok, report.problem
    assert report.records == start + committed and report.checkpoints == len(sizes)
