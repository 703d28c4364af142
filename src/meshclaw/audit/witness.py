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
* **C2SP tlog-witness** witnesses (``protocol: tlog-witness``): ``POST
  <url>/add-checkpoint`` with ``old <size>``, the RFC 6962 consistency proof from the
  size the witness last cosigned, and the note; a ``409`` with ``text/x.tlog.size`` names
  the size the witness holds, and the request is made again from there once. The answer
  is a C2SP tlog-cosignature (``cosignature``), checked with the witness's key.

``audit verify`` checks every stored cosignature again, over the checkpoint the store
holds now: a log rewritten and re-signed after a witness cosigned it no longer matches.

Sends go through an outbox (``audit_witness_sends``): rows written in the transaction
that signs the checkpoint, sent after it commits by a background thread and by the
scheduler's audit job, claimed first (several schedulers may run), retried with back-off,
and failures recorded in the log (``audit.witness``). A slow witness never slows an
append: nothing here runs inside one.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session

from meshclaw.audit import tiles
from meshclaw.audit.checkpoint import (
    SIGNATURE_DASH,
    CheckpointError,
    Verifier,
    parse_checkpoint_body,
)
from meshclaw.audit.cosignature import CosignatureVerifier
from meshclaw.audit.merkle import consistency_path
from meshclaw.audit.models import AuditCheckpoint, AuditWitnessSend
from meshclaw.audit.sink import AuditRecord, StoreAuditSink
from meshclaw.audit.verify import Problem, SignedNote
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


def note_body(note: str) -> str:
    """A signed note's text above its signatures, with its final newline."""
    return note.partition("\n\n")[0] + "\n"


def _open_cosignature(witness: WitnessConfig, key: str, body: str, lines: list[str]) -> None:
    """Raise ``CheckpointError`` unless ``lines`` hold ``key``'s valid cosignature on
    ``body``: a C2SP tlog-cosignature for tlog-witness witnesses, else a plain signed-note
    signature."""
    if witness.protocol == "tlog-witness":
        CosignatureVerifier.from_vkey(key).verify(body, lines)
    else:
        Verifier.from_vkey(key).open(body + "\n" + "\n".join(lines) + "\n")


def check_cosignature(witness: WitnessConfig, note: str, lines: list[str]) -> None:
    """Raise ``WitnessRefused`` unless the witness's answer cosigns ``note`` with its key
    (any answer is accepted when no key is configured)."""
    if witness.key is None:
        return
    try:
        _open_cosignature(witness, witness.key, note_body(note), lines)
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
                witness = self.http.get(target)
                if witness is not None and witness.protocol == "tlog-witness":
                    outcome = self._send_tlog(client, witness, note)
                else:
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
            check_cosignature(self.http[target], note, lines)
            return _Outcome(status="sent", cosignature="\n".join(lines) or None)
        except (OSError, httpx.HTTPError, WitnessRefused) as exc:
            return _Outcome(status="error", error=f"{type(exc).__name__}: {exc}"[:2000])

    def _send_tlog(self, client: httpx.Client, witness: WitnessConfig, note: str) -> _Outcome:
        """``add-checkpoint`` from the size the witness last cosigned; once more from the
        size it names if it answers 409 with ``text/x.tlog.size``."""
        try:
            size = parse_checkpoint_body(note_body(note)).size
            old = self._cosigned_size(witness.url)
            for _ in range(2):
                if old > size:
                    return _Outcome(status="stale")
                answer = client.post(
                    witness.url.rstrip("/") + "/add-checkpoint",
                    content=self._add_checkpoint_body(old, size, note),
                    headers={"Content-Type": "text/plain; charset=utf-8"},
                )
                held = _tlog_size(answer)
                if held is None or held == old:
                    break
                old = held
            if answer.status_code == 409:
                raise WitnessRefused(
                    f"HTTP 409: the witness holds another tree of size {old} "
                    "(the log forked, or was rewritten after it was witnessed)"
                )
            if not answer.is_success:
                raise WitnessRefused(f"HTTP {answer.status_code}: {answer.text[:300]}")
            lines = cosignature_lines(answer.text[:_MAX_COSIGNATURE])
            if not lines:
                raise WitnessRefused("HTTP 200 without a cosignature line")
            check_cosignature(witness, note, lines)
            return _Outcome(status="sent", cosignature="\n".join(lines))
        except (OSError, httpx.HTTPError, WitnessRefused, CheckpointError) as exc:
            return _Outcome(status="error", error=f"{type(exc).__name__}: {exc}"[:2000])

    def _cosigned_size(self, target: str) -> int:
        """The largest checkpoint ``target`` cosigned for this log, as far as the log knows."""
        with self._db.session() as session:
            size = session.scalar(
                select(func.max(AuditWitnessSend.checkpoint_size)).where(
                    AuditWitnessSend.target == target, AuditWitnessSend.status == "sent"
                )
            )
        return int(size or 0)

    def _add_checkpoint_body(self, old: int, size: int, note: str) -> bytes:
        proof: list[bytes] = []
        if 0 < old < size:
            with self._db.session() as session:
                proof = tiles.tree(session).run(partial(consistency_path, old, size))
        lines = "".join(base64.b64encode(h).decode() + "\n" for h in proof)
        return f"old {old}\n{lines}\n{note}".encode()

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
        plain = [url for url, w in self.http.items() if w.protocol == "plain"]
        if not plain:
            return held, notes
        with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
            for url in plain:
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

    def check_cosignatures(self, session: Session) -> tuple[int, Problem | None]:
        """Check every stored cosignature of a witness whose key is configured over the
        checkpoint the store holds for that size now: (how many verified, the first
        problem). A rewritten and re-signed checkpoint, or one deleted after a witness
        cosigned it, is a ``witness`` problem."""
        keyed = {url: w for url, w in self.http.items() if w.key is not None}
        if not keyed:
            return 0, None
        notes = dict(session.execute(select(AuditCheckpoint.size, AuditCheckpoint.note)).all())
        checked = 0
        rows = session.execute(
            select(
                AuditWitnessSend.checkpoint_size,
                AuditWitnessSend.target,
                AuditWitnessSend.cosignature,
            )
            .where(
                AuditWitnessSend.target.in_(list(keyed)),
                AuditWitnessSend.cosignature.is_not(None),
            )
            .order_by(AuditWitnessSend.checkpoint_size)
        )
        for size, target, cosignature in rows:
            note = notes.get(size)
            if note is None:
                return checked, Problem(
                    kind="witness",
                    checkpoint_size=size,
                    message=f"witness {target} cosigned the checkpoint of this size, which "
                    "the log no longer holds",
                )
            witness = keyed[target]
            assert witness.key is not None
            try:
                _open_cosignature(
                    witness, witness.key, note_body(note), str(cosignature).splitlines()
                )
            except CheckpointError as exc:
                return checked, Problem(
                    kind="witness",
                    checkpoint_size=size,
                    message=f"witness {target}'s cosignature does not verify over the log's "
                    f"checkpoint: the log was rewritten after it was witnessed ({exc})",
                )
            checked += 1
        return checked, None


def _tlog_size(answer: httpx.Response) -> int | None:
    """The size a tlog-witness names in a 409 (``text/x.tlog.size``), else None."""
    if answer.status_code != 409:
        return None
    if not answer.headers.get("content-type", "").startswith("text/x.tlog.size"):
        return None
    text = answer.text.strip()
    return int(text) if text.isdigit() else None


_KICK = "meshclaw.audit.witness_kick"


def _forget_kick(session: Session, *_: Any) -> None:
    session.info.pop(_KICK, None)
