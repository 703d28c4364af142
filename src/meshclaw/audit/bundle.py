"""Export bundles: JSON Lines an outside auditor verifies with only the public key.

Line 1 is the header, then one ``checkpoint`` line per signed note, then one ``record``
line per record in seq order (so a verifier streams the records in one pass)::

    {"format": "meshclaw-audit-bundle", "v": 2, "origin": ..., "start_size": k,
     "start_frontier": [...], "end_size": n, "verifier_key": ...}
    {"type": "checkpoint", "size": n, "note": "..."}
    {"type": "record", "seq": k+1, ..., "body": "present" | "redacted"}
    {"type": "record", "seq": k+2, "body": "withheld", "leaf_hash": "..."}

A record of another org is ``withheld``: only its position and leaf hash, nothing of its
header (time, org, action, outcome) or body. The verifier takes that leaf as given; the
signed roots vouch for it, so changing it still fails the next checkpoint. Version 1
bundles (withheld records with their headers) are still read.

Nothing in the bundle is trusted: ``verifier_key`` is informational (the auditor brings
their own copy), and ``start_frontier`` (the tree before the first record of a partial
export) only makes the next checkpoint's root fail if it is wrong.

``verify_bundle`` reads the header and checkpoints, then checks the records in one pass
or, from ``PARALLEL_MIN_BYTES`` on, in worker processes over byte ranges of whole lines
(``_parallel.run_jobs``), folding their leaves in order: the same findings either way.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from meshclaw.audit._parallel import default_workers, run_jobs
from meshclaw.audit.checkpoint import Verifier
from meshclaw.audit.merkle import Frontier, ProofError
from meshclaw.audit.verify import (
    Checked,
    Problem,
    RecordView,
    Report,
    SignedNote,
    check_records,
    sequence_problem,
    serial_runs,
    verify_checked,
    withheld_view,
)
from meshclaw.errors import UserError

FORMAT = "meshclaw-audit-bundle"
VERSION = 2
READABLE = (1, 2)
PARALLEL_MIN_BYTES = 16 << 20
"""From this size on (~50,000 records) a bundle is checked in several processes."""
SPAN_BYTES = 4 << 20
"""Bytes of records per worker job."""


class BundleError(UserError):
    """A bundle line is not what the format says; carries the line number."""

    def __init__(self, lineno: int, reason: str) -> None:
        super().__init__(f"line {lineno}: {reason}")
        self.lineno, self.reason = lineno, reason


def write_bundle(
    out: TextIO,
    *,
    origin: str,
    verifier_key: str,
    start: Frontier,
    end_size: int,
    records: Iterable[RecordView],
    notes: Iterable[tuple[int, str]],
) -> tuple[int, int]:
    """Write a bundle; return (records written, of which bodies withheld)."""
    header = {
        "format": FORMAT,
        "v": VERSION,
        "origin": origin,
        "verifier_key": verifier_key,
        "start_size": start.size,
        "start_frontier": start.to_hex(),
        "end_size": end_size,
    }
    out.write(json.dumps(header, ensure_ascii=False) + "\n")
    for size, note in notes:
        out.write(json.dumps({"type": "checkpoint", "size": size, "note": note}) + "\n")
    written = withheld = 0
    for r in records:
        if r.withheld:
            out.write(json.dumps(_withheld_line(r), separators=(",", ":")) + "\n")
            written += 1
            withheld += 1
            continue
        body = "redacted" if r.salt is None else "present"
        line: dict[str, Any] = {
            "type": "record",
            "seq": r.seq,
            "id": r.id,
            "ts": r.ts,
            "org_id": r.org_id,
            "action": r.action,
            "outcome": r.outcome,
            "body": body,
            "body_sha256": r.body_sha256,
            "leaf_hash": r.leaf_hash,
        }
        if body == "present":
            line |= {
                "actor_user_id": r.actor_user_id,
                "actor_agent_id": r.actor_agent_id,
                "resource": r.resource,
                "details": r.details,
                "salt": r.salt,
            }
        out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
        written += 1
    return written, withheld


def _withheld_line(r: RecordView) -> dict[str, Any]:
    return {"type": "record", "seq": r.seq, "body": "withheld", "leaf_hash": r.leaf_hash}


@dataclass(frozen=True, kw_only=True)
class BundleHeader:
    origin: str
    start: Frontier
    end_size: int
    verifier_key: str | None


_REQUIRED = ("seq", "id", "ts", "action", "outcome", "body", "body_sha256", "leaf_hash")
_REQUIRED_WITHHELD = ("seq", "body", "leaf_hash")


def _record(obj: dict[str, Any], lineno: int) -> RecordView:
    body = obj.get("body")
    required = _REQUIRED_WITHHELD if body == "withheld" else _REQUIRED
    missing = [k for k in required if k not in obj]
    if missing:
        raise BundleError(lineno, f"record lacks {', '.join(missing)}")
    if body not in ("present", "redacted", "withheld"):
        raise BundleError(lineno, "body must be present, redacted or withheld")
    if body == "withheld":
        if not isinstance(obj["seq"], int):
            raise BundleError(lineno, "seq must be an integer")
        return withheld_view(obj["seq"], str(obj["leaf_hash"]))
    present = body == "present"
    if present and not isinstance(obj.get("salt"), str):
        raise BundleError(lineno, "a present body needs its salt")
    if not isinstance(obj["seq"], int):
        raise BundleError(lineno, "seq must be an integer")
    details = obj.get("details") if present else None
    if details is not None and not isinstance(details, dict):
        raise BundleError(lineno, "details must be an object")
    return RecordView(
        seq=obj["seq"],
        id=str(obj["id"]),
        ts=str(obj["ts"]),
        org_id=obj.get("org_id"),
        action=str(obj["action"]),
        outcome=str(obj["outcome"]),
        actor_user_id=obj.get("actor_user_id") if present else None,
        actor_agent_id=obj.get("actor_agent_id") if present else None,
        resource=obj.get("resource") if present else None,
        details=details,
        salt=obj["salt"] if present else None,
        withheld=body == "withheld",
        body_sha256=str(obj["body_sha256"]),
        leaf_hash=str(obj["leaf_hash"]),
    )


Line = tuple[int, str]
"""A line's number (from 1) and its text."""


def _decoded(raw: Iterable[bytes], first: int = 1) -> Iterator[Line]:
    """Lines split at ``\\n`` only, the way byte ranges of the file are split for the
    workers, so both passes see the same lines."""
    for lineno, line in enumerate(raw, start=first):
        try:
            yield lineno, line.removesuffix(b"\n").decode("utf-8")
        except UnicodeDecodeError:
            raise BundleError(lineno, "not UTF-8: damaged") from None


def _objects(lines: Iterable[Line]) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, raw in lines:
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise BundleError(lineno, f"not JSON ({exc.msg}): damaged") from None
        if not isinstance(obj, dict):
            raise BundleError(lineno, "not a JSON object")
        yield lineno, obj


def _records(objects: Iterable[tuple[int, dict[str, Any]]]) -> Iterator[RecordView]:
    for lineno, obj in objects:
        kind = obj.get("type")
        if kind == "checkpoint":
            raise BundleError(lineno, "checkpoint after the records")
        if kind != "record":
            raise BundleError(lineno, f"unknown line type {kind!r}")
        yield _record(obj, lineno)


class _Reader:
    """Reads the header and the checkpoints up front, then streams the records."""

    def __init__(self, lines: Iterable[Line]) -> None:
        self._lines = iter(lines)
        self.notes: list[SignedNote] = []
        self.header = self._header()
        self.first: tuple[int, dict[str, Any]] | None = None
        """The first record line (its number and object), once the checkpoints are read."""
        for lineno, obj in _objects(self._lines):
            if obj.get("type") != "checkpoint":
                self.first = (lineno, obj)
                break
            if not isinstance(obj.get("note"), str):
                raise BundleError(lineno, "checkpoint without a note")
            size = obj.get("size")
            self.notes.append(
                SignedNote(
                    note=obj["note"],
                    row_size=size if isinstance(size, int) else None,
                    label=f"line {lineno}",
                )
            )

    def _header(self) -> BundleHeader:
        first = next(self._lines, None)
        if first is None:
            raise BundleError(1, "the bundle is empty")
        try:
            obj = json.loads(first[1])
        except json.JSONDecodeError as exc:
            raise BundleError(1, f"not JSON: {exc.msg}") from None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise BundleError(1, f"not a {FORMAT} header")
        if obj.get("v") not in READABLE:
            raise BundleError(1, f"bundle version {obj.get('v')!r} is not {VERSION}")
        try:
            start = Frontier.from_hex(int(obj["start_size"]), obj["start_frontier"])
            return BundleHeader(
                origin=str(obj["origin"]),
                start=start,
                end_size=int(obj["end_size"]),
                verifier_key=obj.get("verifier_key"),
            )
        except (KeyError, TypeError, ValueError, ProofError) as exc:
            raise BundleError(1, f"bad header: {exc}") from None

    def records(self) -> Iterator[RecordView]:
        pending = [self.first] if self.first is not None else []
        return _records(itertools.chain(pending, _objects(self._lines)))


class _Tracked:
    """A binary file's lines, remembering where the last one handed out starts."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.start = 0
        self._next = 0

    def __iter__(self) -> Iterator[bytes]:
        for raw in self._f:
            self.start, self._next = self._next, self._next + len(raw)
            yield raw


def _until_damaged(
    records: Iterator[RecordView], damaged: list[BundleError]
) -> Iterator[RecordView]:
    """``records`` up to a line that is not a record; that line's error goes to ``damaged``."""
    try:
        yield from records
    except BundleError as exc:
        damaged.append(exc)


def _serial_runs(records: Iterator[RecordView], first: int) -> Iterator[Checked]:
    """The records checked in one pass. A damaged line ends the records before it; its
    error is raised only if the verifier asks for more, i.e. nothing before it failed
    (the first problem in log order wins, as in the parallel pass)."""
    damaged: list[BundleError] = []
    yield from serial_runs(_until_damaged(records, damaged), first)
    if damaged:
        raise damaged[0]


def check_span(path: str, start: int, end: int) -> tuple[Checked | None, tuple[int, str] | None]:
    """Worker side: check the records of bytes ``[start, end)`` of a bundle (whole lines).

    Returns the run (None: no record there), expected to start at the seq of the span's
    first record, and the damaged line that ended it, numbered from the span's first
    line, with the reason (None: none).
    """
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    damaged: list[BundleError] = []
    records = _until_damaged(_records(_objects(_decoded(data.split(b"\n")))), damaged)
    first = next(records, None)
    run = None if first is None else check_records(itertools.chain([first], records), first.seq)
    return run, ((damaged[0].lineno, damaged[0].reason) if damaged else None)


def _spans(path: Path, start: int, span_bytes: int) -> list[tuple[int, int]]:
    """Byte ranges from ``start`` to the end of the file, each of whole lines."""
    size = path.stat().st_size
    bounds = [start]
    with path.open("rb") as f:
        while bounds[-1] + span_bytes < size:
            f.seek(bounds[-1] + span_bytes - 1)
            f.readline()  # to the end of the line the cut falls in
            bounds.append(f.tell())
    if bounds[-1] < size:
        bounds.append(size)
    return list(itertools.pairwise(bounds))


def _lines_before(path: Path, start: int, end: int) -> int:
    """Lines that end in bytes ``[start, end)`` (only counted for an error message)."""
    count = 0
    with path.open("rb") as f:
        f.seek(start)
        while start < end:
            block = f.read(min(1 << 20, end - start))
            if not block:
                break
            count += block.count(b"\n")
            start += len(block)
    return count


def _parallel_runs(
    path: Path, spans: list[tuple[int, int]], first_seq: int, first_lineno: int, workers: int
) -> Iterator[Checked]:
    """The spans' runs, checked in ``workers`` processes, in log order: the serial pass's
    runs (and its damaged-line error) exactly, only cut at other places."""
    results = run_jobs([(check_span, (str(path), lo, hi)) for lo, hi in spans], workers)
    try:
        expected = first_seq
        for (lo, _), (run, damaged) in zip(spans, results, strict=True):
            if run is not None:
                if run.first != expected:
                    yield Checked(first=expected, problem=sequence_problem(expected, run.first))
                    return
                yield run
                if run.problem is not None:
                    return
                expected += run.count
            if damaged is not None:
                lineno, reason = damaged
                before = _lines_before(path, spans[0][0], lo)
                raise BundleError(first_lineno + before + lineno - 1, reason)
    finally:
        results.close()


def verify_bundle(
    path: Path,
    verifier: Verifier,
    held: Sequence[SignedNote] = (),
    *,
    workers: int | None = None,
    span_bytes: int = SPAN_BYTES,
) -> Report:
    """Verify an exported bundle offline, with only the verifier key.

    ``held``: checkpoints kept outside the log (a witness's, syslog's), compared too.
    ``workers``: processes that parse and check records (None: one per CPU for a bundle
    of ``PARALLEL_MIN_BYTES`` or more, else one pass); the findings are the same either
    way. ``span_bytes``: the size of the byte ranges handed to the workers.
    """
    if workers is not None and workers < 1:
        raise UserError(f"workers must be >= 1, not {workers}")
    if workers is None:
        workers = default_workers() if path.stat().st_size >= PARALLEL_MIN_BYTES else 1
    with path.open("rb") as f:
        lines = _Tracked(f)
        reader = _Reader(_decoded(lines))
        first_seq = reader.header.start.size + 1
        runs: Iterator[Checked]
        if workers > 1 and reader.first is not None:
            spans = _spans(path, lines.start, span_bytes)
            runs = _parallel_runs(path, spans, first_seq, reader.first[0], workers)
        else:
            runs = _serial_runs(reader.records(), first_seq)
        report = verify_checked(
            runs,
            [*reader.notes, *held],
            verifier,
            origin=reader.header.origin,
            start=reader.header.start,
            expected_size=reader.header.end_size,
        )
    if report.ok and report.checkpoints == 0 and report.records:
        report.ok = False
        report.problem = Problem(
            kind="checkpoint",
            message="the bundle has no signed checkpoint covering its records",
        )
    return report
