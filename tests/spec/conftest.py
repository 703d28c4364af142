"""Fixtures for spec tests: a real store (SQLite; PostgreSQL in that pass) and the people of
one org."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshclaw.accounts.service import Caller
from meshclaw.config import Settings
from meshclaw.platform import Platform


@pytest.fixture
def platform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, world_store: str | None
) -> Iterator[Platform]:
    """A platform on a fresh, migrated store (``world_store``), closed after the test."""
    monkeypatch.chdir(tmp_path)  # no stray ./meshclaw.toml from the caller's cwd
    settings = Settings(
        home=tmp_path / "var", database_url=world_store, embedded_model_server=False
    )
    built = Platform(settings)
    try:
        yield built
    finally:
        built.close()


@dataclass(frozen=True, kw_only=True)
class Acme:
    """The people of one org, as callers."""

    platform_team_id: str
    alice: Caller
    """employee, team ``platform``: owns the example agents."""
    erin: Caller
    """employee, team ``sales``."""
    bob: Caller
    """team_admin, team ``support``."""
    carol: Caller
    """platform_admin, team ``platform``."""


@pytest.fixture
def acme(platform: Platform) -> Acme:
    accounts = platform.accounts
    org = accounts.create_org("acme")
    teams = {
        name: accounts.create_team(org.id, name).id for name in ("platform", "support", "sales")
    }
    people = {
        handle: accounts.caller_for(
            accounts.create_user(org.id, handle, team_id=teams[team], role=role)
        )
        for handle, team, role in [
            ("alice", "platform", "employee"),
            ("erin", "sales", "employee"),
            ("bob", "support", "team_admin"),
            ("carol", "platform", "platform_admin"),
        ]
    }
    return Acme(platform_team_id=teams["platform"], **people)
