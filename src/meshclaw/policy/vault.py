"""The credential vault: delegated credentials encrypted at rest (envelope encryption).

Each entry (a reference such as ``mail``, for one user or as the default) is encrypted
with its own random 256-bit data key (AES-256-GCM); the data key is stored wrapped
(AES-256-GCM again) by the key-encryption key (KEK), which never touches the database.
The entry's reference and user are the associated data of both encryptions, so a row
copied onto another reference or user does not decrypt.

The KEK comes from ``$MESHCLAW_VAULT_KEY`` (32 bytes, URL-safe base64) or from the key
file (``vault_key_file``, default ``<home>/vault.key``, created with mode 0600 on first
use). ``rotate`` re-wraps every data key under a new KEK in one transaction; entries'
ciphertexts do not change, and the old KEK can be destroyed afterwards.

``VaultCredentialStore`` implements the connectors' ``CredentialStore``: values are
decrypted only when a connector resolves a reference for a call, and they are never
returned by any API, printed or logged (``Credential`` redacts them).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.orm import Session

from meshclaw.clock import utcnow
from meshclaw.connectors.credentials import Credential, CredentialStore
from meshclaw.errors import ConfigError
from meshclaw.ids import new_id
from meshclaw.policy.models import VaultEntry
from meshclaw.store.db import Database

KEY_ENV = "MESHCLAW_VAULT_KEY"
DEFAULT_USER = ""
"""``user_id`` of an entry's default (used when the owner has no entry of their own)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode())


@dataclass(frozen=True)
class Kek:
    """A key-encryption key. ``repr`` shows its id only."""

    key: bytes

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise ConfigError("a vault key must be 32 bytes (URL-safe base64 of 32 random bytes)")

    def __repr__(self) -> str:
        return f"Kek(id={self.id})"

    @property
    def id(self) -> str:
        """A fingerprint naming the key in each row, revealing nothing about it."""
        return hashlib.sha256(b"meshclaw-vault-kek:" + self.key).hexdigest()[:16]

    @classmethod
    def parse(cls, text: str, where: str) -> Kek:
        try:
            key = base64.urlsafe_b64decode(text.strip().encode())
        except ValueError:
            raise ConfigError(f"{where}: not URL-safe base64") from None
        if len(key) != 32:
            raise ConfigError(f"{where}: a vault key must decode to 32 bytes, got {len(key)}")
        return cls(key)

    @classmethod
    def generate(cls) -> Kek:
        return cls(secrets.token_bytes(32))

    def encoded(self) -> str:
        return base64.urlsafe_b64encode(self.key).decode()


def write_key_file(path: Path, kek: Kek) -> None:
    """Write a key file readable by its owner only; never overwrites."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; refusing to overwrite a vault key") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(kek.encoded() + "\n")


def read_key_file(path: Path) -> Kek:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"no vault key file {path}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"vault key file {path} is readable by others: chmod 600 {path}")
    return Kek.parse(path.read_text(), str(path))


def load_kek(key_file: Path, *, create: bool = True) -> Kek:
    """The KEK: ``$MESHCLAW_VAULT_KEY``, else the key file (created if missing and allowed)."""
    from_env = os.environ.get(KEY_ENV)
    if from_env:
        return Kek.parse(from_env, f"${KEY_ENV}")
    if create and not key_file.exists():
        write_key_file(key_file, Kek.generate())
    return read_key_file(key_file)


@dataclass(frozen=True, kw_only=True)
class EntryInfo:
    """What may be shown about an entry: never its values."""

    ref: str
    user_id: str | None
    fields: list[str]
    kek_id: str
    updated_at: datetime


def _aad(ref: str, user_id: str) -> bytes:
    return json.dumps([ref, user_id]).encode()


class Vault:
    def __init__(self, db: Database, kek: Kek | Callable[[], Kek]) -> None:
        """``kek`` may be a loader: it is called on first use, so a platform that never
        touches a credential never reads (or creates) a key."""
        self._db = db
        self._kek_source = kek
        self._loaded: Kek | None = kek if isinstance(kek, Kek) else None

    @property
    def _kek(self) -> Kek:
        if self._loaded is None:
            assert not isinstance(self._kek_source, Kek)
            self._loaded = self._kek_source()
        return self._loaded

    @property
    def kek_id(self) -> str:
        return self._kek.id

    def put(self, ref: str, values: Mapping[str, str], *, user_id: str | None = None) -> None:
        """Store (or replace) an entry under a fresh data key."""
        if not ref or not values:
            raise ConfigError("a vault entry needs a reference and at least one field")
        user = user_id or DEFAULT_USER
        aad = _aad(ref, user)
        dek = AESGCM.generate_key(bit_length=256)
        nonce, wrap_nonce = os.urandom(12), os.urandom(12)
        plaintext = json.dumps({str(k): str(v) for k, v in values.items()}).encode()
        ciphertext = AESGCM(dek).encrypt(nonce, plaintext, aad)
        wrapped = AESGCM(self._kek.key).encrypt(wrap_nonce, dek, aad)
        fields = sorted(str(k) for k in values)
        with self._db.session() as session:
            row = self._row(session, ref, user)
            if row is None:
                row = VaultEntry(id=new_id("vlt"), ref=ref, user_id=user)
                session.add(row)
            row.kek_id = self._kek.id
            row.wrapped_dek = _b64(wrap_nonce + wrapped)
            row.ciphertext = _b64(nonce + ciphertext)
            row.fields = fields
            row.updated_at = utcnow()

    def get(self, ref: str, *, user_id: str | None = None) -> dict[str, str] | None:
        """The decrypted values of exactly this entry, or None."""
        user = user_id or DEFAULT_USER
        with self._db.session() as session:
            row = self._row(session, ref, user)
            if row is None:
                return None
            return self._decrypt(row, self._kek)

    def delete(self, ref: str, *, user_id: str | None = None) -> bool:
        with self._db.session() as session:
            row = self._row(session, ref, user_id or DEFAULT_USER)
            if row is None:
                return False
            session.delete(row)
            return True

    def entries(self) -> list[EntryInfo]:
        with self._db.session() as session:
            rows = session.scalars(select(VaultEntry).order_by(VaultEntry.ref, VaultEntry.user_id))
            return [
                EntryInfo(
                    ref=r.ref,
                    user_id=r.user_id or None,
                    fields=list(r.fields),
                    kek_id=r.kek_id,
                    updated_at=r.updated_at,
                )
                for r in rows
            ]

    def rotate(self, new: Kek) -> int:
        """Re-wrap every data key under ``new`` in one transaction; returns how many.

        Fails (and changes nothing) if any entry does not open with the current key.
        """
        count = 0
        with self._db.session() as session:
            for row in session.scalars(select(VaultEntry)):
                aad = _aad(row.ref, row.user_id)
                dek = self._unwrap(row, self._kek)
                wrap_nonce = os.urandom(12)
                row.wrapped_dek = _b64(wrap_nonce + AESGCM(new.key).encrypt(wrap_nonce, dek, aad))
                row.kek_id = new.id
                count += 1
        self._loaded = new
        return count

    @staticmethod
    def _row(session: Session, ref: str, user: str) -> VaultEntry | None:
        return session.scalar(
            select(VaultEntry).where(VaultEntry.ref == ref, VaultEntry.user_id == user)
        )

    @staticmethod
    def _unwrap(row: VaultEntry, kek: Kek) -> bytes:
        if row.kek_id != kek.id:
            raise ConfigError(
                f"vault entry {row.ref!r} is wrapped by key {row.kek_id}, "
                f"but the configured key is {kek.id}"
            )
        blob = _unb64(row.wrapped_dek)
        try:
            return AESGCM(kek.key).decrypt(blob[:12], blob[12:], _aad(row.ref, row.user_id))
        except InvalidTag:
            raise ConfigError(f"vault entry {row.ref!r} does not open: tampered with") from None

    def _decrypt(self, row: VaultEntry, kek: Kek) -> dict[str, str]:
        dek = self._unwrap(row, kek)
        blob = _unb64(row.ciphertext)
        try:
            plaintext = AESGCM(dek).decrypt(blob[:12], blob[12:], _aad(row.ref, row.user_id))
        except InvalidTag:
            raise ConfigError(f"vault entry {row.ref!r} does not open: tampered with") from None
        values: dict[str, str] = json.loads(plaintext)
        return values


class VaultCredentialStore:
    """The connectors' ``CredentialStore`` on the vault: the owner's entry, else the default.

    A reference the vault does not hold at all is looked up in ``fallback`` (the plain
    credentials file, for installations moving their entries into the vault)."""

    def __init__(self, vault: Vault, fallback: CredentialStore | None = None) -> None:
        self._vault = vault
        self._fallback = fallback

    def resolve(self, ref: str, *, user_id: str | None = None) -> Credential:
        values = self._vault.get(ref, user_id=user_id) if user_id else None
        if values is None:
            values = self._vault.get(ref)
        if values is not None:
            return Credential(ref=ref, values=values)
        if self._fallback is not None:
            return self._fallback.resolve(ref, user_id=user_id)
        who = f" for user {user_id}" if user_id else ""
        raise ConfigError(f"credential {ref!r} has no entry{who} and no default in the vault")

    def put(self, ref: str, values: Mapping[str, str], *, user_id: str | None = None) -> None:
        self._vault.put(ref, values, user_id=user_id)
