"""Credentials by reference: connectors name an entry, this store resolves it.

``CredentialStore`` is the seam; the encrypted vault (``policy.vault.VaultCredentialStore``)
implements the same Protocol and is what the platform uses. A reference is resolved
within the connector's org (``org_id``): the vault holds each org's entries apart, so
two orgs may each have a ``mail``, and no org's connector can name another's. The
memory and file stores below hold a single set of entries and ignore the org.

A ``Credential`` never prints its values (``repr`` and ``str`` redact them), so it
cannot leak into a log line, an error message, an audit record or a usage row by
accident.

File format (JSON, readable by its owner only)::

    {
      "mail": {"default": {"username": "bot", "password": "..."},
               "users": {"usr_123": {"username": "alice", "password": "..."}}}
    }

``users`` holds delegated credentials per agent owner; ``default`` is used when the
owner has none (and for listing tools, which happens on no one's behalf).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from meshclaw.errors import ConfigError


@dataclass(frozen=True)
class Credential:
    """Secret fields of one resolved reference; redacted whenever printed."""

    ref: str
    values: Mapping[str, str] = field(repr=False)

    def __repr__(self) -> str:
        return f"Credential(ref={self.ref!r}, fields={sorted(self.values)})"

    __str__ = __repr__

    def fingerprint(self) -> str:
        """Stable id of these values (for pooling sessions), revealing nothing about them."""
        raw = json.dumps(dict(self.values), sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:16]

    def render(self, template: str) -> str:
        """Fill ``{field}`` placeholders, e.g. ``Bearer {token}``."""
        try:
            return template.format_map(dict(self.values))
        except KeyError as exc:
            raise ConfigError(f"credential {self.ref!r} has no field {exc.args[0]!r}") from None

    def field(self, name: str) -> str:
        try:
            return self.values[name]
        except KeyError:
            raise ConfigError(f"credential {self.ref!r} has no field {name!r}") from None


class CredentialStore(Protocol):
    def resolve(
        self, ref: str, *, user_id: str | None = None, org_id: str | None = None
    ) -> Credential:
        """``org_id``'s entry for ``ref``: the owner's delegated credential, else the
        default; ConfigError if none."""
        ...


class MemoryCredentialStore:
    """Credentials held in memory; for tests and for servers started by the platform."""

    def __init__(self, entries: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._entries: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (entries or {}).items()}

    def put(self, ref: str, values: Mapping[str, str], *, user_id: str | None = None) -> None:
        entry = self._entries.setdefault(ref, {})
        if user_id is None:
            entry["default"] = dict(values)
        else:
            entry.setdefault("users", {})[user_id] = dict(values)

    def resolve(
        self, ref: str, *, user_id: str | None = None, org_id: str | None = None
    ) -> Credential:
        return _resolve(self._entries, ref, user_id)


class FileCredentialStore:
    """A JSON file of credential entries (see the module docstring), re-read on change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._loaded: tuple[float, dict[str, Any]] | None = None

    def _entries(self) -> dict[str, Any]:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return {}
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"credential file {self.path} is readable by others: chmod 600 {self.path}"
            )
        if self._loaded is None or self._loaded[0] != info.st_mtime:
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError) as exc:
                # The message names the file and the problem, never the content.
                raise ConfigError(f"credential file {self.path} is not valid JSON") from exc
            if not isinstance(data, dict):
                raise ConfigError(f"credential file {self.path} must hold a JSON object")
            self._loaded = (info.st_mtime, data)
        return self._loaded[1]

    def resolve(
        self, ref: str, *, user_id: str | None = None, org_id: str | None = None
    ) -> Credential:
        return _resolve(self._entries(), ref, user_id)

    def put(self, ref: str, values: Mapping[str, str], *, user_id: str | None = None) -> None:
        """Store an entry; the file is created readable by its owner only."""
        data = json.loads(json.dumps(self._entries()))
        entry = data.setdefault(ref, {})
        if user_id is None:
            entry["default"] = dict(values)
        else:
            entry.setdefault("users", {})[user_id] = dict(values)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
        tmp.replace(self.path)
        self._loaded = None


def _resolve(entries: Mapping[str, Any], ref: str, user_id: str | None) -> Credential:
    entry = entries.get(ref)
    if not isinstance(entry, Mapping):
        raise ConfigError(f"no credential {ref!r} in the credential store")
    users = entry.get("users") or {}
    values = users.get(user_id) if user_id is not None else None
    if values is None:
        values = entry.get("default")
    if not isinstance(values, Mapping):
        who = f" for user {user_id}" if user_id else ""
        raise ConfigError(f"credential {ref!r} has no entry{who} and no default")
    return Credential(ref=ref, values={str(k): str(v) for k, v in values.items()})
