"""Tables of the audit log besides ``audit_events`` (which lives in ``store/models.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Integer, String, Text
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
