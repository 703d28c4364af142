"""Big LiteLLM JSON Lines exports mapped in worker processes, a chunk each.

This process cuts the file into byte ranges of whole lines (``_ingest_litellm._chunk_spans``:
about ``ingest.CHUNK`` bytes each; only the bytes around a boundary are read) and deals
them out in turn to the workers. A worker reads its ranges and maps each exactly as the
single-process path does (``_chunk_rows``, then ``_litellm_events_fast``, then the
``EventWriter`` encoding), numbering the chunk's lines from 1, and writes the result to
its stdout. This process takes the results in input order, writes the events, adds the
counts and moves each chunk's problems to the file's line numbers, so the file, the
report and the problems are the ones one process gives.

Memory stays bounded whatever the file's size: a worker may get a few chunks ahead (their
results wait in this process, ``_AHEAD`` per worker, and in its pipe), then it blocks
until its turn comes.

Workers are fresh interpreters (``python -m meshclaw.metering._ingest_parallel``), as in
``meshclaw.audit._parallel`` and for the same reasons: ``fork`` from a process with
threads can copy a held lock into the child, and ``multiprocessing``'s ``spawn`` and
``forkserver`` children import the parent's main module (the whole CLI) first.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from meshclaw.errors import RuntimeFailure
from meshclaw.events import EventWriter
from meshclaw.metering._ingest_base import MAX_PROBLEMS, Defaults, IngestReport
from meshclaw.metering._ingest_litellm import (
    _chunk_rows,
    _chunk_spans,
    _first_byte,
    _line_count,
    _litellm_events_fast,
)

MAX_JOBS = 8
"""Default cap on workers: past it this process, which merges and writes, is the
bottleneck."""
MIN_BYTES = 64 << 20
"""Smaller files are mapped in-process: starting a worker (0.4 CPU-seconds, mostly
imports) costs more than it saves (two workers broke even near 40 MB on 2 cores)."""
_PIPE_BYTES = 1 << 20
_AHEAD = 4
CHUNK_TIMEOUT = 300.0
"""Seconds to wait for one chunk's result (a megabyte maps in milliseconds): past it
the worker is taken for hung, stopped, and the import fails with that reason."""
"""Results a worker may have done before its turn, besides the one in its pipe."""


class IngestWorkerError(RuntimeFailure):
    """An ingest worker process died or failed (not a problem with a record)."""


def default_jobs() -> int:
    """One worker per CPU this process may run on, at most ``MAX_JOBS``."""
    return max(1, min(MAX_JOBS, len(os.sched_getaffinity(0))))


def worth_it(source: Path, jobs: int) -> bool:
    """Whether ``source`` is JSON Lines big enough to map with ``jobs`` workers."""
    if jobs < 2 or source.stat().st_size < MIN_BYTES:
        return False
    with source.open("rb") as stream:
        return _first_byte(stream) == b"{"


@dataclass(frozen=True, kw_only=True)
class Mapped:
    """A chunk's events, encoded, and its share of the report."""

    data: bytes
    """The chunk's events as JSON Lines, as ``EventWriter`` writes them."""
    events: int
    records: int
    skipped: int
    problems: list[str]
    """The chunk's first problems (at most ``MAX_PROBLEMS``), its first line as line 1."""
    lines: int
    """Lines in the chunk: the next chunk's first line is this many further on."""


def map_chunk(source: str, start: int, end: int, defaults: Defaults) -> Mapped:
    """Map the bytes ``start:end`` of ``source`` (whole lines)."""
    with open(source, "rb") as stream:
        stream.seek(start)
        chunk = stream.read(end - start)
    lines = _line_count(chunk)
    report, out = IngestReport(), io.BytesIO()
    with EventWriter(out) as writer:
        writer.write_all(_litellm_events_fast(_chunk_rows(chunk, 1, lines), defaults, report))
    return Mapped(
        data=out.getvalue(),
        events=writer.count,
        records=report.records,
        skipped=report.skipped,
        problems=report.problems,
        lines=lines,
    )


def write_parallel(
    source: Path,
    dest: Path,
    defaults: Defaults,
    report: IngestReport,
    *,
    jobs: int,
    chunk_size: int,
    command: list[str] | None = None,
    chunk_timeout: float = CHUNK_TIMEOUT,
) -> None:
    """Map the JSON Lines ``source`` into ``dest`` with up to ``jobs`` workers, adding to
    ``report``. A worker that dies, fails or gives no result for ``chunk_timeout``
    seconds (hung: it is killed) raises ``IngestWorkerError``; ``dest`` then holds the
    events of the lines before the chunk it failed on.

    ``command`` starts a worker (default: this module under this interpreter).
    """
    with source.open("rb") as stream:
        spans = list(_chunk_spans(stream, chunk_size))
    count = max(1, min(jobs, len(spans)))
    stop = threading.Event()
    workers: list[_Worker] = []
    lines = 0
    try:
        workers += (_Worker.start(command, stop) for _ in range(count))
        for w, worker in enumerate(workers):  # after all have started: they start at once
            worker.send((str(source), defaults, spans[w::count]))
        with dest.open("wb") as out:
            for i in range(len(spans)):
                doing = f"mapping {source} from line {lines + 1}"
                mapped = workers[i % count].result(doing, chunk_timeout)
                out.write(mapped.data)
                report.records += mapped.records
                report.events += mapped.events
                report.skipped += mapped.skipped
                room = MAX_PROBLEMS - len(report.problems)
                report.problems.extend(_shifted(p, lines) for p in mapped.problems[:room])
                lines += mapped.lines
    finally:
        stop.set()
        for worker in workers:
            worker.close()


@dataclass(frozen=True, kw_only=True)
class _Worker:
    process: subprocess.Popen[bytes]
    results: queue.Queue[tuple[str, Any]]
    """What the worker wrote, a few results ahead of their turn at most."""
    reader: threading.Thread

    @classmethod
    def start(cls, command: list[str] | None, stop: threading.Event) -> _Worker:
        env = dict(os.environ)
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        process = subprocess.Popen(
            command or [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert process.stdout is not None
        # Room for a result in the pipe too (a smaller pipe is only slower).
        with contextlib.suppress(OSError):
            fcntl.fcntl(process.stdout.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        results: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=_AHEAD)
        reader = threading.Thread(
            target=_read_results,
            args=(process.stdout, results, stop),
            daemon=True,
            name="ingest-reader",
        )
        reader.start()
        return cls(process=process, results=results, reader=reader)

    def send(self, task: tuple[str, Defaults, list[tuple[int, int]]]) -> None:
        """Give the worker its file, attribution defaults and byte ranges."""
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it died already: its result says how
            pickle.dump(task, self.process.stdin)
            self.process.stdin.close()

    def result(self, doing: str, timeout: float) -> Mapped:
        """The worker's next result, the chunk whose turn it is (``doing`` says which)."""
        where = f"ingest worker {doing}"
        try:
            kind, value = self.results.get(timeout=timeout)
        except queue.Empty:
            raise IngestWorkerError(
                f"{where} gave no result within {timeout:.0f} s and was stopped; the events "
                "of the lines before were written. Run with --jobs 1 to map the file in one "
                "process."
            ) from None
        if kind == "chunk" and isinstance(value, Mapped):
            return value
        if kind == "eof":
            raise IngestWorkerError(
                f"{where} {_how_it_ended(self.process)} without a result; the events of "
                "the lines before were written. Run with --jobs 1 to map the file in one "
                "process."
            )
        if kind == "torn":  # it died while writing
            raise IngestWorkerError(f"{where} sent a broken result ({value})")
        raise IngestWorkerError(f"{where} failed: {value}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.reader.join()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # what was not sent to a dead worker
                    stream.close()


def _read_results(
    stream: IO[bytes], results: queue.Queue[tuple[str, Any]], stop: threading.Event
) -> None:
    """Move a worker's results from its pipe to ``results``, so that it can go on while
    other workers' results are written; blocks while ``results`` is full, until ``stop``."""

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                results.put(item, timeout=0.1)
                return True
        return False

    try:
        while put(pickle.load(stream)):
            pass
    except EOFError:
        put(("eof", None))
    except Exception as exc:  # a torn pickle: the worker died while writing
        put(("torn", f"{type(exc).__name__}: {exc}"))


def _how_it_ended(worker: subprocess.Popen[bytes]) -> str:
    try:
        code = worker.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return "closed its output"
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def _shifted(problem: str, lines: int) -> str:
    """A chunk's ``line N: why`` as ``line N+lines: why`` (``_chunk_rows`` names every
    position ``line N``)."""
    where, _, why = problem.partition(": ")
    return f"line {int(where.removeprefix('line ')) + lines}: {why}"


def _serve(stdin: IO[bytes], stdout: IO[bytes]) -> int:
    """Worker side: read (source, defaults, spans), write one pickled result per span."""
    source, defaults, spans = pickle.load(stdin)
    for start, end in spans:
        try:
            result: tuple[str, Any] = ("chunk", map_chunk(source, start, end, defaults))
        except Exception as exc:
            pickle.dump(("error", f"{type(exc).__name__}: {exc}"), stdout)
            stdout.flush()
            return 1
        pickle.dump(result, stdout, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.flush()
    return 0


if __name__ == "__main__":
    # This process stops workers (a Ctrl-C reaches the whole process group).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # By its name, so that results pickle as this module's classes, not ``__main__``'s.
    from meshclaw.metering._ingest_parallel import _serve as serve

    raise SystemExit(serve(sys.stdin.buffer, sys.stdout.buffer))
