"""The credential vault: delegated credentials encrypted at rest (envelope encryption).

Each entry (a reference such as ``mail``, for one user or as the default) is encrypted
with its own random 256-bit data key (AES-256-GCM); the data key is stored wrapped
(AES-256-GCM again) by the key-encryption key (KEK), which never touches the database.
Entries belong to an org (each org may have its own ``mail`` default; every read and
write names the org). The entry's org, reference and user are the associated data of
both encryptions, so a row moved to another org, reference or user does not decrypt.
Entries written before the vault was per org are bound to reference and user only
(``aad_version`` 1) until ``put`` or ``rotate`` re-encrypts them.

The KEK comes from ``$MESHCLAW_VAULT_KEY`` (32 bytes, URL-safe base64) or from the key
file (``vault_key_file``, default ``<home>/vault.key``, created with mode 0600 on first
use). ``rotate`` re-wraps every data key under a new KEK in one transaction (entries'
ciphertexts do not change, except old entries', re-encrypted bound to their org), and
the old KEK can be destroyed afterwards.

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

from meshclaw.audit.sink import AuditRecord, AuditSink
from meshclaw.clock import utcnow
from meshclaw.connectors.credentials import Credential, CredentialStore
from meshclaw.errors import ConfigError
from meshclaw.ids import new_id
from meshclaw.policy.models import VaultEntry
from meshclaw.store.db import Database
from meshclaw.store.models import Org

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


def load_kek(key_file: Path, *, create: bool | Callable[[], bool] = True) -> Kek:
    """The KEK: ``$MESHCLAW_VAULT_KEY``, else the key file (created if missing and allowed).

    ``create`` may be a question asked only when the file is missing: the platform allows
    a new key only while the store holds no entry, so a second host started without the
    install's key fails here, clearly, instead of writing entries no other host can open.
    """
    from_env = os.environ.get(KEY_ENV)
    if from_env:
        return Kek.parse(from_env, f"${KEY_ENV}")
    if not key_file.exists():
        if not (create() if callable(create) else create):
            raise ConfigError(
                f"no vault key at {key_file}, and the store already holds vault entries "
                f"wrapped by the install's key: give every process that key "
                f"(${KEY_ENV} or vault_key_file; docs/deploy.md) instead of a new one"
            )
        write_key_file(key_file, Kek.generate())
    return read_key_file(key_file)


@dataclass(frozen=True, kw_only=True)
class EntryInfo:
    """What may be shown about an entry: never its values."""

    ref: str
    user_id: str | None
    fields: list[str]
    kek_id: str
    org_bound: bool
    """Whether the ciphertexts are bound to the org (false for entries written before
    the vault was per org, until ``put`` or ``rotate`` re-encrypts them)."""
    updated_at: datetime


LEGACY_AAD = 1
"""Associated data of entries from before orgs: (reference, user)."""
ORG_AAD = 2
"""Associated data of entries now: (org, reference, user)."""


def _aad(row: VaultEntry) -> bytes:
    if row.aad_version == LEGACY_AAD:
        return json.dumps([row.ref, row.user_id]).encode()
    return json.dumps(["meshclaw-vault/2", row.org_id, row.ref, row.user_id]).encode()


class Vault:
    """Every read and write names the org: an org sees, uses and changes its own entries
    only, and two orgs may each hold an entry of the same reference."""

    def __init__(self, db: Database, kek: Kek | Callable[[], Kek]) -> None:
        """``kek`` may be a loader: it is called on first use, so a platform that never
        touches a credential never reads (or creates) a key."""
        self._db = db
        self._kek_source = kek
        self._loaded: Kek | None = kek if isinstance(kek, Kek) else None

    def is_empty(self) -> bool:
        """Whether no org holds any entry (a new key may then be made)."""
        with self._db.session() as session:
            return session.scalar(select(VaultEntry.ref).limit(1)) is None

    @property
    def _kek(self) -> Kek:
        if self._loaded is None:
            assert not isinstance(self._kek_source, Kek)
            self._loaded = self._kek_source()
        return self._loaded

    @property
    def kek_id(self) -> str:
        return self._kek.id

    def put(
        self, ref: str, values: Mapping[str, str], *, org_id: str, user_id: str | None = None
    ) -> None:
        """Store (or replace) ``org_id``'s entry under a fresh data key, bound to the org."""
        if not ref or not values:
            raise ConfigError("a vault entry needs a reference and at least one field")
        if not org_id:
            raise ConfigError("a vault entry belongs to an org; none given")
        user = user_id or DEFAULT_USER
        plaintext = json.dumps({str(k): str(v) for k, v in values.items()}).encode()
        with self._db.session() as session:
            if session.get(Org, org_id) is None:
                raise ConfigError(f"no org {org_id!r}")
            row = self._row(session, org_id, ref, user)
            if row is None:
                row = VaultEntry(id=new_id("vlt"), org_id=org_id, ref=ref, user_id=user)
                session.add(row)
            self._seal(row, plaintext, self._kek)
            row.fields = sorted(str(k) for k in values)
            row.updated_at = utcnow()

    def get(self, ref: str, *, org_id: str, user_id: str | None = None) -> dict[str, str] | None:
        """The decrypted values of exactly ``org_id``'s entry, or None."""
        with self._db.session() as session:
            row = self._row(session, org_id, ref, user_id or DEFAULT_USER)
            if row is None:
                return None
            return self._decrypt(row, self._kek)

    def delete(self, ref: str, *, org_id: str, user_id: str | None = None) -> bool:
        with self._db.session() as session:
            row = self._row(session, org_id, ref, user_id or DEFAULT_USER)
            if row is None:
                return False
            session.delete(row)
            return True

    def entries(self, *, org_id: str) -> list[EntryInfo]:
        """``org_id``'s entries (never their values)."""
        with self._db.session() as session:
            rows = session.scalars(
                select(VaultEntry)
                .where(VaultEntry.org_id == org_id)
                .order_by(VaultEntry.ref, VaultEntry.user_id)
            )
            return [
                EntryInfo(
                    ref=r.ref,
                    user_id=r.user_id or None,
                    fields=list(r.fields),
                    kek_id=r.kek_id,
                    org_bound=r.aad_version == ORG_AAD,
                    updated_at=r.updated_at,
                )
                for r in rows
            ]

    def oldest_org(self) -> str | None:
        """The install's first org: where pre-org credentials and settings belong."""
        with self._db.session() as session:
            found: str | None = session.scalar(
                select(Org.id).order_by(Org.created_at, Org.id).limit(1)
            )
            return found

    def rotate(self, new: Kek, *, audit: AuditSink | None = None) -> int:
        """Re-wrap every data key (of every org) under ``new`` in one transaction; returns
        how many entries.

        The install operator's act, not an org's: there is no caller and no Cedar action,
        because the key is the install's and no org may re-key another's entries. Only
        ``meshclaw vault rotate`` (run on the server, without an API token) calls it; the
        proof of being the operator is holding the current key (every entry is opened
        with it) and the new key file. With ``audit``, one install-wide record
        (``vault.rotate``, no org, no actor) commits with the re-wrap.

        Entries still bound to (reference, user) only are re-encrypted under a fresh data
        key and bound to their org as well. Fails (and changes nothing) if any entry does
        not open with the current key.
        """
        count = 0
        old = self._kek.id
        with self._db.session() as session:
            for row in session.scalars(select(VaultEntry)):
                if row.aad_version == LEGACY_AAD:
                    self._seal(row, self._open(row, self._kek), new)
                else:
                    dek = self._unwrap(row, self._kek)
                    wrap_nonce = os.urandom(12)
                    wrapped = AESGCM(new.key).encrypt(wrap_nonce, dek, _aad(row))
                    row.wrapped_dek = _b64(wrap_nonce + wrapped)
                    row.kek_id = new.id
                count += 1
            if audit is not None:
                audit.append(
                    session,
                    AuditRecord(
                        action="vault.rotate",
                        resource="vault:kek",
                        outcome="ok",
                        details={"old_key": old, "new_key": new.id, "entries": count},
                    ),
                )
        self._loaded = new
        return count

    @staticmethod
    def _row(session: Session, org_id: str, ref: str, user: str) -> VaultEntry | None:
        return session.scalar(
            select(VaultEntry).where(
                VaultEntry.org_id == org_id, VaultEntry.ref == ref, VaultEntry.user_id == user
            )
        )

    @staticmethod
    def _seal(row: VaultEntry, plaintext: bytes, kek: Kek) -> None:
        """Encrypt ``plaintext`` into ``row`` under a fresh data key, bound to its org."""
        row.aad_version = ORG_AAD
        aad = _aad(row)
        dek = AESGCM.generate_key(bit_length=256)
        nonce, wrap_nonce = os.urandom(12), os.urandom(12)
        row.ciphertext = _b64(nonce + AESGCM(dek).encrypt(nonce, plaintext, aad))
        row.wrapped_dek = _b64(wrap_nonce + AESGCM(kek.key).encrypt(wrap_nonce, dek, aad))
        row.kek_id = kek.id

    @staticmethod
    def _unwrap(row: VaultEntry, kek: Kek) -> bytes:
        if row.kek_id != kek.id:
            raise ConfigError(
                f"vault entry {row.ref!r} is wrapped by key {row.kek_id}, "
                f"but the configured key is {kek.id}"
            )
        try:
            blob = _unb64(row.wrapped_dek)
            return AESGCM(kek.key).decrypt(blob[:12], blob[12:], _aad(row))
        except (InvalidTag, ValueError):
            raise _tampered(row) from None

    def _open(self, row: VaultEntry, kek: Kek) -> bytes:
        dek = self._unwrap(row, kek)
        try:
            blob = _unb64(row.ciphertext)
            return AESGCM(dek).decrypt(blob[:12], blob[12:], _aad(row))
        except (InvalidTag, ValueError):
            raise _tampered(row) from None

    def _decrypt(self, row: VaultEntry, kek: Kek) -> dict[str, str]:
        values: dict[str, str] = json.loads(self._open(row, kek))
        return values


def _tampered(row: VaultEntry) -> ConfigError:
    # Names the entry, never its contents; the stored values stay where they are.
    who = f" of user {row.user_id}" if row.user_id else " (default)"
    return ConfigError(
        f"vault entry {row.ref!r}{who} does not open in this org: it was tampered with, "
        "or moved to another org, reference or user; put it again (meshclaw vault put)"
    )


class VaultCredentialStore:
    """The connectors' ``CredentialStore`` on the vault: within the connector's org, the
    owner's entry, else the org's default.

    ``fallback`` (the plain credentials file, for installations moving their entries into
    the vault) is install-wide, so it answers for the oldest org only: the org a
    single-org install has, and where settings connectors without an ``org`` belong.
    """

    def __init__(self, vault: Vault, fallback: CredentialStore | None = None) -> None:
        self._vault = vault
        self._fallback = fallback

    def resolve(
        self, ref: str, *, user_id: str | None = None, org_id: str | None = None
    ) -> Credential:
        if not org_id:
            # A connector outside any org must not borrow some org's credential.
            raise ConfigError(f"no credential {ref!r}: the vault answers within an org only")
        values = self._vault.get(ref, org_id=org_id, user_id=user_id) if user_id else None
        if values is None:
            values = self._vault.get(ref, org_id=org_id)
        if values is not None:
            return Credential(ref=ref, values=values)
        if self._fallback is not None and org_id == self._vault.oldest_org():
            return self._fallback.resolve(ref, user_id=user_id, org_id=org_id)
        missing = "no entry for this user and no default" if user_id else "no default entry"
        raise ConfigError(
            f"no credential {ref!r} in this org ({missing}; `meshclaw vault put {ref}`)"
        )

    def put(
        self, ref: str, values: Mapping[str, str], *, org_id: str, user_id: str | None = None
    ) -> None:
        self._vault.put(ref, values, org_id=org_id, user_id=user_id)
