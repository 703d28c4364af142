"""Cheap argon2 parameters for tests that sign in a lot (the real ones cost ~0.1-1 s)."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from meshclaw.accounts import signin as signin_module

CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash new passwords with ``CHEAP``; stored hashes carry their own parameters, so
    verifying keeps working and only hashing gets fast."""
    monkeypatch.setattr(signin_module, "_hasher", CHEAP)
    dummy = CHEAP.hash("dummy password")
    monkeypatch.setattr(signin_module, "_dummy_hash", lambda: dummy)
