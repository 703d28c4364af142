"""The audit seam: every gateway decision and call is appended here.

``StoreAuditSink`` appends rows to ``audit_events`` inside the caller's transaction, so
the record and the act commit together or not at all (a failed audit write fails the
act). Each append hashes the record (``meshclaw.audit.canonical``), then locks the log's head
row, takes the next sequence number and extends the Merkle frontier kept in the head
(and keeps the root of every tile it completes, ``audit.tiles``); every
``checkpoint_every`` records it also signs a checkpoint in the same transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, cast

from sqlalchemy import BigInteger, Table, bindparam
from sqlalchemy.orm import Session

from meshclaw.audit.canonical import (
    body_digest_json,
    canonical_details,
    format_ts,
    header_json,
    new_salt,
)
from meshclaw.audit.merkle import Frontier, hash_leaf
from meshclaw.audit.models import HEAD_ID, AuditHead
from meshclaw.audit.tiles import store_tile
from meshclaw.clock import utcnow
from meshclaw.ids import new_id
from meshclaw.store.db import Prepared
from meshclaw.store.models import AuditEvent

if TYPE_CHECKING:
    from meshclaw.audit.signing import Checkpointer


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    action: str
    """What happened, e.g. ``model.invoke``, ``tool.write``, ``agent.create``."""
    resource: str
    outcome: str
    """ok, error, denied, ..."""
    org_id: str | None = None
    actor_user_id: str | None = None
    actor_agent_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class AuditSink(Protocol):
    def append(self, session: Session, record: AuditRecord) -> None:
        """Append within the caller's transaction, so the record and the act commit together."""
        ...


# Core statements, built once: the ORM's unit of work and per-call statement construction
# would cost more than the hashing (the compiled forms are cached on these objects).
_HEAD = cast(Table, AuditHead.__table__)
_BUMP = (
    _HEAD.update()
    .where(_HEAD.c.id == HEAD_ID)
    .values(size=_HEAD.c.size + bindparam("by", type_=BigInteger))
    .returning(_HEAD.c.size, _HEAD.c.frontier)
)
_SET = _HEAD.update().where(_HEAD.c.id == HEAD_ID)
_SET_IF_UNCHANGED = _HEAD.update().where(
    _HEAD.c.id == HEAD_ID,
    _HEAD.c.size == bindparam("old_size", type_=BigInteger),
    _HEAD.c.root == bindparam("old_root"),
)
_INSERT = cast(Table, AuditEvent.__table__).insert()
# The two writes of every append, compiled once (see ``store.db.Prepared``).
_WRITE_IF_UNCHANGED = Prepared(
    _SET_IF_UNCHANGED, ("old_size", "old_root", "size", "frontier", "root", "updated_at")
)
_EVENT_KEYS = [c.key for c in cast(Table, AuditEvent.__table__).columns]
_WRITE_EVENT = Prepared(_INSERT, _EVENT_KEYS)
# SQLite stores JSON as text: the details go in as the JCS text that was hashed.
_WRITE_EVENT_TEXT = Prepared(_INSERT, _EVENT_KEYS, as_given=("details",))


def _bump_head(session: Session, by: int) -> tuple[int, list[str]]:
    """Add ``by`` to the head's size and return (old size, frontier), holding its lock.

    One ``UPDATE ... RETURNING``: on PostgreSQL it row-locks the head, so writers queue
    here until the holder commits; on SQLite it takes the database write lock before
    anything is read, so the frontier can never come from a stale snapshot.
    """
    conn = session.connection()
    row = conn.execute(_BUMP, {"by": by}).one_or_none()
    if row is None:
        # Only on a store created without migrations; the migration inserts the head.
        conn.execute(
            _HEAD.insert().values(
                id=HEAD_ID,
                size=0,
                frontier=[],
                root=Frontier().root().hex(),
                updated_at=utcnow(),
            )
        )
        row = conn.execute(_BUMP, {"by": by}).one()
    return int(row.size) - by, list(row.frontier)


def lock_head(session: Session) -> Frontier:
    """Take the log's write lock for the rest of the transaction; return the current tree."""
    size, hashes = _bump_head(session, 0)
    return Frontier.from_hex(size, hashes)


@dataclass(frozen=True)
class _Head:
    """The head as this process last wrote it."""

    size: int
    root: str
    frontier: Frontier


class StoreAuditSink:
    """Appends to ``audit_events`` and extends the tree, in the caller's transaction.

    Fast path: the head this process wrote last is remembered, and the next append
    writes the new head with ``UPDATE ... WHERE size = :old AND root = :old_root``
    (one statement instead of lock-read-write). Equal size and root mean an equal
    frontier (anything else is a SHA-256 collision); no match (another process appended,
    or that transaction rolled back) falls back to the locking read. Either way the row
    lock (PostgreSQL) or write lock (SQLite) is held until commit.
    """

    def __init__(self, *, checkpointer: Checkpointer | None = None) -> None:
        self._checkpointer = checkpointer
        self._head: _Head | None = None

    def append(self, session: Session, record: AuditRecord) -> None:
        self.append_event(session, record)

    def append_event(self, session: Session, record: AuditRecord) -> int:
        """Append ``record``; return its sequence number."""
        # Canonicalised once, before any lock is taken (a bad record raises here): the
        # same text is hashed and, on SQLite, stored.
        details_json = canonical_details(record.details)
        salt = new_salt()
        digest = body_digest_json(
            record.actor_user_id,
            record.actor_agent_id,
            record.resource,
            details_json,
            salt,
            record.details,
        )
        event_id = new_id("aud")
        conn = session.connection()
        # SQLite: the two writes go straight to the driver's cursor (``Prepared.write``),
        # which costs a third of an execution through SQLAlchemy.
        on_sqlite = conn.dialect.name == "sqlite"
        if not on_sqlite:
            # The caller's pending writes take their row locks first: the head lock is then
            # the last lock the transaction takes, which keeps writers from deadlocking on
            # it. (SQLite has one database-wide write lock: nothing to order there.)
            session.flush()
        ts = utcnow()
        head = self._head
        written: tuple[int, bytes, Frontier, bytes | None] | None = None
        if head is not None:
            seq = head.size + 1
            leaf = self._leaf(seq, event_id, ts, record, digest)
            frontier = head.frontier.copy()
            tile = frontier.append(leaf)
            root = frontier.root().hex()
            updated = _WRITE_IF_UNCHANGED.write(
                conn,
                {
                    "old_size": head.size,
                    "old_root": head.root,
                    "size": seq,
                    "frontier": frontier.to_hex(),
                    "root": root,
                    "updated_at": ts,
                },
            )
            if updated == 1:
                written = seq, leaf, frontier, tile
        if written is None:
            size, hashes = _bump_head(session, 1)
            seq = size + 1
            leaf = self._leaf(seq, event_id, ts, record, digest)
            frontier = Frontier.from_hex(size, hashes)
            tile = frontier.append(leaf)
            root = frontier.root().hex()
            conn.execute(_SET, {"frontier": frontier.to_hex(), "root": root, "updated_at": ts})
            written = seq, leaf, frontier, tile
        seq, leaf, frontier, tile = written
        if tile is not None:
            store_tile(conn, seq, tile)
        (_WRITE_EVENT_TEXT if on_sqlite else _WRITE_EVENT).write(
            conn,
            {
                "seq": seq,
                "id": event_id,
                "ts": ts,
                "org_id": record.org_id,
                "actor_user_id": record.actor_user_id,
                "actor_agent_id": record.actor_agent_id,
                "action": record.action,
                "resource": record.resource,
                "outcome": record.outcome,
                "details": details_json if on_sqlite else json.loads(details_json),
                "salt": salt,
                "body_sha256": digest,
                "leaf_hash": leaf.hex(),
                "redacted_at": None,
            },
        )
        self._head = _Head(size=seq, root=root, frontier=frontier.copy())
        if self._checkpointer is not None and self._checkpointer.due(seq):
            self._checkpointer.write(session, frontier)
        return seq

    @staticmethod
    def _leaf(seq: int, event_id: str, ts: datetime, record: AuditRecord, digest: str) -> bytes:
        return hash_leaf(
            header_json(
                seq, event_id, format_ts(ts), record.org_id, record.action, record.outcome, digest
            )
        )


class MemoryAuditSink:
    """Keeps records in a list; for unit tests."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def append(self, session: Session, record: AuditRecord) -> None:
        self.records.append(record)
