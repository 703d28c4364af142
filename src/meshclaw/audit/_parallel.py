"""Verifying the store with several processes.

Checking a record needs nothing but the record (its body and leaf hashes are recomputed
from its own fields), so worker processes each read and check ranges of sequence
numbers from the database; this process folds their leaf hashes into the tree, in log
order, and compares roots with the signed checkpoints (``verify.verify_checked``). The
findings are the serial pass's, to the record: a run that stops early (a bad record, a
gap) ends the log there exactly as the serial pass would.

Exported bundles are checked the same way (``bundle.verify_bundle``): each worker parses
and checks byte ranges of the file. ``run_jobs`` is the part both share.

Workers are fresh interpreters (``python -m meshclaw.audit._parallel``) that get their
jobs on stdin (module-level functions and their arguments) and write each result to
stdout as it is done (a pickle: parent and child are the same code). Not
``multiprocessing``: forking a process that runs threads
(the API's, the embedded worker's) can copy a held lock into the child, and its
``spawn`` and ``forkserver`` children import the parent's main module (the whole CLI or
server) before doing anything; these import only the audit code.
"""

from __future__ import annotations

import os
import pickle
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from meshclaw.audit._rows import record_views
from meshclaw.audit.verify import CHUNK, Checked, RecordView, check_records, sequence_problem
from meshclaw.errors import RuntimeFailure
from meshclaw.store.db import Database
from meshclaw.store.models import AuditEvent

PARALLEL_MIN = 50_000
"""Below this many records the processes cost more to start than they save."""


class VerifyWorkerError(RuntimeFailure):
    """A verification worker process failed (not a finding about the log)."""


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 16))


def parallel_possible(url: str) -> bool:
    """An in-memory SQLite database cannot be opened from another process."""
    parsed = make_url(url)
    return not (parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"))


@lru_cache(maxsize=1)
def _database(url: str) -> Database:
    """One engine per worker process, reused for each range it is given."""
    return Database(url)


def check_range(url: str, lo: int, hi: int, first: int) -> tuple[Checked, int | None]:
    """Check records ``lo <= seq <= hi`` (expected to start at ``first``); return the run
    and the first seq actually found (None: the range is empty)."""
    seen: list[int] = []

    def views() -> Iterator[RecordView]:
        with _database(url).session() as session:
            for view in record_views(session, start_seq=lo, end_seq=hi):
                if not seen:
                    seen.append(view.seq)
                yield view

    return check_records(views(), first), (seen[0] if seen else None)


def ranges(session: Session, *, workers: int, size: int | None = None) -> list[tuple[int, int]]:
    """Inclusive seq ranges covering every record now in the store (read in the caller's
    snapshot, so records appended later are not counted)."""
    top = session.scalar(select(func.max(AuditEvent.seq))) or 0
    if top < 1:
        return [(1, 0)]
    step = size or max(CHUNK, min(100_000, -(-top // (workers * 4))))
    return [(lo, min(lo + step - 1, top)) for lo in range(1, top + 1, step)]


Job = tuple[Callable[..., Any], tuple[Any, ...]]
"""A module-level function and its arguments, run in a worker process."""


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    results: queue.Queue[Any]
    cpu: float = 0.0
    """CPU seconds the worker reported using."""


def _read_results(stream: IO[bytes], results: queue.Queue[Any]) -> None:
    """Drain one worker's stdout (so it never blocks on a full pipe) into ``results``."""
    try:
        while True:
            results.put(pickle.load(stream))
    except EOFError:
        results.put(("exit", None))
    except Exception as exc:  # a broken pipe or a torn pickle: the worker died
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def _start(jobs: list[Job]) -> _Worker:
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    process = subprocess.Popen(
        [sys.executable, "-m", __name__],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert process.stdin is not None and process.stdout is not None
    results: queue.Queue[Any] = queue.Queue()
    threading.Thread(
        target=_read_results, args=(process.stdout, results), daemon=True, name="verify-reader"
    ).start()
    pickle.dump(jobs, process.stdin)
    process.stdin.close()
    return _Worker(process, results)


def run_jobs(
    jobs: list[Job], workers: int, *, cpu: list[float] | None = None
) -> Generator[Any, None, None]:
    """The results of ``jobs``, run in ``workers`` processes, yielded in the jobs' order.

    Job ``i`` goes to worker ``i % workers``, so results arrive nearly in order. Stopping
    early (closing the generator) kills the workers. ``cpu`` receives the CPU seconds
    the workers used (for benchmarks).
    """
    count = max(1, min(workers, len(jobs)))
    pool = [_start(jobs[w::count]) for w in range(count)]
    try:
        for i in range(len(jobs)):
            worker = pool[i % count]
            kind, value = worker.results.get()
            if kind != "done":
                raise VerifyWorkerError(f"audit verify worker failed: {value or 'exited early'}")
            result, used = value
            worker.cpu += used
            yield result
    finally:
        for worker in pool:
            if worker.process.poll() is None:
                worker.process.kill()
            worker.process.wait()
            if worker.process.stdout is not None:
                worker.process.stdout.close()
        if cpu is not None:
            cpu.append(sum(w.cpu for w in pool))


def checked_runs(
    url: str, spans: list[tuple[int, int]], workers: int, *, cpu: list[float] | None = None
) -> Iterator[Checked]:
    """The runs of ``spans``, checked in ``workers`` processes, yielded in log order.

    ``cpu`` receives the CPU seconds the workers used (for benchmarks).
    """
    results = run_jobs([(check_range, (url, lo, hi, lo)) for lo, hi in spans], workers, cpu=cpu)
    try:
        expected = 1
        for run, first_seen in results:
            if run.first != expected:
                # The run before ended short of its range: records are missing there, up
                # to the first record found in this range or a later one.
                if first_seen is None:
                    continue
                yield Checked(first=expected, problem=sequence_problem(expected, first_seen))
                return
            yield run
            if run.problem is not None:
                return
            expected = run.first + run.count
    finally:
        results.close()


def _serve() -> int:
    """Worker side: read the jobs from stdin, write one pickled result per job."""
    jobs: list[Job] = pickle.load(sys.stdin.buffer)
    out = sys.stdout.buffer
    for fn, args in jobs:
        start = time.process_time()
        try:
            result = fn(*args)
        except Exception as exc:
            pickle.dump(("error", f"{type(exc).__name__}: {exc}"), out)
            out.flush()
            return 1
        pickle.dump(("done", (result, time.process_time() - start)), out)
        out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(_serve())
