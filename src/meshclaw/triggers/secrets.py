"""Secrets by reference, until the vault lands: ``env:NAME``, ``file:PATH`` or a name.

A spec never holds a secret, only its reference (``secret_ref``). This store resolves:

- ``env:NAME``: the environment variable ``NAME``;
- ``file:PATH``: the file's content, trailing whitespace stripped;
- ``NAME`` (letters, digits, ``-_.``): the file ``<home>/secrets/NAME``.

The vault will implement the same ``SecretStore`` Protocol.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class SecretStore(Protocol):
    def get(self, ref: str) -> bytes | None:
        """The secret ``ref`` names, or None if it does not exist."""
        ...


class LocalSecretStore:
    """Environment variables and files (see the module docstring)."""

    def __init__(self, home: Path, environ: Mapping[str, str] | None = None) -> None:
        self._dir = home / "secrets"
        self._environ = os.environ if environ is None else environ

    def get(self, ref: str) -> bytes | None:
        if ref.startswith("env:"):
            value = self._environ.get(ref[4:])
            return value.encode() if value else None
        if ref.startswith("file:"):
            return _read(Path(ref[5:]))
        if _NAME.match(ref) and ".." not in ref:
            return _read(self._dir / ref)
        return None


def _read(path: Path) -> bytes | None:
    try:
        value = path.read_bytes().rstrip()
    except OSError:
        return None
    return value or None
