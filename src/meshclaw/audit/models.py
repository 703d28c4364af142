"""Tables of the audit log besides ``audit_events`` (which lives in ``store/models.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from meshclaw.clock import utcnow
from meshclaw.store.models import Base

HEAD_ID = 1


class AuditHead(Base):
    """The log's single head row: locked ``FOR UPDATE`` by every append (orders writers).

    Holding the lock until commit makes sequence numbers dense and equal to commit order
    on PostgreSQL; on SQLite the database write lock does the same.
    """

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    """Number of records in the log (the last ``seq``)."""
    frontier: Mapped[list[Any]] = mapped_column(default=list)
    """Hex roots of the perfect subtrees of the tree of ``size`` leaves, left to right."""
    root: Mapped[str] = mapped_column(String(64), default="")
    """Hex root of the tree of ``size`` leaves (the frontier folded)."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditCheckpoint(Base):
    """A signed checkpoint (tree size + root hash) as a C2SP signed note."""

    __tablename__ = "audit_checkpoints"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    size: Mapped[int] = mapped_column(BigInteger, unique=True)
    root_hash: Mapped[str] = mapped_column(String(64))
    origin: Mapped[str] = mapped_column(String(200))
    key_id: Mapped[str] = mapped_column(String(8))
    """Hex id of the signing key (first 4 bytes of its note key hash)."""
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditWitnessSend(Base):
    """A checkpoint to send to one witness or syslog receiver (the outbox), and the answer.

    Written in the transaction that signs the checkpoint, sent after it commits, outside
    any append (``audit.witness``); retried with back-off until ``MAX_ATTEMPTS``.
    """

    __tablename__ = "audit_witness_sends"
    __table_args__ = (
        UniqueConstraint("checkpoint_size", "target"),
        Index("ix_audit_witness_sends_status_due", "status", "due_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    checkpoint_size: Mapped[int] = mapped_column(BigInteger)
    """The checkpoint (``audit_checkpoints.size``) to send."""
    target: Mapped[str] = mapped_column(String(500))
    """``udp://host:port``, ``tcp://host:port`` (syslog) or the witness's URL."""
    status: Mapped[str] = mapped_column(String(12), default="pending")
    """pending (send at ``due_at``), sent, stale (the witness holds a newer one), failed."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    cosignature: Mapped[str | None] = mapped_column(Text)
    """The witness's signature line(s) on the checkpoint, as it answered."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]


class AuditTile(Base):
    """The root of a complete *tile* of level ``level``: the perfect subtree of the
    ``TILE ** (level + 1)`` leaves from leaf ``tile * TILE ** (level + 1)`` on
    (``audit.merkle.TILE``; a level-``L + 1`` tile is the root over ``TILE`` level-``L``
    ones). Written in the transaction of the append that completes it, so proofs read a
    few tiles per level instead of every leaf hash; ``verify`` recomputes and compares
    them (``audit.tiles``)."""

    __tablename__ = "audit_tiles"
    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    """0: ``TILE`` leaves, 1: ``TILE ** 2`` leaves, ..."""
    tile: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[str] = mapped_column(String(64))
