"""Witnesses: every signed checkpoint is also sent outside the database.

A DBA who rewrites the log can re-sign it only if they hold the key too; even then they
cannot rewrite what others already hold. So each checkpoint goes to

* **syslog receivers** (``audit.syslog``): one RFC 5424 message per checkpoint, over UDP
  (one datagram) or TCP (octet-counting framing, RFC 6587 §3.4.1, so the multi-line note
  arrives whole). Facility 13 (log audit), severity 5 (notice), MSGID ``checkpoint``,
  the message is the signed note in UTF-8 (with the BOM RFC 5424 asks for). The stdlib's
  ``SysLogHandler`` writes the older RFC 3164 header and ends TCP messages with a NUL
  instead of counting octets, and the RFC 5424 packages on PyPI are unmaintained; the
  format is a dozen lines, written here.
* **HTTP witnesses** (``audit.witnesses``): ``POST <url>`` with the signed note as
  ``text/plain``; a 2xx answer may carry the witness's cosignature (signed-note
  signature lines over the same checkpoint body), which is stored beside the checkpoint
  and, when the witness's key is configured, checked first. ``409`` means the witness
  already holds a newer checkpoint of this log (not an error). ``GET <url>`` returns the
  latest checkpoint it holds, which ``audit verify`` compares with the log.

Sends go through an outbox (``audit_witness_sends``): rows written in the transaction
that signs the checkpoint, sent after it commits by a background thread and by the
scheduler's audit job, claimed first (several schedulers may run), retried with back-off,
and failures recorded in the log (``audit.witness``). A slow witness never slows an
append: nothing here runs inside one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from meshclaw.audit.checkpoint import SIGNATURE_DASH, CheckpointError, Verifier
from meshclaw.audit.models import AuditCheckpoint, AuditWitnessSend
from meshclaw.audit.sink import AuditRecord, StoreAuditSink
from meshclaw.audit.verify import SignedNote
from meshclaw.clock import utcnow
from meshclaw.config import WitnessConfig
from meshclaw.store.db import Database

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
CLAIM = timedelta(minutes=2)
"""How long a claimed send is left to its sender before another may retry it."""
SYSLOG_FACILITY = 13  # log audit
SYSLOG_SEVERITY = 5  # notice
_BOM = b"\xef\xbb\xbf"
_MAX_COSIGNATURE = 8192
_ACTION = "audit.witness"


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(30 * 2 ** (attempts - 1), 3600))


# -- syslog ------------------------------------------------------------------------------


def _hostname() -> str:
    name = "".join(c for c in socket.gethostname() if 33 <= ord(c) <= 126)
    return name[:255] or "-"


def syslog_message(note: str, *, ts: datetime | None = None, hostname: str | None = None) -> bytes:
    """An RFC 5424 message carrying one signed checkpoint note."""
    when = (ts or utcnow()).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    pri = SYSLOG_FACILITY * 8 + SYSLOG_SEVERITY
    header = f"<{pri}>1 {when} {hostname or _hostname()} meshclaw {os.getpid()} checkpoint - "
    return header.encode("ascii") + _BOM + note.encode("utf-8")


def _address(target: str) -> tuple[str, str, int]:
    scheme, _, rest = target.partition("://")
    host, _, port = rest.rpartition(":")
    return scheme, host.strip("[]"), int(port)


def send_syslog(target: str, message: bytes, *, timeout: float) -> None:
    """Send one message to ``udp://host:port`` or ``tcp://host:port``."""
    scheme, host, port = _address(target)
    if scheme == "tcp":
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(str(len(message)).encode() + b" " + message)
        return
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, kind, proto) as sock:
        sock.settimeout(timeout)
        sock.sendto(message, addr)


# -- HTTP witnesses --------------------------------------------------------------------


class WitnessRefused(Exception):
    """The witness answered, but not with an acceptable cosignature (retried)."""


def cosignature_lines(answer: str) -> list[str]:
    """The signed-note signature lines of a witness's answer (anything else is ignored)."""
    return [
        line
        for line in answer.splitlines()
        if line.startswith(SIGNATURE_DASH + " ") and len(line.split(" ")) == 3
    ]


def check_cosignature(note: str, lines: list[str], key: str) -> None:
    """Raise unless ``lines`` hold a valid signature by ``key`` on ``note``'s checkpoint."""
    body = note.partition("\n\n")[0] + "\n"
    try:
        Verifier.from_vkey(key).open(body + "\n" + "\n".join(lines) + "\n")
    except CheckpointError as exc:
        raise WitnessRefused(f"no valid cosignature: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class WitnessSummary:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    """Given up after ``MAX_ATTEMPTS``."""
    stale: int = 0
    """The witness already held a newer checkpoint."""


@dataclass(frozen=True, kw_only=True)
class _Outcome:
    status: str
    """sent, stale, or error."""
    cosignature: str | None = None
    error: str | None = None


class Witnesses:
    """The outbox of checkpoints for syslog receivers and HTTP witnesses."""

    def __init__(
        self,
        db: Database,
        sink: StoreAuditSink,
        *,
        syslog: Sequence[str] = (),
        http: Sequence[WitnessConfig] = (),
        timeout: float = 10.0,
        background: bool = True,
    ) -> None:
        self._db = db
        self._sink = sink
        self.syslog = list(syslog)
        self.http = {w.url: w for w in http}
        self.timeout = timeout
        self._background = background
        """Send right after a checkpoint commits, in a thread (the scheduler retries)."""
        self._running = threading.Lock()
        self._again = threading.Event()

    @property
    def targets(self) -> list[str]:
        return [*self.syslog, *self.http]

    def enqueue(self, session: Session, size: int) -> None:
        """Queue checkpoint ``size`` for every target, in the signing transaction."""
        now = utcnow()
        for target in self.targets:
            session.add(
                AuditWitnessSend(
                    checkpoint_size=size, target=target, status="pending", attempts=0,
                    due_at=now, created_at=now,
                )
            )  # fmt: skip
        if self._background and not session.info.get(_KICK):
            session.info[_KICK] = True
            event.listen(session, "after_commit", self._after_commit, once=True)
            event.listen(session, "after_rollback", _forget_kick, once=True)

    def _after_commit(self, session: Session) -> None:
        session.info.pop(_KICK, None)
        self.kick()

    def kick(self) -> None:
        """Deliver what is due in a background thread (one at a time; never raises)."""
        if not self._running.acquire(blocking=False):
            self._again.set()
            return
        threading.Thread(target=self._drain, name="meshclaw-audit-witness", daemon=True).start()

    def _drain(self) -> None:
        try:
            while True:
                self._again.clear()
                try:
                    self.deliver_due()
                except Exception:
                    log.warning("sending audit checkpoints to witnesses failed", exc_info=True)
                if not self._again.is_set():
                    return
        finally:
            self._running.release()

    # -- sending -------------------------------------------------------------------------

    def deliver_due(self, *, now: datetime | None = None, limit: int = 100) -> WitnessSummary:
        """Send every queued checkpoint that is due; retry failures with back-off."""
        now = now or utcnow()
        counts = {"sent": 0, "retried": 0, "failed": 0, "stale": 0}
        claimed = self._claim(now, limit)
        if not claimed:
            return WitnessSummary()
        with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
            for send_id, target, note in claimed:
                outcome = self._send(client, target, note)
                counts[self._finish(send_id, outcome, now)] += 1
        return WitnessSummary(**counts)

    def _claim(self, now: datetime, limit: int) -> list[tuple[int, str, str]]:
        with self._db.session() as session:
            due = session.execute(
                select(
                    AuditWitnessSend.id,
                    AuditWitnessSend.due_at,
                    AuditWitnessSend.target,
                    AuditCheckpoint.note,
                )
                .join(AuditCheckpoint, AuditCheckpoint.size == AuditWitnessSend.checkpoint_size)
                .where(AuditWitnessSend.status == "pending", AuditWitnessSend.due_at <= now)
                .order_by(AuditWitnessSend.id)
                .limit(limit)
            ).all()
            claimed = []
            for send_id, due_at, target, note in due:
                taken = session.execute(
                    update(AuditWitnessSend)
                    .where(AuditWitnessSend.id == send_id, AuditWitnessSend.due_at == due_at)
                    .values(due_at=now + CLAIM)
                )
                if taken.rowcount:  # type: ignore[attr-defined]
                    claimed.append((send_id, target, note))
            return claimed

    def _send(self, client: httpx.Client, target: str, note: str) -> _Outcome:
        try:
            if target.startswith(("udp://", "tcp://")):
                send_syslog(target, syslog_message(note), timeout=self.timeout)
                return _Outcome(status="sent")
            answer = client.post(
                target, content=note.encode(), headers={"Content-Type": "text/plain; charset=utf-8"}
            )
            if answer.status_code == 409:
                return _Outcome(status="stale")
            if not answer.is_success:
                raise WitnessRefused(f"HTTP {answer.status_code}: {answer.text[:300]}")
            lines = cosignature_lines(answer.text[:_MAX_COSIGNATURE])
            key = self.http[target].key if target in self.http else None
            if key is not None:
                check_cosignature(note, lines, key)
            return _Outcome(status="sent", cosignature="\n".join(lines) or None)
        except (OSError, httpx.HTTPError, WitnessRefused) as exc:
            return _Outcome(status="error", error=f"{type(exc).__name__}: {exc}"[:2000])

    def _finish(self, send_id: int, outcome: _Outcome, now: datetime) -> str:
        with self._db.session() as session:
            row = session.get(AuditWitnessSend, send_id)
            assert row is not None
            row.attempts += 1
            if outcome.status != "error":
                row.status, row.sent_at, row.last_error = outcome.status, utcnow(), None
                row.cosignature = outcome.cosignature
                return outcome.status
            row.last_error = outcome.error
            if row.attempts >= MAX_ATTEMPTS:
                row.status = "failed"
                self._record(session, row, "failed")
                return "failed"
            if row.attempts == 1 and not self._already_failing(session, row):
                self._record(session, row, "error")
            row.due_at = now + backoff(row.attempts)
            return "retried"

    @staticmethod
    def _already_failing(session: Session, row: AuditWitnessSend) -> bool:
        """Another send to the target is still being retried: its failure was recorded,
        so a witness that is down adds one record, not one per checkpoint."""
        other = session.scalar(
            select(AuditWitnessSend.id)
            .where(
                AuditWitnessSend.target == row.target,
                AuditWitnessSend.id != row.id,
                AuditWitnessSend.status == "pending",
                AuditWitnessSend.attempts > 0,
            )
            .limit(1)
        )
        return other is not None

    def _record(self, session: Session, row: AuditWitnessSend, outcome: str) -> None:
        self._sink.append_event(
            session,
            AuditRecord(
                action=_ACTION,
                resource=f"audit:checkpoint/{row.checkpoint_size}",
                outcome=outcome,
                details={
                    "target": row.target,
                    "attempts": row.attempts,
                    "error": (row.last_error or "")[:500],
                },
            ),
        )

    # -- reading back --------------------------------------------------------------------

    def fetch_held(self) -> tuple[list[SignedNote], list[str]]:
        """The checkpoint each HTTP witness holds now, and notes on those that hold none
        or cannot be reached (compared by ``verify``; not a failure of the log)."""
        held: list[SignedNote] = []
        notes: list[str] = []
        if not self.http:
            return held, notes
        with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
            for url in self.http:
                try:
                    answer = client.get(url)
                except httpx.HTTPError as exc:
                    notes.append(
                        f"witness {url}: not reachable ({type(exc).__name__}), not compared"
                    )
                    continue
                if answer.status_code == 404:
                    notes.append(f"witness {url}: holds no checkpoint of this log yet")
                elif not answer.is_success:
                    notes.append(f"witness {url}: HTTP {answer.status_code}, not compared")
                else:
                    held.append(SignedNote(note=answer.text, held_by=f"witness {url}"))
        return held, notes

    def cosignatures(self, session: Session, sizes: Sequence[int]) -> dict[int, list[str]]:
        """Stored cosignature lines by checkpoint size."""
        out: dict[int, list[str]] = {}
        if not sizes:
            return out
        rows = session.execute(
            select(AuditWitnessSend.checkpoint_size, AuditWitnessSend.cosignature).where(
                AuditWitnessSend.checkpoint_size.in_(list(sizes)),
                AuditWitnessSend.cosignature.is_not(None),
            )
        )
        for size, cosignature in rows:
            out.setdefault(size, []).extend(str(cosignature).splitlines())
        return out


_KICK = "meshclaw.audit.witness_kick"


def _forget_kick(session: Session, *_: Any) -> None:
    session.info.pop(_KICK, None)
