"""Checkpoints leave the database: real syslog listeners and an HTTP witness on loopback.

The UDP and TCP syslog receivers are ``socketserver`` servers started here; the witness
is a small Starlette app that checks the log's signature with its public key, refuses
rollbacks, cosigns with its own Ed25519 key and hands back what it holds. Then the log is
rewritten and re-signed, as a DBA holding the key could, and ``verify`` must see that the
witness holds something else.
"""

from __future__ import annotations

import json
import re
import socketserver
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from meshclaw._loopback import LoopbackServer
from meshclaw.audit.checkpoint import CheckpointError, Signer, Verifier
from meshclaw.audit.merkle import Frontier
from meshclaw.audit.models import AuditWitnessSend
from meshclaw.audit.witness import MAX_ATTEMPTS
from meshclaw.clock import utcnow
from meshclaw.config import AuditSettings
from meshclaw.store.models import AuditEvent
from tests.audit.conftest import AuditWorld, append_many
from tests.audit.test_tamper import _alter_and_rehash

RFC5424 = re.compile(
    rb"^<109>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z \S+ meshclaw \d+ checkpoint - "
    rb"\xef\xbb\xbf(.*)$",
    re.DOTALL,
)


# -- syslog receivers -----------------------------------------------------------------


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.lock = threading.Lock()

    def add(self, message: bytes) -> None:
        with self.lock:
            self.messages.append(message)


class _UDPHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, _sock = self.request
        self.server.inbox.add(data)  # type: ignore[attr-defined]


class _TCPHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        # RFC 6587 octet counting: "<length> <message>", repeated.
        while True:
            digits = b""
            while (c := self.rfile.read(1)) not in (b" ", b""):
                digits += c
            if not digits:
                return
            self.server.inbox.add(self.rfile.read(int(digits)))  # type: ignore[attr-defined]


@pytest.fixture
def syslog() -> Iterator[tuple[str, _Inbox, str, _Inbox]]:
    udp = socketserver.ThreadingUDPServer(("127.0.0.1", 0), _UDPHandler)
    tcp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _TCPHandler)
    tcp.daemon_threads = True
    servers = (udp, tcp)
    udp.inbox, tcp.inbox = _Inbox(), _Inbox()  # type: ignore[attr-defined]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    yield (
        f"udp://127.0.0.1:{udp.server_address[1]}",
        udp.inbox,  # type: ignore[attr-defined]
        f"tcp://127.0.0.1:{tcp.server_address[1]}",
        tcp.inbox,  # type: ignore[attr-defined]
    )
    for s in servers:
        s.shutdown()
        s.server_close()


# -- the HTTP witness ------------------------------------------------------------------


class Witness:
    """Holds the latest checkpoint of one log; verifies, refuses rollbacks, cosigns."""

    def __init__(self) -> None:
        self.signer = Signer("witness.test", Ed25519PrivateKey.generate())
        self.log_key: Verifier | None = None
        self.held: str | None = None
        self.size = -1
        self.posts = 0
        self.fail_next = 0
        self.app = Starlette(routes=[Route("/log", self.endpoint, methods=["GET", "POST"])])

    async def endpoint(self, request: Request) -> PlainTextResponse:
        if request.method == "GET":
            if self.held is None:
                return PlainTextResponse("no checkpoint", status_code=404)
            return PlainTextResponse(self.held)
        self.posts += 1
        if self.fail_next:
            self.fail_next -= 1
            return PlainTextResponse("overloaded", status_code=503)
        note = (await request.body()).decode()
        assert self.log_key is not None
        try:
            checkpoint = self.log_key.open(note)
        except CheckpointError as exc:
            return PlainTextResponse(str(exc), status_code=403)
        if checkpoint.size < self.size:
            return PlainTextResponse(str(self.size), status_code=409)
        cosignature = self.signer.sign(checkpoint).splitlines()[-1]
        self.held, self.size = note + cosignature + "\n", checkpoint.size
        return PlainTextResponse(cosignature + "\n")


@pytest.fixture
def witness() -> Iterator[tuple[Witness, str]]:
    w = Witness()
    with LoopbackServer(w.app, name="audit-witness") as server:
        yield w, f"{server.url}/log"


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)  # poll interval


def _sends(world: AuditWorld) -> list[AuditWitnessSend]:
    with world.platform.db.session() as session:
        return list(session.query(AuditWitnessSend).order_by(AuditWitnessSend.id))


def _world(
    audit_world: Callable[..., AuditWorld], witness: tuple[Witness, str], **audit: Any
) -> AuditWorld:
    w, url = witness
    world = audit_world(
        checkpoint_every=50,
        checkpoint_seconds=0,
        witnesses=[{"url": url, "key": w.signer.verifier.vkey()}],
        **audit,
    )
    w.log_key = world.log.verifier()
    return world


def test_checkpoints_reach_syslog_and_the_witness(
    audit_world: Callable[..., AuditWorld],
    syslog: tuple[str, _Inbox, str, _Inbox],
    witness: tuple[Witness, str],
) -> None:
    udp, udp_inbox, tcp, tcp_inbox = syslog
    w, url = witness
    world = _world(audit_world, witness, syslog=[udp, tcp])
    append_many(world.platform, 120 - world.log.head()[0])
    # Sent after commit by a background thread: no append waited for a witness.
    _wait_for(lambda: all(s.status == "sent" for s in _sends(world)), "the sends")
    sends = _sends(world)
    assert {(s.checkpoint_size, s.target) for s in sends} == {
        (size, target) for size in (50, 100) for target in (udp, tcp, url)
    }
    verifier = world.log.verifier()
    for inbox in (udp_inbox, tcp_inbox):
        _wait_for(lambda inbox=inbox: len(inbox.messages) == 2, "syslog messages")  # type: ignore[misc]
        sizes = []
        for message in inbox.messages:
            match = RFC5424.match(message)
            assert match is not None, message[:120]
            sizes.append(verifier.open(match.group(1).decode()).size)
        assert sorted(sizes) == [50, 100]
    # The witness checked the signature and cosigned; the cosignature is kept and verifies.
    assert w.size == 100
    listed = {c.size: c for c in world.log.checkpoints(world.auditor)}
    assert listed[100].cosignatures and listed[50].cosignatures
    cosigned = listed[100].note + "\n".join(listed[100].cosignatures) + "\n"
    assert w.signer.verifier.open(cosigned).size == 100
    # What the witness holds agrees with the log.
    report = world.log.verify()
    assert report.ok, report.problem
    assert report.witnessed == 1


def _rewrite_and_resign(world: AuditWorld, *, seq: int, resign: bool) -> None:
    """What a DBA holding the signing key could do: alter a record, re-hash it, fix the
    head, and replace every checkpoint with one signed over the new tree (or drop them)."""
    db_file = world.platform.settings.home / "meshclaw.db"
    con = sqlite3.connect(db_file)
    with con:
        _alter_and_rehash(con, seq=seq)
        frontier = Frontier()
        for (leaf,) in con.execute("SELECT leaf_hash FROM audit_events ORDER BY seq"):
            frontier.append(bytes.fromhex(leaf))
        sizes = [s for (s,) in con.execute("SELECT size FROM audit_checkpoints ORDER BY size")]
        con.execute("DELETE FROM audit_checkpoints")
        con.execute(
            "UPDATE audit_head SET frontier=?, root=? WHERE id=1",
            (json.dumps(frontier.to_hex()), frontier.root().hex()),
        )
        if resign:
            leaves = [
                bytes.fromhex(h)
                for (h,) in con.execute("SELECT leaf_hash FROM audit_events ORDER BY seq")
            ]
            signer = world.log._checkpointer.signer
            from meshclaw.audit.checkpoint import Checkpoint

            for size in sizes:
                tree = Frontier()
                tree.extend(leaves[:size])
                note = signer.sign(Checkpoint(origin=world.log.origin, size=size, root=tree.root()))
                con.execute(
                    "INSERT INTO audit_checkpoints (size, root_hash, origin, key_id, note, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (size, tree.root().hex(), world.log.origin, signer.verifier.key_id.hex(),
                     note, utcnow().strftime("%Y-%m-%d %H:%M:%S.%f")),
                )  # fmt: skip
    con.close()


@pytest.mark.sqlite_only  # rewrites the database file (``_rewrite_and_resign``)
@pytest.mark.parametrize("resign", [True, False], ids=["re-signed", "checkpoints-dropped"])
def test_verify_flags_a_log_rewritten_after_it_was_witnessed(
    audit_world: Callable[..., AuditWorld], witness: tuple[Witness, str], resign: bool
) -> None:
    w, _ = witness
    world = _world(audit_world, witness)
    append_many(world.platform, 120 - world.log.head()[0])
    _wait_for(lambda: w.size == 100, "the witness")
    assert world.log.verify().ok

    _rewrite_and_resign(world, seq=30, resign=resign)
    alone = world.log.verify(witnesses=False)
    assert alone.ok, "without the witness the rewrite cannot be seen (that is the point)"
    report = world.log.verify()
    assert not report.ok and report.problem is not None
    assert report.problem.kind == "witness" and report.problem.checkpoint_size == 100
    assert "witness http://" in report.problem.message
    if not resign:
        assert report.problem.range == (1, 100)

    # The same comparison from a copy of the witnessed note, e.g. on an auditor's machine.
    held = world.platform.settings.home / "held.checkpoint"
    assert w.held is not None
    held.write_text(w.held)
    from typer.testing import CliRunner

    from meshclaw.cli.main import app

    token = world.platform.accounts.issue_token(world.auditor.user_id, "cli")
    result = CliRunner().invoke(
        app,
        ["audit", "verify", "--no-witnesses", "--held", str(held), "--json"],
        env={"MESHCLAW_HOME": str(world.platform.settings.home), "MESHCLAW_TOKEN": token,
             "MESHCLAW_EMBEDDED_MODEL_SERVER": "false",
             "MESHCLAW_DATABASE_URL": world.platform.settings.database_url,
             "MESHCLAW_CONFIG": None, "MESHCLAW_AUDIT__CHECKPOINT_SECONDS": "0"},
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["problem"]["kind"] == "witness"


def test_a_failing_witness_is_retried_with_backoff_and_audited(
    audit_world: Callable[..., AuditWorld], witness: tuple[Witness, str]
) -> None:
    w, url = witness
    world = audit_world(
        checkpoint_every=0,
        checkpoint_seconds=0,
        witnesses=[{"url": url, "key": w.signer.verifier.vkey()}],
    )
    w.log_key = world.log.verifier()
    witnesses = world.log._witnesses
    assert witnesses is not None
    witnesses._background = False  # deliver by hand, one attempt at a time
    w.fail_next = 2
    world.log.checkpoint(world.auditor)
    first = witnesses.deliver_due()
    assert first.retried == 1
    (send,) = _sends(world)
    assert send.status == "pending" and send.attempts == 1 and "HTTP 503" in (send.last_error or "")
    assert send.due_at > utcnow() + timedelta(seconds=20)  # backed off
    assert witnesses.deliver_due().retried == 0  # not due yet
    with world.platform.db.session() as session:
        failures = session.query(AuditEvent).filter(AuditEvent.action == "audit.witness").all()
        assert [(f.outcome, f.details["target"]) for f in failures] == [("error", url)]
    later = utcnow() + timedelta(hours=2)
    assert witnesses.deliver_due(now=later).retried == 1
    assert witnesses.deliver_due(now=later + timedelta(hours=2)).sent == 1
    (send,) = _sends(world)
    assert send.status == "sent" and send.attempts == 3 and send.cosignature


def test_a_witness_that_never_answers_is_given_up_and_audited(
    audit_world: Callable[..., AuditWorld],
) -> None:
    world = audit_world(
        checkpoint_every=0,
        checkpoint_seconds=0,
        witnesses=[{"url": "http://127.0.0.1:9/log"}],  # discard port: nothing listens
        witness_timeout_seconds=2,
    )
    witnesses = world.log._witnesses
    assert witnesses is not None
    witnesses._background = False
    world.log.checkpoint(world.auditor)
    now = utcnow()
    for _ in range(MAX_ATTEMPTS):
        witnesses.deliver_due(now=now)
        now += timedelta(hours=2)
    (send,) = _sends(world)
    assert send.status == "failed" and send.attempts == MAX_ATTEMPTS
    with world.platform.db.session() as session:
        outcomes = [
            e.outcome
            for e in session.query(AuditEvent).filter(AuditEvent.action == "audit.witness")
        ]
    assert outcomes == ["error", "failed"]
    report = world.log.verify()
    assert report.ok and any("not reachable" in n for n in report.notes)


def test_a_cosignature_by_another_key_is_refused(
    audit_world: Callable[..., AuditWorld], witness: tuple[Witness, str]
) -> None:
    w, url = witness
    other = Signer("witness.test", Ed25519PrivateKey.generate()).verifier.vkey()
    world = audit_world(
        checkpoint_every=0, checkpoint_seconds=0, witnesses=[{"url": url, "key": other}]
    )
    w.log_key = world.log.verifier()
    witnesses = world.log._witnesses
    assert witnesses is not None
    witnesses._background = False
    world.log.checkpoint(world.auditor)
    assert witnesses.deliver_due().retried == 1
    (send,) = _sends(world)
    assert "no valid cosignature" in (send.last_error or "") and send.cosignature is None


@pytest.mark.parametrize(
    "target", ["syslog://host:514", "udp://host", "tcp://:514", "udp://host:70000"]
)
def test_bad_syslog_targets_are_refused(target: str) -> None:
    with pytest.raises(ValidationError, match=r"udp://host:port|port must be"):
        AuditSettings(syslog=[target])


def test_bad_witness_urls_are_refused() -> None:
    with pytest.raises(ValidationError):
        AuditSettings(witnesses=[{"url": "ftp://witness"}])


def test_held_notes_are_compared_on_a_bundle(
    audit_world: Callable[..., AuditWorld], tmp_path: Path
) -> None:
    """``--held`` works offline too: a bundle whose log disagrees with a held note fails."""
    from meshclaw.audit.bundle import verify_bundle
    from meshclaw.audit.checkpoint import Checkpoint
    from meshclaw.audit.verify import SignedNote

    world = audit_world(checkpoint_every=0, checkpoint_seconds=0)
    append_many(world.platform, 20)
    bundle = tmp_path / "bundle.jsonl"
    with bundle.open("w") as f:
        summary = world.log.export(world.auditor, f)
    signer = world.log._checkpointer.signer
    genuine = world.log.checkpoints(world.auditor)[-1].note
    forged = signer.sign(Checkpoint(origin=world.log.origin, size=10, root=b"\x07" * 32))
    verifier = world.log.verifier()
    ok = verify_bundle(bundle, verifier, [SignedNote(note=genuine, held_by="file a")])
    assert ok.ok and ok.witnessed == 1 and ok.size == summary.end_seq
    bad = verify_bundle(bundle, verifier, [SignedNote(note=forged, held_by="file b")])
    assert not bad.ok and bad.problem is not None
    assert bad.problem.kind == "witness" and bad.problem.checkpoint_size == 10
