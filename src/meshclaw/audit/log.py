"""The audit log as a service: query, checkpoints, proofs, verification, retention, export.

Every method that shows records or changes the log asks the Cedar API authoriser
(``audit.read``, ``audit.verify``, ``audit.redact`` on the caller's org; the roles are in
``meshclaw.policy.roles``) and is itself recorded in the log.

The tree is one for the whole install, so what spans it (verify, checkpoints, consistency
proofs) is log-wide but shows only counts, positions and hashes. What shows or changes a
record is per org: queries, inclusion proofs and export bodies are the caller's org's
records (and system records, which have no org); redaction touches only the caller's org.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TextIO

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from meshclaw.accounts.service import Caller
from meshclaw.audit import tiles
from meshclaw.audit._parallel import (
    PARALLEL_MIN,
    checked_runs,
    default_workers,
    parallel_possible,
    ranges,
)
from meshclaw.audit._rows import record_views
from meshclaw.audit.bundle import write_bundle
from meshclaw.audit.canonical import format_ts
from meshclaw.audit.checkpoint import Verifier
from meshclaw.audit.merkle import Frontier, TiledTree, consistency_path, inclusion_path
from meshclaw.audit.models import HEAD_ID, AuditCheckpoint, AuditHead
from meshclaw.audit.signing import Checkpointer
from meshclaw.audit.sink import AuditRecord, StoreAuditSink, lock_head
from meshclaw.audit.verify import (
    REDACT_ACTION,
    Checked,
    Problem,
    Report,
    SignedNote,
    serial_runs,
    verify_checked,
)
from meshclaw.audit.witness import Witnesses, WitnessSummary
from meshclaw.clock import utcnow
from meshclaw.config import Settings
from meshclaw.errors import NotFoundError, UserError
from meshclaw.policy.api import ApiAuthorizer, ApiResource
from meshclaw.policy.cedar import PolicyStore
from meshclaw.store.db import Database
from meshclaw.store.models import AuditEvent, User

REDACTED_RESOURCE = ""
MAX_PAGE = 1000

_WHY = {
    "audit.read": "audit records are for auditors",
    "audit.verify": "verifying the audit log is for auditors and platform admins",
    "audit.redact": "audit retention is for platform admins",
}


@dataclass(frozen=True, kw_only=True)
class AuditEntry:
    seq: int
    id: str
    ts: datetime
    org_id: str | None
    actor_user_id: str | None
    actor_agent_id: str | None
    action: str
    resource: str
    outcome: str
    details: dict[str, Any]
    redacted: bool
    leaf_hash: str


@dataclass(frozen=True, kw_only=True)
class AuditPage:
    entries: list[AuditEntry]
    next_after: int | None
    """Pass as ``after`` for the next page; None on the last page."""
    next_before: int | None = None
    """Paging backwards (``before``): pass as ``before`` for the page before this one;
    None when nothing older matches."""


@dataclass(frozen=True, kw_only=True)
class CheckpointInfo:
    size: int
    root_hash: str
    origin: str
    key_id: str
    note: str
    created_at: datetime
    cosignatures: list[str] = field(default_factory=list)
    """Witnesses' signature lines on this checkpoint, as they answered."""


@dataclass(frozen=True, kw_only=True)
class ScheduledSummary:
    checkpoint: int | None
    """The size of the checkpoint signed now, if one was."""
    witnesses: WitnessSummary


@dataclass(frozen=True, kw_only=True)
class ExportSummary:
    start_seq: int
    end_seq: int
    records: int
    withheld: int
    checkpoints: int


def _entry(e: AuditEvent) -> AuditEntry:
    return AuditEntry(
        seq=e.seq,
        id=e.id,
        ts=e.ts,
        org_id=e.org_id,
        actor_user_id=e.actor_user_id,
        actor_agent_id=e.actor_agent_id,
        action=e.action,
        resource=e.resource,
        outcome=e.outcome,
        details=e.details,
        redacted=e.redacted_at is not None,
        leaf_hash=e.leaf_hash,
    )


def _checkpoint_info(c: AuditCheckpoint, cosignatures: list[str] | None = None) -> CheckpointInfo:
    return CheckpointInfo(
        size=c.size,
        root_hash=c.root_hash,
        origin=c.origin,
        key_id=c.key_id,
        note=c.note,
        created_at=c.created_at,
        cosignatures=cosignatures or [],
    )


def _pattern(column: Any, value: str) -> ColumnElement[bool]:
    """``x`` matches exactly; ``x*`` matches the prefix ``x``."""
    if value.endswith("*"):
        prefix = value[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return column.like(prefix + "%", escape="\\")  # type: ignore[no-any-return]
    return column == value  # type: ignore[no-any-return]


def _progress(report: Callable[[int, int], None], total: int, done: int) -> None:
    report(done, total)


class AuditLog:
    def __init__(
        self,
        db: Database,
        sink: StoreAuditSink,
        checkpointer: Checkpointer,
        *,
        access: ApiAuthorizer | None = None,
        min_retention: timedelta = timedelta(days=30),
        witnesses: Witnesses | None = None,
        verify_workers: int = 0,
        checkpoint_seconds: float = 0.0,
    ) -> None:
        self._db = db
        self._sink = sink
        self._checkpointer = checkpointer
        self._witnesses = witnesses
        self._verify_workers = verify_workers
        """Processes for ``verify`` (0: automatic, see ``verify``)."""
        self._checkpoint_seconds = checkpoint_seconds
        """Timed checkpoints are on (the scheduler calls ``scheduled`` this often)."""
        self._access = access
        """Decides who may read, verify or redact (None: the built-in policies, built on
        first use, since checking the log without a caller needs no authoriser)."""
        self._min_retention = min_retention

    def _require(self, caller: Caller, action: str) -> None:
        if self._access is None:
            self._access = ApiAuthorizer(PolicyStore())
        self._access.require(
            caller, action, ApiResource.org(caller.org_id), message=f"{_WHY[action]}:"
        )

    @property
    def origin(self) -> str:
        return self._checkpointer.origin

    def verifier(self) -> Verifier:
        return self._checkpointer.signer.verifier

    def public_key(self) -> str:
        """The verifier key (``<name>+<id>+<key>``) auditors verify checkpoints with."""
        return self.verifier().vkey()

    def _record(
        self, session: Session, caller: Caller, action: str, details: dict[str, Any]
    ) -> int:
        return self._sink.append_event(
            session,
            AuditRecord(
                action=action,
                resource="audit:log",
                outcome="ok",
                org_id=caller.org_id,
                actor_user_id=caller.user_id,
                details=details,
            ),
        )

    # -- reading ------------------------------------------------------------------------

    def query(
        self,
        caller: Caller,
        *,
        actor: str | None = None,
        action: str | None = None,
        resource: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: int = 0,
        before: int | None = None,
        limit: int = 50,
    ) -> AuditPage:
        """Records of the caller's org (and system records), oldest first, paged by seq:
        forwards from ``after``, or the ``limit`` records just before ``before`` (the
        newest page first when paging back from the head)."""
        self._require(caller, "audit.read")
        if not 1 <= limit <= MAX_PAGE:
            raise UserError(f"limit must be 1..{MAX_PAGE}, not {limit}")
        if after < 0:
            raise UserError("after must be >= 0")
        if before is not None and (before < 1 or after):
            raise UserError("before must be >= 1, and not given together with after")
        filters: dict[str, Any] = {}
        with self._db.session() as session:
            conds: list[ColumnElement[bool]] = [AuditEvent.seq > after]
            if before is not None:
                conds.append(AuditEvent.seq < before)
            if actor is not None:
                actor_id = self._resolve_actor(session, caller, actor)
                conds.append(
                    or_(AuditEvent.actor_user_id == actor_id, AuditEvent.actor_agent_id == actor_id)
                )
                filters["actor"] = actor
            if action is not None:
                conds.append(_pattern(AuditEvent.action, action))
                filters["action"] = action
            if resource is not None:
                conds.append(_pattern(AuditEvent.resource, resource))
                filters["resource"] = resource
            if outcome is not None:
                conds.append(AuditEvent.outcome == outcome)
                filters["outcome"] = outcome
            if since is not None:
                conds.append(AuditEvent.ts >= since)
                filters["since"] = since.isoformat()
            if until is not None:
                conds.append(AuditEvent.ts < until)
                filters["until"] = until.isoformat()
            backwards = before is not None
            order = AuditEvent.seq.desc() if backwards else AuditEvent.seq
            # The org's records and the system records are read apart and merged: each
            # read walks the org_id index in seq order and stops at the limit, where one
            # read with ``org_id = :org OR org_id IS NULL`` made SQLite sort every record
            # of the org first (~0.3 s at 100 k records).
            rows = sorted(
                (
                    row
                    for owner in (AuditEvent.org_id == caller.org_id, AuditEvent.org_id.is_(None))
                    for row in session.scalars(
                        select(AuditEvent)
                        .where(owner, and_(*conds))
                        .order_by(order)
                        .limit(limit + 1)
                    )
                ),
                key=lambda row: row.seq,
                reverse=backwards,
            )[: limit + 1]
            kept = rows[:limit]
            if before is not None:
                kept = kept[::-1]  # read newest first to stop at the limit; shown oldest first
            entries = [_entry(r) for r in kept]
            cursor: dict[str, Any] = {"before": before} if before is not None else {"after": after}
            self._record(
                session,
                caller,
                "audit.query",
                {"filters": filters, **cursor, "returned": len(entries)},
            )
        more = len(rows) > limit
        if before is not None:
            return AuditPage(
                entries=entries,
                next_after=None,
                next_before=entries[0].seq if more and entries else None,
            )
        return AuditPage(entries=entries, next_after=entries[-1].seq if more else None)

    def _resolve_actor(self, session: Session, caller: Caller, actor: str) -> str:
        if actor.startswith(("usr_", "agt_", "agent_")):
            return actor
        user = session.scalar(
            select(User).where(User.org_id == caller.org_id, User.handle == actor)
        )
        if user is None:
            raise NotFoundError(f"no user {actor!r} in this org (give a handle or an id)")
        return user.id

    def head(self) -> tuple[int, str]:
        with self._db.session() as session:
            head = session.get(AuditHead, HEAD_ID)
            if head is None:
                return 0, Frontier().root().hex()
            return head.size, Frontier.from_hex(head.size, head.frontier).root().hex()

    # -- checkpoints and proofs ---------------------------------------------------------

    def checkpoint(self, caller: Caller | None = None) -> CheckpointInfo:
        """Sign the current tree (or return the checkpoint that already covers it)."""
        if caller is not None:
            self._require(caller, "audit.verify")
        with self._db.session() as session:
            if caller is not None:
                self._record(session, caller, "audit.checkpoint", {})
            row = self._checkpointer.write(session, lock_head(session))
            return _checkpoint_info(row)

    def checkpoints(self, caller: Caller) -> list[CheckpointInfo]:
        self._require(caller, "audit.verify")
        with self._db.session() as session:
            rows = session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.size)).all()
            cosigned = (
                self._witnesses.cosignatures(session, [r.size for r in rows])
                if self._witnesses is not None
                else {}
            )
            return [_checkpoint_info(r, cosigned.get(r.size)) for r in rows]

    def scheduled(self) -> ScheduledSummary:
        """The scheduler's audit job: a timed checkpoint when records exist that no
        checkpoint covers yet (``audit.checkpoint_seconds``), then witness sends due."""
        signed: int | None = None
        if self._checkpoint_seconds > 0:
            with self._db.session() as session:
                head = session.get(AuditHead, HEAD_ID)
                latest = session.scalar(select(func.max(AuditCheckpoint.size))) or 0
                if head is not None and head.size > latest:
                    signed = self._checkpointer.write(session, lock_head(session)).size
        sent = self._witnesses.deliver_due() if self._witnesses is not None else WitnessSummary()
        return ScheduledSummary(checkpoint=signed, witnesses=sent)

    @staticmethod
    def _tree(session: Session) -> TiledTree:
        """The stored tree's subtree roots (tiles, and leaves where no tile covers)."""
        return tiles.tree(session)

    def _checkpoint_at(self, session: Session, size: int | None, at_least: int) -> AuditCheckpoint:
        stmt = select(AuditCheckpoint)
        if size is not None:
            stmt = stmt.where(AuditCheckpoint.size == size)
        else:
            stmt = stmt.where(AuditCheckpoint.size >= at_least).order_by(
                AuditCheckpoint.size.desc()
            )
        cp = session.scalars(stmt.limit(1)).first()
        if cp is None or cp.size < at_least:
            raise NotFoundError(
                f"no signed checkpoint {'of size ' + str(size) if size else 'covers'} "
                f"seq {at_least}: sign one with `meshclaw audit checkpoint`"
            )
        return cp

    def inclusion_proof(self, caller: Caller, seq: int, size: int | None = None) -> dict[str, Any]:
        """Proof that record ``seq`` is leaf ``seq - 1`` of a signed checkpoint's tree.

        Only for a record of the caller's org or a system record: another org's record
        answers exactly as a missing one does.
        """
        self._require(caller, "audit.read")
        if seq < 1:
            raise UserError("seq must be >= 1")
        with self._db.session() as session:
            org = session.execute(
                select(AuditEvent.org_id).where(AuditEvent.seq == seq)
            ).one_or_none()
            if org is None or org[0] not in (None, caller.org_id):
                raise NotFoundError(f"no audit record seq {seq} in this org's log")
            cp = self._checkpoint_at(session, size, seq)
            proof, leaf_hash = self._tree(session).run(
                lambda subtree: (inclusion_path(seq - 1, cp.size, subtree), subtree(seq - 1, seq))
            )
            self._record(session, caller, "audit.prove", {"seq": seq, "size": cp.size})
            return {
                "seq": seq,
                "leaf_index": seq - 1,
                "tree_size": cp.size,
                "leaf_hash": leaf_hash.hex(),
                "proof": [p.hex() for p in proof],
                "root_hash": cp.root_hash,
                "checkpoint": cp.note,
            }

    def consistency_proof(self, caller: Caller, old_size: int, new_size: int) -> dict[str, Any]:
        """Proof that the signed tree of ``new_size`` extends the signed tree of ``old_size``.

        Log-wide: it holds only sizes, roots and interior hashes, nothing of a record.
        """
        self._require(caller, "audit.verify")
        if not 0 <= old_size <= new_size:
            raise UserError("need 0 <= old size <= new size")
        with self._db.session() as session:
            new = self._checkpoint_at(session, new_size, new_size)
            old = self._checkpoint_at(session, old_size, old_size) if old_size else None
            proof = self._tree(session).run(partial(consistency_path, old_size, new_size))
            return {
                "old_size": old_size,
                "new_size": new_size,
                "old_root": old.root_hash if old else Frontier().root().hex(),
                "new_root": new.root_hash,
                "proof": [p.hex() for p in proof],
                "old_checkpoint": old.note if old else None,
                "new_checkpoint": new.note,
            }

    # -- verification -------------------------------------------------------------------

    def verify(
        self,
        caller: Caller | None = None,
        verifier: Verifier | None = None,
        progress: Callable[[int, int], None] | None = None,
        *,
        workers: int | None = None,
        witnesses: bool = True,
        held: Sequence[SignedNote] = (),
    ) -> Report:
        """Recompute the whole tree from the store and check every checkpoint.

        Log-wide (the tree is): the report holds counts, sizes, the root and the position
        of the first problem, never a record's org, actor, resource or details.

        ``workers``: processes that check records (None: the ``audit.verify_workers``
        setting; 0 there means one per CPU from ``PARALLEL_MIN`` records on; 1: serial).
        The findings are the same either way. ``witnesses``: also fetch the checkpoint
        each configured HTTP witness holds and compare it with the log, and check every
        stored witness cosignature over the log's checkpoint of its size; ``held``: other
        copies of checkpoints kept outside the store (files, syslog), compared likewise.
        """
        if caller is not None:
            self._require(caller, "audit.verify")
        if workers is not None and workers < 1:
            raise UserError(f"workers must be >= 1, not {workers}")
        verifier = verifier or self.verifier()
        external = list(held)
        witness_notes: list[str] = []
        if witnesses and self._witnesses is not None:
            fetched, witness_notes = self._witnesses.fetch_held()
            external += fetched
        with self._db.session() as session:
            head = session.get(AuditHead, HEAD_ID)
            notes = [
                SignedNote(note=n, row_size=s)
                for s, n in session.execute(
                    select(AuditCheckpoint.size, AuditCheckpoint.note).order_by(
                        AuditCheckpoint.size
                    )
                )
            ]
            notes += external
            size = head.size if head is not None else 0
            count = workers or self._verify_workers or default_workers()
            if workers is None and not self._verify_workers and size < PARALLEL_MIN:
                count = 1
            runs: Iterable[Checked] | None = None
            if count > 1 and parallel_possible(self._db.url):
                runs = checked_runs(self._db.url, ranges(session, workers=count), count)
            report = verify_checked(
                runs if runs is not None else serial_runs(record_views(session), 1),
                notes,
                verifier,
                origin=self.origin,
                expected_size=size,
                progress=None
                if progress is None or head is None
                else partial(_progress, progress, head.size),
            )
            if report.ok and head is not None:
                head_root = Frontier.from_hex(head.size, head.frontier).root().hex()
                if report.root != head_root or report.root != head.root:
                    report.ok = False
                    report.problem = _head_problem(head.size)
                elif tiles_problem := tiles.check(session, head.size):
                    report.ok, report.problem = False, tiles_problem
            if witnesses and self._witnesses is not None:
                report.cosigned, cosigned_problem = self._witnesses.check_cosignatures(session)
                if report.ok and cosigned_problem is not None:
                    report.ok, report.problem = False, cosigned_problem
        report.notes += witness_notes
        if caller is not None:
            with self._db.session() as session:
                self._record(
                    session, caller, "audit.verify", {"ok": report.ok, "size": report.size}
                )
        return report

    # -- retention ----------------------------------------------------------------------

    def redact(self, caller: Caller, before: datetime) -> int:
        """Remove actor, resource and details of the caller's org's records older than ``before``.

        Headers and hashes stay, so the log still verifies. Other orgs' records and system
        records are never touched: each org owns its own retention. Refused for records
        younger than the minimum retention, so retention cannot be used to hide recent acts.
        """
        self._require(caller, "audit.redact")
        latest = utcnow() - self._min_retention
        if before > latest:
            raise UserError(
                f"cannot redact records younger than the minimum retention "
                f"({self._min_retention.days} days): --before must be <= {latest:%Y-%m-%d}"
            )
        with self._db.session() as session:
            lock_head(session)  # redaction is ordered with appends
            result = session.execute(
                update(AuditEvent)
                .where(
                    AuditEvent.org_id == caller.org_id,
                    AuditEvent.ts < before,
                    AuditEvent.redacted_at.is_(None),
                )
                .values(
                    actor_user_id=None,
                    actor_agent_id=None,
                    resource=REDACTED_RESOURCE,
                    details={},
                    salt=None,
                    redacted_at=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
            count = int(getattr(result, "rowcount", 0) or 0)
            # In the org's own log: verify lets its cutoff cover that org's records only.
            self._sink.append_event(
                session,
                AuditRecord(
                    action=REDACT_ACTION,
                    resource="audit:log",
                    outcome="ok",
                    org_id=caller.org_id,
                    actor_user_id=caller.user_id,
                    details={"before": format_ts(before), "records": count},
                ),
            )
        return count

    # -- export -------------------------------------------------------------------------

    def export(
        self,
        caller: Caller,
        out: TextIO,
        *,
        since: datetime | None = None,
        since_seq: int | None = None,
    ) -> ExportSummary:
        """Write a bundle an outside auditor can verify with only the public key.

        The export is recorded and a checkpoint covering it is signed first; records of
        other orgs are withheld: only their place and leaf hash, so the tree still verifies.
        """
        self._require(caller, "audit.read")
        with self._db.session() as session:
            head = lock_head(session)
            # head + 1 is this export's own record: where an auditor's next incremental
            # export starts when nothing else happened. Past it is a mistake, not an
            # empty bundle with a fresh signature.
            if since_seq is not None and since_seq > head.size + 1:
                raise UserError(
                    f"since_seq {since_seq} is past the end of the log "
                    f"({head.size} records; the next is {head.size + 1})"
                )
            self._record(
                session,
                caller,
                "audit.export",
                {"since": since.isoformat() if since else None, "since_seq": since_seq},
            )
            end = self._checkpointer.write(session, lock_head(session))
        with self._db.session() as session:
            start_seq = since_seq or 1
            if since is not None:
                first = session.scalar(
                    select(AuditEvent.seq)
                    .where(AuditEvent.ts >= since)
                    .order_by(AuditEvent.seq)
                    .limit(1)
                )
                start_seq = max(start_seq, first if first is not None else end.size + 1)
            start_seq = max(1, min(start_seq, end.size + 1))
            start = self._tree(session).frontier(start_seq - 1)
            notes = session.scalars(
                select(AuditCheckpoint)
                .where(AuditCheckpoint.size >= start.size, AuditCheckpoint.size <= end.size)
                .order_by(AuditCheckpoint.size)
            ).all()
            counts = write_bundle(
                out,
                origin=self.origin,
                verifier_key=self.public_key(),
                start=start,
                end_size=end.size,
                records=record_views(
                    session, start_seq=start_seq, end_seq=end.size, org_id=caller.org_id
                ),
                notes=[(n.size, n.note) for n in notes],
            )
        return ExportSummary(
            start_seq=start_seq,
            end_seq=end.size,
            records=counts[0],
            withheld=counts[1],
            checkpoints=len(notes),
        )


def _head_problem(size: int) -> Problem:
    return Problem(
        kind="head",
        seq=size,
        message="the log head's stored frontier does not match the recomputed tree",
    )


def build_audit(
    db: Database, settings: Settings, access: ApiAuthorizer | None = None
) -> tuple[StoreAuditSink, AuditLog]:
    """The sink every service appends through, and the log service over the same store.

    ``access``: the platform's authoriser, so org policies apply to the audit log too.
    """
    cfg = settings.audit
    checkpointer = Checkpointer(
        key_path=cfg.signing_key or settings.home / "audit-signing.key",
        origin=cfg.origin,
        every=cfg.checkpoint_every,
        directory=cfg.checkpoint_dir,
    )
    sink = StoreAuditSink(checkpointer=checkpointer)
    witnesses = Witnesses(
        db, sink, syslog=cfg.syslog, http=cfg.witnesses, timeout=cfg.witness_timeout_seconds
    )
    checkpointer.witnesses = witnesses
    log = AuditLog(
        db,
        sink,
        checkpointer,
        access=access,
        min_retention=timedelta(days=cfg.min_retention_days),
        witnesses=witnesses,
        verify_workers=cfg.verify_workers,
        checkpoint_seconds=cfg.checkpoint_seconds,
    )
    return sink, log
