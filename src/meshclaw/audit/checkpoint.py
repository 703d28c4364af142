"""Signed checkpoints in the C2SP ``tlog-checkpoint`` / ``signed-note`` text format.

A checkpoint commits to a tree size and root hash::

    <origin>
    <tree size, decimal>
    <root hash, base64>

    — <key name> <base64(key id || Ed25519 signature)>

The signature covers the text above the blank line (including its final newline). The
key id is the first four bytes of ``SHA-256(name || "\\n" || 0x01 || public key)``; the
public key is shared as a *verifier key* ``<name>+<key id hex>+<base64(0x01 || key)>``,
the same format Go's ``golang.org/x/mod/sumdb/note`` and transparency-log witnesses use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from meshclaw.audit.merkle import HASH_SIZE
from meshclaw.errors import UserError

ALG_ED25519 = b"\x01"
SIGNATURE_DASH = "\u2014"


class CheckpointError(UserError):
    """A checkpoint or verifier key is malformed, or its signature does not verify."""


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


def _check_name(name: str) -> str:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise CheckpointError(f"key name {name!r} must be non-empty, without spaces or '+'")
    return name


def _public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ALG_ED25519 + _public_bytes(public_key)).digest()[
        :4
    ]


@dataclass(frozen=True)
class Signer:
    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        _check_name(self.name)

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.private_key.public_key())

    def sign(self, checkpoint: Checkpoint) -> str:
        body = checkpoint.body()
        sig = self.private_key.sign(body.encode())
        blob = key_id(self.name, self.private_key.public_key()) + sig
        return f"{body}\n{SIGNATURE_DASH} {self.name} {base64.b64encode(blob).decode()}\n"


@dataclass(frozen=True)
class Verifier:
    name: str
    public_key: Ed25519PublicKey

    def __post_init__(self) -> None:
        _check_name(self.name)

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    def vkey(self) -> str:
        """The verifier key string to hand to auditors."""
        raw = base64.b64encode(ALG_ED25519 + _public_bytes(self.public_key)).decode()
        return f"{self.name}+{self.key_id.hex()}+{raw}"

    @classmethod
    def from_vkey(cls, text: str) -> Verifier:
        parts = text.strip().split("+", 2)  # base64 may itself contain "+"
        if len(parts) != 3:
            raise CheckpointError("verifier key must look like <name>+<key id hex>+<base64 key>")
        name, hex_id, b64 = parts
        try:
            raw = base64.b64decode(b64, validate=True)
            claimed = bytes.fromhex(hex_id)
        except (binascii.Error, ValueError):
            raise CheckpointError("verifier key: bad hex key id or base64 key") from None
        if len(raw) != 33 or raw[:1] != ALG_ED25519:
            raise CheckpointError("verifier key: not an Ed25519 key (algorithm byte 0x01)")
        verifier = cls(name, Ed25519PublicKey.from_public_bytes(raw[1:]))
        if verifier.key_id != claimed:
            raise CheckpointError("verifier key: key id does not match the name and key")
        return verifier

    def open(self, note: str) -> Checkpoint:
        """Parse a signed checkpoint note and check this key's signature on it."""
        body, sep, sigs = note.partition("\n\n")
        if not sep:
            raise CheckpointError("checkpoint note has no blank line before its signatures")
        body += "\n"
        checkpoint = parse_checkpoint_body(body)
        found = False
        for line in sigs.splitlines():
            if not line:
                continue
            parts = line.split(" ")
            if len(parts) != 3 or parts[0] != SIGNATURE_DASH:
                raise CheckpointError(f"malformed signature line {line!r}")
            if parts[1] != self.name:
                continue
            try:
                blob = base64.b64decode(parts[2], validate=True)
            except binascii.Error:
                raise CheckpointError("signature is not base64") from None
            if len(blob) != 4 + 64 or blob[:4] != self.key_id:
                continue
            try:
                self.public_key.verify(blob[4:], body.encode())
            except InvalidSignature:
                raise CheckpointError(
                    f"signature by {self.name} does not verify: the checkpoint was altered "
                    "or signed by another key"
                ) from None
            found = True
        if not found:
            raise CheckpointError(f"checkpoint carries no signature by key {self.vkey()}")
        return checkpoint


def parse_checkpoint_body(body: str) -> Checkpoint:
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise CheckpointError("checkpoint body needs origin, size and root lines")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not origin:
        raise CheckpointError("checkpoint origin is empty")
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise CheckpointError(f"checkpoint tree size {size_text!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error:
        raise CheckpointError("checkpoint root hash is not base64") from None
    if len(root) != HASH_SIZE:
        raise CheckpointError("checkpoint root hash is not 32 bytes")
    return Checkpoint(origin=origin, size=int(size_text), root=root)
