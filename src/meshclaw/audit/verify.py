"""Verifying a log: recompute every hash and the tree, check every signed checkpoint.

The same code checks the store and an exported bundle. Trust comes only from the signed
checkpoints and the verifier key; stored hashes are recomputed, never believed. The
report names the *first* problem by position in the log and says what is wrong:

* a record whose body or header no longer matches its stored hashes: that record;
* a missing or out-of-place sequence number: where the sequence breaks;
* a record that was altered *and* re-hashed: the range between the last good
  checkpoint and the first checkpoint whose signed root no longer matches;
* a checkpoint that was replaced or whose signature fails: that checkpoint;
* a log shorter than a signed checkpoint: the first missing sequence number;
* a body removed without a later ``audit.redact`` record whose cutoff covers it. Each
  org redacts its own records, so the covering record must be of the same org (one
  without an org, as log-wide redactions before per-org retention were, covers all).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from meshclaw.audit.canonical import Header, body_digest, header_json
from meshclaw.audit.checkpoint import Checkpoint, CheckpointError, Verifier
from meshclaw.audit.merkle import Frontier, hash_leaf

REDACT_ACTION = "audit.redact"


@dataclass(slots=True, kw_only=True)
class RecordView:
    """A stored or exported record, exactly as found (nothing recomputed)."""

    seq: int
    id: str
    ts: str
    org_id: str | None
    action: str
    outcome: str
    actor_user_id: str | None
    actor_agent_id: str | None
    resource: str | None
    details: dict[str, Any] | None
    salt: str | None
    """None when the body was redacted or withheld."""
    withheld: bool = False
    """Another org's record in an export: only ``seq`` and ``leaf_hash`` are known, and
    the leaf is taken as given (the signed roots vouch for it); not a redaction."""
    plain_details: bool = False
    """The reader found no floats, huge integers or non-ASCII in ``details`` (a fast path)."""
    body_sha256: str
    leaf_hash: str

    def header(self) -> Header:
        return Header(
            seq=self.seq,
            id=self.id,
            ts=self.ts,
            org_id=self.org_id,
            action=self.action,
            outcome=self.outcome,
            body_sha256=self.body_sha256,
        )


@dataclass(frozen=True, kw_only=True)
class Problem:
    kind: str
    """record, sequence, checkpoint, truncated, head, tiles, witness."""
    message: str
    seq: int | None = None
    """The first bad record, when one record can be named."""
    checkpoint_size: int | None = None
    """The checkpoint concerned (by tree size), when one is."""
    range: tuple[int, int] | None = None
    """An inclusive seq range known to contain the bad record, when it cannot be named."""

    def __str__(self) -> str:
        where = []
        if self.seq is not None:
            where.append(f"record seq {self.seq}")
        if self.range is not None:
            where.append(f"records seq {self.range[0]}..{self.range[1]}")
        if self.checkpoint_size is not None:
            where.append(f"checkpoint at size {self.checkpoint_size}")
        return f"{', '.join(where) or 'log'}: {self.message}"


@dataclass(kw_only=True)
class Report:
    ok: bool = True
    start_size: int = 0
    records: int = 0
    """Records checked."""
    redacted: int = 0
    """Of which the body was redacted or withheld (header and hashes still checked)."""
    checkpoints: int = 0
    """Signed checkpoints whose signature and root were checked."""
    size: int = 0
    """Tree size reached."""
    root: str = ""
    """Hex root of the recomputed tree."""
    witnessed: int = 0
    """Of the checkpoints, those a witness holds too (compared with the recomputed tree)."""
    cosigned: int = 0
    """Stored witness cosignatures checked again over the log's checkpoints."""
    problem: Problem | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class SignedNote:
    note: str
    row_size: int | None = None
    """The size the store filed it under (checked against the note), if any."""
    label: str = ""
    held_by: str | None = None
    """Who holds this copy outside the store (a witness), if anyone: a log rewritten and
    re-signed after it was witnessed no longer matches it."""


@dataclass(slots=True)
class _Signed:
    """An opened checkpoint, and the witness holding it (None: only the store/bundle)."""

    checkpoint: Checkpoint
    held_by: str | None


def _open_checkpoints(
    notes: Iterable[SignedNote], verifier: Verifier, origin: str | None
) -> tuple[list[_Signed], Problem | None]:
    opened: list[_Signed] = []
    for item in notes:
        where = item.row_size
        try:
            cp = verifier.open(item.note)
        except CheckpointError as exc:
            if item.held_by is not None:
                return opened, Problem(
                    kind="witness",
                    message=f"the checkpoint {item.held_by} holds does not verify: {exc}",
                )
            return opened, Problem(kind="checkpoint", checkpoint_size=where, message=str(exc))
        if item.row_size is not None and cp.size != item.row_size:
            return opened, Problem(
                kind="checkpoint",
                checkpoint_size=item.row_size,
                message=f"the note filed under size {item.row_size} signs size {cp.size}",
            )
        if origin is not None and cp.origin != origin:
            return opened, Problem(
                kind="checkpoint",
                checkpoint_size=cp.size,
                message=f"checkpoint is for log {cp.origin!r}, not {origin!r}",
            )
        opened.append(_Signed(cp, item.held_by))
    opened.sort(key=lambda s: (s.checkpoint.size, s.held_by is not None))
    merged: list[_Signed] = []
    for signed in opened:
        prev = merged[-1] if merged else None
        if prev is None or prev.checkpoint.size != signed.checkpoint.size:
            merged.append(signed)
            continue
        if prev.checkpoint.root == signed.checkpoint.root:
            prev.held_by = prev.held_by or signed.held_by  # the same tree, witnessed
            continue
        witness = signed.held_by or prev.held_by
        if witness is not None:
            return merged, Problem(
                kind="witness",
                checkpoint_size=signed.checkpoint.size,
                message=f"the log's checkpoint differs from the one {witness} holds for "
                "this size: the log was rewritten and re-signed after it was witnessed",
            )
        return merged, Problem(
            kind="checkpoint",
            checkpoint_size=signed.checkpoint.size,
            message="two signed checkpoints of this size with different roots: a fork",
        )
    return merged, None


def withheld_view(seq: int, leaf_hash: str) -> RecordView:
    """Another org's record as an export shows it: its place in the tree, nothing else."""
    return RecordView(
        seq=seq,
        id="",
        ts="",
        org_id=None,
        action="",
        outcome="",
        actor_user_id=None,
        actor_agent_id=None,
        resource=None,
        details=None,
        salt=None,
        withheld=True,
        body_sha256="",
        leaf_hash=leaf_hash,
    )


def _check_record(rec: RecordView) -> Problem | bytes:
    """The record's leaf hash, recomputed; or what is wrong with it."""
    if rec.withheld:
        try:
            leaf = bytes.fromhex(rec.leaf_hash)
        except ValueError:
            leaf = b""
        if len(leaf) != 32:
            return Problem(kind="record", seq=rec.seq, message="withheld record: bad leaf hash")
        return leaf
    if rec.salt is not None:
        digest = body_digest(
            rec.actor_user_id,
            rec.actor_agent_id,
            rec.resource or "",
            rec.details or {},
            rec.salt,
            plain=rec.plain_details,
        )
        if digest != rec.body_sha256:
            return Problem(
                kind="record",
                seq=rec.seq,
                message="body (actor, resource, details) does not match its hash: altered",
            )
    header = header_json(
        rec.seq, rec.id, rec.ts, rec.org_id, rec.action, rec.outcome, rec.body_sha256
    )
    leaf = hash_leaf(header)
    if leaf.hex() != rec.leaf_hash:
        return Problem(
            kind="record",
            seq=rec.seq,
            message="header (seq, id, time, org, action, outcome, body hash) does not match "
            "its leaf hash: altered or moved",
        )
    return leaf


CHUNK = 10_000
"""Records per ``Checked`` run (and the progress callback's step)."""


@dataclass(slots=True, kw_only=True)
class Checked:
    """A run of consecutive records, each checked on its own: what the tree needs of them.

    Checking records is independent per record (hashes recomputed from the record alone),
    so runs can be checked in other processes (``meshclaw.audit._parallel``); folding
    them into the tree and comparing with checkpoints is ``verify_checked``'s, in order.
    """

    first: int
    """The seq the run's first record should have."""
    leaves: bytes = b""
    """The recomputed leaf hashes of the good records, concatenated (32 bytes each)."""
    problem: Problem | None = None
    """What is wrong with the record after the good ones (which ends the run)."""
    redacted_seqs: list[int] = field(default_factory=list)
    """Records without a body (redacted or withheld)."""
    redacted: list[tuple[int, str, str | None]] = field(default_factory=list)
    """(seq, ts, org) of records whose body was redacted (not withheld)."""
    cutoffs: list[tuple[int, str, str | None]] = field(default_factory=list)
    """(seq, cutoff, org) of ``audit.redact`` records."""

    @property
    def count(self) -> int:
        return len(self.leaves) // 32


def sequence_problem(expected: int, found: int) -> Problem:
    """Record ``found`` stands where record ``expected`` belongs."""
    if found > expected:
        msg = f"records seq {expected}..{found - 1} are missing (deleted)"
    else:
        msg = f"found seq {found} where seq {expected} belongs: reordered or duplicated"
    return Problem(kind="sequence", seq=expected, message=msg)


def check_records(records: Iterable[RecordView], first: int) -> Checked:
    """Check ``records``, expected to be seq ``first``, ``first + 1``, ...; stop at a bad one."""
    out = Checked(first=first)
    leaves = bytearray()
    expected = first
    for rec in records:
        if rec.seq != expected:
            out.problem = sequence_problem(expected, rec.seq)
            break
        leaf = _check_record(rec)
        if isinstance(leaf, Problem):
            out.problem = leaf
            break
        leaves += leaf
        if rec.salt is None:
            out.redacted_seqs.append(rec.seq)
            if not rec.withheld:
                out.redacted.append((rec.seq, rec.ts, rec.org_id))
        elif rec.action == REDACT_ACTION and isinstance((rec.details or {}).get("before"), str):
            out.cutoffs.append((rec.seq, str((rec.details or {})["before"]), rec.org_id))
        expected += 1
    out.leaves = bytes(leaves)
    return out


def serial_runs(records: Iterable[RecordView], first: int) -> Iterator[Checked]:
    it = iter(records)
    while True:
        run = check_records(itertools.islice(it, CHUNK), first)
        if run.count == 0 and run.problem is None:
            return
        yield run
        if run.problem is not None:
            return
        first += run.count


def verify_log(
    records: Iterable[RecordView],
    notes: Iterable[SignedNote],
    verifier: Verifier,
    *,
    origin: str | None = None,
    start: Frontier | None = None,
    expected_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Check ``records`` (in the order given) against the signed ``notes``.

    ``start`` is the tree before the first record (an export that begins mid-log); it
    is not trusted either: a wrong one makes the next checkpoint's root fail.
    ``expected_size`` is the size the store's head claims, when verifying a store.
    ``progress`` is called with the number of records checked, every 10,000.
    """
    first = (start.size if start is not None else 0) + 1
    return verify_checked(
        serial_runs(records, first),
        notes,
        verifier,
        origin=origin,
        start=start,
        expected_size=expected_size,
        progress=progress,
    )


def verify_checked(
    runs: Iterable[Checked],
    notes: Iterable[SignedNote],
    verifier: Verifier,
    *,
    origin: str | None = None,
    start: Frontier | None = None,
    expected_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """``verify_log`` over records already checked in runs (see ``Checked``), in log order."""
    frontier = start.copy() if start is not None else Frontier()
    report = Report(start_size=frontier.size)
    checkpoints, problem = _open_checkpoints(notes, verifier, origin)
    pending: Iterator[_Signed] = iter(
        [c for c in checkpoints if c.checkpoint.size >= frontier.size]
    )
    upcoming = next(pending, None)
    last_good = frontier.size
    redacted: list[tuple[int, str, str | None]] = []
    cutoffs: list[tuple[int, str, str | None]] = []
    # A bad checkpoint found while opening wins only if nothing before it is wrong.
    problem_at = (problem.checkpoint_size or 0) if problem is not None else None

    def fail(p: Problem) -> Report:
        report.ok = False
        report.problem = p
        report.size = frontier.size
        report.root = frontier.root().hex()
        return report

    def mismatch(signed: _Signed, first: int) -> Problem:
        if signed.held_by is not None:
            return Problem(
                kind="witness",
                checkpoint_size=signed.checkpoint.size,
                range=(first, signed.checkpoint.size) if first <= signed.checkpoint.size else None,
                message=f"the recomputed root differs from the checkpoint {signed.held_by} "
                "holds: the log was rewritten after it was witnessed",
            )
        if first > signed.checkpoint.size:
            return Problem(
                kind="checkpoint",
                checkpoint_size=signed.checkpoint.size,
                message="the signed root differs from the tree before the first record",
            )
        return Problem(
            kind="checkpoint",
            checkpoint_size=signed.checkpoint.size,
            range=(first, signed.checkpoint.size),
            message="the recomputed root differs from the signed checkpoint: a "
            "record in this range was altered and re-hashed, or the checkpoint "
            "was replaced",
        )

    while upcoming is not None and upcoming.checkpoint.size == frontier.size:
        if upcoming.checkpoint.root != frontier.root():
            return fail(mismatch(upcoming, frontier.size + 1))
        report.checkpoints += 1
        report.witnessed += upcoming.held_by is not None
        upcoming = next(pending, None)
    for run in runs:
        leaves = run.leaves
        redacted_seqs = run.redacted_seqs
        r = 0
        next_redacted = redacted_seqs[0] if redacted_seqs else -1
        for i in range(0, len(leaves), 32):
            if problem_at is not None and problem_at <= frontier.size:
                assert problem is not None
                return fail(problem)
            frontier.append(leaves[i : i + 32])
            report.records += 1
            if progress is not None and report.records % CHUNK == 0:
                progress(report.records)
            if frontier.size == next_redacted:
                report.redacted += 1
                r += 1
                next_redacted = redacted_seqs[r] if r < len(redacted_seqs) else -1
            while upcoming is not None and upcoming.checkpoint.size == frontier.size:
                if upcoming.checkpoint.root != frontier.root():
                    return fail(mismatch(upcoming, last_good + 1))
                report.checkpoints += 1
                report.witnessed += upcoming.held_by is not None
                last_good = upcoming.checkpoint.size
                upcoming = next(pending, None)
        redacted += run.redacted
        cutoffs += run.cutoffs
        if run.problem is not None:
            if problem is not None and problem_at is not None and problem_at <= frontier.size:
                return fail(problem)
            return fail(run.problem)
    if problem is not None:
        return fail(problem)
    if upcoming is not None:
        return fail(
            Problem(
                kind="truncated",
                seq=frontier.size + 1,
                checkpoint_size=upcoming.checkpoint.size,
                message=f"the log ends at seq {frontier.size} but a signed checkpoint covers "
                f"{upcoming.checkpoint.size} records: seq {frontier.size + 1}.. were removed"
                + (f" (a checkpoint {upcoming.held_by} holds)" if upcoming.held_by else ""),
            )
        )
    unauthorised = _unauthorised_redaction(redacted, cutoffs)
    if unauthorised is not None:
        return fail(unauthorised)
    if expected_size is not None and expected_size != frontier.size:
        return fail(
            Problem(
                kind="head",
                seq=min(expected_size, frontier.size) + 1,
                message=f"the log head says {expected_size} records, {frontier.size} found",
            )
        )
    report.size = frontier.size
    report.root = frontier.root().hex()
    if report.records and last_good < frontier.size:
        report.notes.append(
            f"records {last_good + 1}..{frontier.size} are not yet covered by a signed "
            "checkpoint (sign one with `meshclaw audit checkpoint`)"
        )
    return report


def _unauthorised_redaction(
    redacted: list[tuple[int, str, str | None]], cutoffs: list[tuple[int, str, str | None]]
) -> Problem | None:
    """The first redacted record that no later ``audit.redact`` cutoff of its org covers."""
    # Sweep backwards, keeping the latest cutoff per org among redactions seen so far
    # (all later than the current position); the None key is a log-wide cutoff.
    best: dict[str | None, str] = {}
    pending = sorted(cutoffs, reverse=True)
    bad: int | None = None
    for seq, ts, org in reversed(redacted):
        while pending and pending[0][0] > seq:
            _, before, by = pending.pop(0)
            best[by] = max(best.get(by, ""), before)
        cutoff = max(best.get(None, ""), best.get(org, "") if org is not None else "")
        if not ts < cutoff:
            bad = seq
    if bad is None:
        return None
    return Problem(
        kind="record",
        seq=bad,
        message="body removed, but no later audit.redact record of its org covers it: "
        "deleted without authorisation",
    )
