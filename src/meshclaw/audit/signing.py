"""Writing signed checkpoints: into the store, a directory, and the witnesses' outbox.

The store row is written in the same transaction as the records it covers. The file is
written only after that transaction commits (a rolled-back checkpoint must never leave a
note behind: a later, different note for the same size would look like a fork).
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from meshclaw.audit.checkpoint import Checkpoint, Signer
from meshclaw.audit.keys import load_or_create_signing_key
from meshclaw.audit.merkle import Frontier
from meshclaw.audit.models import AuditCheckpoint
from meshclaw.clock import utcnow
from meshclaw.errors import ConfigError, ConflictError

if TYPE_CHECKING:
    from meshclaw.audit.witness import Witnesses


class Checkpointer:
    def __init__(
        self,
        *,
        key_path: Path,
        origin: str,
        every: int = 0,
        directory: Path | None = None,
        witnesses: Witnesses | None = None,
    ) -> None:
        self.key_path = key_path
        self.origin = origin
        self.every = every
        """Sign a checkpoint every this many records (0: only on request)."""
        self.directory = directory
        self.witnesses = witnesses
        """Each new checkpoint is queued for these (sent after commit)."""
        self._key_checked = False

    @cached_property
    def signer(self) -> Signer:
        """Loaded (or created, mode 0600) on first use, not at start-up."""
        return Signer(self.origin, load_or_create_signing_key(self.key_path))

    def _check_key(self, session: Session) -> None:
        """Refuse to sign with a key other than the one that signed the log so far.

        Checkpoints signed by two keys would not verify with the install's public key:
        a process started on another host without the install's key must stop here
        (before creating a key of its own), not fork the log's signatures."""
        if self._key_checked:
            return
        last = session.scalar(
            select(AuditCheckpoint.key_id).order_by(AuditCheckpoint.size.desc()).limit(1)
        )
        if last is not None:
            if not self.key_path.exists():
                raise ConfigError(
                    f"no audit signing key at {self.key_path}, and the log's checkpoints are "
                    f"signed by key {last[:16]}: give every process the install's key "
                    "(audit.signing_key; docs/deploy.md) instead of a new one"
                )
            mine = self.signer.verifier.key_id.hex()
            if mine != last:
                raise ConfigError(
                    f"the audit signing key at {self.key_path} (key {mine[:16]}) is not the "
                    f"key that signed the log's checkpoints ({last[:16]}): every process "
                    "must sign with the same key (audit.signing_key; docs/deploy.md)"
                )
        self._key_checked = True

    def due(self, size: int) -> bool:
        return self.every > 0 and size % self.every == 0

    def write(self, session: Session, frontier: Frontier) -> AuditCheckpoint:
        """Sign ``frontier``'s tree and store it (idempotent per tree size)."""
        root = frontier.root()
        existing = session.scalar(
            select(AuditCheckpoint).where(AuditCheckpoint.size == frontier.size)
        )
        if existing is not None:
            if existing.root_hash != root.hex():
                raise ConflictError(
                    f"a checkpoint for tree size {frontier.size} with another root exists: "
                    "the log has forked"
                )
            return existing
        self._check_key(session)
        note = self.signer.sign(Checkpoint(origin=self.origin, size=frontier.size, root=root))
        row = AuditCheckpoint(
            size=frontier.size,
            root_hash=root.hex(),
            origin=self.origin,
            key_id=self.signer.verifier.key_id.hex(),
            note=note,
            created_at=utcnow(),
        )
        session.add(row)
        if self.witnesses is not None and self.witnesses.targets:
            self.witnesses.enqueue(session, frontier.size)
        if self.directory is not None:
            self._publish_after_commit(session, frontier.size, note)
        return row

    def _publish_after_commit(self, session: Session, size: int, note: str) -> None:
        assert self.directory is not None
        if not session.info.get(_LISTENING):
            event.listen(session, "after_commit", _publish)
            event.listen(session, "after_rollback", _discard)
            session.info[_LISTENING] = True
        session.info.setdefault(_PENDING, []).append((self.directory, size, note))


_PENDING = "meshclaw.audit.pending_checkpoint_notes"
_LISTENING = "meshclaw.audit.checkpoint_listeners"


def _publish(session: Session) -> None:
    for directory, size, note in session.info.pop(_PENDING, []):
        write_note_file(directory, size, note)


def _discard(session: Session) -> None:
    session.info.pop(_PENDING, None)


def write_note_file(directory: Path, size: int, note: str) -> None:
    """``<size>.checkpoint`` per tree size, and ``checkpoint`` for the latest (atomic)."""
    directory.mkdir(parents=True, exist_ok=True)
    numbered = directory / f"{size:012d}.checkpoint"
    _atomic_write(numbered, note)
    latest = directory / "checkpoint"
    current = _size_of(latest)
    if current is None or current <= size:
        _atomic_write(latest, note)


def _size_of(path: Path) -> int | None:
    try:
        return int(path.read_text().split("\n")[1])
    except (OSError, IndexError, ValueError):
        return None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
