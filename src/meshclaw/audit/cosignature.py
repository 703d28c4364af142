"""Witness cosignatures in the C2SP ``tlog-cosignature`` v1 format (Ed25519).

A cosignature is a signed-note signature line on a checkpoint, made by a witness::

    — <witness name> base64(key id || u64 timestamp, big-endian || Ed25519 signature)

The key id is ``SHA-256(name || "\\n" || 0x04 || public key)[:4]`` and the signature
covers ``"cosignature/v1\\ntime <timestamp>\\n"`` followed by the checkpoint's body
(origin, size, root, each with its newline). The witness says: as of that time, this is
the largest tree of the log it has seen, and it is consistent with what it saw before.

Witness keys are handed out as verifier keys ``<name>+<key id hex>+<base64(0x04 ||
key)>``. ``Cosigner`` is what a witness holds (MeshClaw's tests run one on loopback).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from meshclaw.audit.checkpoint import SIGNATURE_DASH, CheckpointError

ALG_COSIGNATURE_V1 = b"\x04"
_HEADER = "cosignature/v1\n"
_BLOB = 4 + 8 + 64


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _key_id(name: str, key: Ed25519PublicKey) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ALG_COSIGNATURE_V1 + _raw(key)).digest()[:4]


def signed_message(body: str, timestamp: int) -> bytes:
    """What a v1 cosignature signs: the header, the time, then the checkpoint body."""
    return f"{_HEADER}time {timestamp}\n{body}".encode()


@dataclass(frozen=True)
class CosignatureVerifier:
    """One witness's public key, to check its cosignatures."""

    name: str
    public_key: Ed25519PublicKey

    @property
    def key_id(self) -> bytes:
        return _key_id(self.name, self.public_key)

    def vkey(self) -> str:
        raw = base64.b64encode(ALG_COSIGNATURE_V1 + _raw(self.public_key)).decode()
        return f"{self.name}+{self.key_id.hex()}+{raw}"

    @classmethod
    def from_vkey(cls, text: str) -> CosignatureVerifier:
        parts = text.strip().split("+", 2)  # base64 may itself contain "+"
        if len(parts) != 3 or not parts[0]:
            raise CheckpointError("witness key must look like <name>+<key id hex>+<base64 key>")
        name, hex_id, b64 = parts
        try:
            raw = base64.b64decode(b64, validate=True)
            claimed = bytes.fromhex(hex_id)
        except (binascii.Error, ValueError):
            raise CheckpointError("witness key: bad hex key id or base64 key") from None
        if len(raw) != 33 or raw[:1] != ALG_COSIGNATURE_V1:
            raise CheckpointError(
                "witness key: not an Ed25519 cosignature/v1 key (algorithm byte 0x04)"
            )
        verifier = cls(name, Ed25519PublicKey.from_public_bytes(raw[1:]))
        if verifier.key_id != claimed:
            raise CheckpointError("witness key: key id does not match the name and key")
        return verifier

    def verify(self, body: str, lines: list[str]) -> int:
        """The timestamp of this witness's valid cosignature on ``body`` among ``lines``.

        Lines by other keys are ignored (as the signed-note format asks); a line by this
        key that does not verify, or no line by it, raises ``CheckpointError``.
        """
        for line in lines:
            parts = line.split(" ")
            if len(parts) != 3 or parts[0] != SIGNATURE_DASH or parts[1] != self.name:
                continue
            try:
                blob = base64.b64decode(parts[2], validate=True)
            except binascii.Error:
                continue
            if len(blob) != _BLOB or blob[:4] != self.key_id:
                continue
            (timestamp,) = struct.unpack(">Q", blob[4:12])
            try:
                self.public_key.verify(blob[12:], signed_message(body, timestamp))
            except InvalidSignature:
                raise CheckpointError(
                    f"the cosignature by witness {self.name} does not verify over this "
                    "checkpoint: the checkpoint differs from the one the witness signed"
                ) from None
            return int(timestamp)
        raise CheckpointError(f"no cosignature by witness key {self.vkey()}")


@dataclass(frozen=True)
class Cosigner:
    """A witness's signing key."""

    name: str
    private_key: Ed25519PrivateKey

    @property
    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, self.private_key.public_key())

    def cosign(self, body: str, timestamp: int) -> str:
        """One signature line (with its newline) on a checkpoint ``body``."""
        if not 0 <= timestamp < 2**63:
            raise ValueError("a cosignature's timestamp must be in [0, 2^63)")
        signature = self.private_key.sign(signed_message(body, timestamp))
        blob = self.verifier.key_id + struct.pack(">Q", timestamp) + signature
        return f"{SIGNATURE_DASH} {self.name} {base64.b64encode(blob).decode()}\n"
