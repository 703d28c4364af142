"""A witness speaking the C2SP tlog-witness protocol, for tests on loopback.

Written from the spec (c2sp.org/tlog-witness, c2sp.org/tlog-cosignature): ``POST
/add-checkpoint`` takes ``old <size>``, consistency proof lines, a blank line and a signed
checkpoint; it answers 404 for an unknown origin, 403 when no trusted signature verifies,
400 for a malformed body or ``old`` above the size, 409 with ``text/x.tlog.size`` when
``old`` is not the size it last cosigned (or the same size with another root), 422 when
the proof does not verify, else 200 with its Ed25519 cosignature. The check of ``old``
and the update of the latest checkpoint happen under one lock, as the spec requires.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from meshclaw.audit.checkpoint import Checkpoint, CheckpointError, Verifier
from meshclaw.audit.cosignature import Cosigner
from meshclaw.audit.merkle import verify_consistency

MAX_PROOF_LINES = 63


class TlogWitness:
    """Trusts one log key; keeps the latest checkpoint it cosigned for that log."""

    def __init__(self, name: str = "witness.test/w1") -> None:
        self.cosigner = Cosigner(name, Ed25519PrivateKey.generate())
        self.origin: str | None = None
        self.log_key: Verifier | None = None
        self.latest: Checkpoint | None = None
        self.requests: list[tuple[int, int, int]] = []
        """(old size, checkpoint size, status) of every add-checkpoint call."""
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/add-checkpoint", self.add, methods=["POST"])])

    def _answer(self, old: int, size: int, text: str, status: int) -> PlainTextResponse:
        self.requests.append((old, size, status))
        media = "text/x.tlog.size" if status == 409 else "text/plain"
        return PlainTextResponse(text, status_code=status, media_type=media)

    async def add(self, request: Request) -> PlainTextResponse:
        text = (await request.body()).decode("utf-8", errors="replace")
        head, sep, note = text.partition("\n\n")
        lines = head.split("\n")
        if not sep or not lines[0].startswith("old "):
            return self._answer(-1, -1, "malformed request", 400)
        old_text = lines[0].removeprefix("old ")
        if not old_text.isdigit() or (old_text != "0" and old_text.startswith("0")):
            return self._answer(-1, -1, "bad old size", 400)
        old = int(old_text)
        if len(lines) - 1 > MAX_PROOF_LINES:
            return self._answer(old, -1, "too many proof lines", 400)
        try:
            proof = [base64.b64decode(line, validate=True) for line in lines[1:]]
        except binascii.Error:
            return self._answer(old, -1, "proof line is not base64", 400)
        assert self.log_key is not None
        origin = note.split("\n", 1)[0]
        if origin != self.origin:
            return self._answer(old, -1, "unknown log", 404)
        try:
            checkpoint = self.log_key.open(note)
        except CheckpointError as exc:
            return self._answer(old, -1, str(exc), 403)
        size = checkpoint.size
        if old > size:
            return self._answer(old, size, "old size above the checkpoint's", 400)
        with self.lock:
            held = self.latest
            held_size = held.size if held is not None else 0
            if old != held_size:
                return self._answer(old, size, f"{held_size}\n", 409)
            if held is not None and old == size and held.root != checkpoint.root:
                return self._answer(old, size, f"{held_size}\n", 409)
            if held is not None and not verify_consistency(
                old, size, held.root, checkpoint.root, proof
            ):
                return self._answer(old, size, "consistency proof does not verify", 422)
            if held is None and proof:
                return self._answer(old, size, "the proof from size 0 must be empty", 422)
            self.latest = checkpoint
        cosignature = self.cosigner.cosign(checkpoint.body(), int(time.time()))
        return self._answer(old, size, cosignature, 200)
