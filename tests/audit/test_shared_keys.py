"""Every process of an install must use the same vault key and audit signing key
(docs/deploy.md). A second process started on another host without them stops with a
clear error instead of quietly making keys of its own: entries it wrapped would not open
elsewhere, and checkpoints it signed would not verify with the install's public key."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from meshclaw.audit.keys import load_or_create_signing_key
from meshclaw.config import Settings
from meshclaw.errors import ConfigError
from meshclaw.platform import Platform
from tests.conftest import World


@pytest.fixture
def first(make_world: Callable[..., World]) -> World:
    world = make_world()
    world.platform.vault.put("mail", {"token": "s3cret"}, org_id=world.alice.org_id)
    world.platform.audit_log.checkpoint()
    return world


def _second_host(first: World, home: Path) -> Platform:
    """Another process on the same store, with its own home directory, that has appended
    a record since the last checkpoint (so the next one must be signed)."""
    url = first.platform.settings.resolved_database_url()
    platform = Platform(Settings(home=home, database_url=url, embedded_model_server=False))
    org = platform.accounts.create_org(f"org-of-{home.name}")
    someone = platform.accounts.create_user(org.id, "someone")
    platform.accounts.issue_token(someone.id, "t")  # token.create: a new record
    return platform


def test_a_second_host_without_the_keys_stops_clearly(first: World, tmp_path: Path) -> None:
    home = tmp_path / "host-b"
    second = _second_host(first, home)
    try:
        with pytest.raises(ConfigError, match="store already holds vault entries"):
            second.vault.get("mail", org_id=first.alice.org_id)
        with pytest.raises(ConfigError, match=r"no audit signing key .* install's key"):
            second.audit_log.checkpoint()
        assert not (home / "vault.key").exists() and not (home / "audit-signing.key").exists()
    finally:
        second.close()


def test_a_different_signing_key_is_refused(first: World, tmp_path: Path) -> None:
    other = tmp_path / "other"
    load_or_create_signing_key(other / "audit-signing.key")  # a key of its own
    second = _second_host(first, other)
    try:
        with pytest.raises(ConfigError, match="is not the key that signed"):
            second.audit_log.checkpoint()
    finally:
        second.close()


def test_with_the_installs_keys_a_second_host_works(first: World, tmp_path: Path) -> None:
    home = tmp_path / "host-c"
    home.mkdir()
    for name in ("vault.key", "audit-signing.key"):
        shutil.copy2(first.platform.settings.home / name, home / name)
    second = _second_host(first, home)
    try:
        assert second.vault.get("mail", org_id=first.alice.org_id) == {"token": "s3cret"}
        assert second.audit_log.checkpoint().size > 0
        assert second.audit_log.verify(None).ok
    finally:
        second.close()
