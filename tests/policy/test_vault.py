"""The credential vault: envelope encryption at rest, rotation, tampering, the CLI."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from meshclaw.cli.main import app
from meshclaw.connectors.credentials import MemoryCredentialStore
from meshclaw.errors import ConfigError
from meshclaw.policy.models import VaultEntry
from meshclaw.policy.vault import (
    KEY_ENV,
    Kek,
    Vault,
    VaultCredentialStore,
    load_kek,
    read_key_file,
    write_key_file,
)
from tests.conftest import World, store_url_of

SECRET = "s3cr3t-app-password"


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    return make_world()


def raw_rows(world: World) -> list[VaultEntry]:
    with world.platform.db.session() as session:
        return list(session.scalars(select(VaultEntry)))


def test_values_are_encrypted_at_rest_and_resolve_per_owner(world: World) -> None:
    vault = Vault(world.platform.db, Kek.generate())
    vault.put("mail", {"username": "bot", "password": SECRET}, org_id=world.alice.org_id)
    vault.put(
        "mail",
        {"username": "alice", "password": "alices"},
        user_id=world.alice.user_id,
        org_id=world.alice.org_id,
    )
    for row in raw_rows(world):
        stored = f"{row.ciphertext} {row.wrapped_dek} {row.fields}"
        assert SECRET not in stored and "alices" not in stored
        assert row.fields == ["password", "username"]
    store = VaultCredentialStore(vault)
    assert (
        store.resolve("mail", user_id=world.alice.user_id, org_id=world.alice.org_id).field(
            "username"
        )
        == "alice"
    )
    assert (
        store.resolve("mail", user_id=world.bob.user_id, org_id=world.alice.org_id).field(
            "password"
        )
        == SECRET
    )
    credential = store.resolve("mail", org_id=world.alice.org_id)
    assert SECRET not in repr(credential) and SECRET not in str(credential)
    with pytest.raises(ConfigError, match="no credential 'calendar' in this org"):
        store.resolve("calendar", org_id=world.alice.org_id)
    # Two puts of the same values give different ciphertexts (fresh key and nonce).
    before = {r.user_id: r.ciphertext for r in raw_rows(world)}
    vault.put("mail", {"username": "bot", "password": SECRET}, org_id=world.alice.org_id)
    assert {r.user_id: r.ciphertext for r in raw_rows(world)}[""] != before[""]


def test_rows_do_not_open_elsewhere_or_when_tampered_with(world: World) -> None:
    vault = Vault(world.platform.db, Kek.generate())
    vault.put("mail", {"password": SECRET}, org_id=world.alice.org_id)
    vault.put("chat", {"token": "t"}, org_id=world.alice.org_id)
    with world.platform.db.session() as session:
        rows = {r.ref: r for r in session.scalars(select(VaultEntry))}
        # Move mail's ciphertext onto chat: the associated data no longer matches.
        rows["chat"].ciphertext, rows["chat"].wrapped_dek = (
            rows["mail"].ciphertext,
            rows["mail"].wrapped_dek,
        )
    with pytest.raises(ConfigError, match="tampered"):
        vault.get("chat", org_id=world.alice.org_id)
    assert vault.get("mail", org_id=world.alice.org_id) == {"password": SECRET}
    with pytest.raises(ConfigError, match="wrapped by key"):
        Vault(world.platform.db, Kek.generate()).get("mail", org_id=world.alice.org_id)


def test_rotation_rewraps_every_entry_and_the_old_key_stops_working(world: World) -> None:
    old, new = Kek.generate(), Kek.generate()
    vault = Vault(world.platform.db, old)
    vault.put("mail", {"password": SECRET}, org_id=world.alice.org_id)
    vault.put("mail", {"password": "p2"}, user_id=world.alice.user_id, org_id=world.alice.org_id)
    ciphertexts = sorted(r.ciphertext for r in raw_rows(world))
    assert vault.rotate(new) == 2
    assert {r.kek_id for r in raw_rows(world)} == {new.id}
    assert sorted(r.ciphertext for r in raw_rows(world)) == ciphertexts  # only keys re-wrapped
    assert Vault(world.platform.db, new).get("mail", org_id=world.alice.org_id) == {
        "password": SECRET
    }
    assert vault.get("mail", user_id=world.alice.user_id, org_id=world.alice.org_id) == {
        "password": "p2"
    }
    with pytest.raises(ConfigError):
        Vault(world.platform.db, old).get("mail", org_id=world.alice.org_id)


def test_a_failed_rotation_changes_nothing(world: World) -> None:
    first, other = Kek.generate(), Kek.generate()
    Vault(world.platform.db, first).put("mail", {"password": SECRET}, org_id=world.alice.org_id)
    Vault(world.platform.db, other).put(
        "chat", {"token": "t"}, org_id=world.alice.org_id
    )  # a foreign key's entry
    with pytest.raises(ConfigError, match="wrapped by key"):
        Vault(world.platform.db, first).rotate(Kek.generate())
    assert sorted(r.kek_id for r in raw_rows(world)) == sorted([first.id, other.id])


def test_key_files_and_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    path = tmp_path / "keys" / "vault.key"
    created = load_kek(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert load_kek(path) == created and "key=" not in repr(created)
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        write_key_file(path, Kek.generate())
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        read_key_file(path)
    env_key = Kek.generate()
    monkeypatch.setenv(KEY_ENV, env_key.encoded())
    assert load_kek(tmp_path / "unused.key") == env_key
    monkeypatch.setenv(KEY_ENV, "c2hvcnQ=")
    with pytest.raises(ConfigError, match="32 bytes"):
        load_kek(tmp_path / "unused.key")
    assert not (tmp_path / "unused.key").exists()


def test_the_vault_key_is_read_only_when_a_credential_is_used(world: World) -> None:
    calls: list[int] = []

    def loader() -> Kek:
        calls.append(1)
        return Kek.generate()

    vault = Vault(world.platform.db, loader)
    fallback = MemoryCredentialStore({"files": {"default": {"token": "from-file"}}})
    store = VaultCredentialStore(vault, fallback=fallback)
    assert store.resolve("files", org_id=world.alice.org_id).field("token") == "from-file"
    assert calls == []
    vault.put("files", {"token": "from-vault"}, org_id=world.alice.org_id)
    assert store.resolve("files", org_id=world.alice.org_id).field("token") == "from-vault"
    assert calls == [1]


def test_vault_cli(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    accounts = world.platform.accounts
    runner = CliRunner()

    def meshclaw(who: str | None, *args: str, stdin: str | None = None) -> Result:
        """As ``who`` (an API token), or as the install operator (``None``: no token)."""
        token = accounts.issue_token(getattr(world, who).user_id, "cli") if who else None
        env = {
            "MESHCLAW_HOME": str(tmp_path / "var"),
            "MESHCLAW_EMBEDDED_MODEL_SERVER": "false",
            "MESHCLAW_DATABASE_URL": store_url_of(tmp_path),
            "MESHCLAW_CONFIG": None,
            "MESHCLAW_TOKEN": token,
        }
        return runner.invoke(app, list(args), env=env, input=stdin)

    values = json.dumps({"username": "alice", "password": SECRET})
    own = meshclaw("alice", "vault", "put", "mail", "--user", "alice", "--stdin", stdin=values)
    assert own.exit_code == 0, own.output
    assert SECRET not in own.output
    others = meshclaw("alice", "vault", "put", "mail", "--user", "bob", "--stdin", stdin=values)
    assert others.exit_code == 2 and "credential.manage denied" in others.stderr
    default = meshclaw("alice", "vault", "put", "mail", "--stdin", stdin=values)
    assert default.exit_code == 2
    admin = meshclaw("admin", "vault", "put", "mail", "--stdin", stdin=values)
    assert admin.exit_code == 0, admin.output
    bad = meshclaw("admin", "vault", "put", "mail", "--stdin", stdin="[1]")
    assert bad.exit_code == 2 and "JSON object" in bad.stderr

    listed = json.loads(meshclaw("alice", "vault", "list", "--json").stdout)
    assert [(e["ref"], e["user_id"]) for e in listed] == [("mail", world.alice.user_id)]
    everything = meshclaw("admin", "vault", "list", "--json")
    assert SECRET not in everything.stdout
    assert len(json.loads(everything.stdout)) == 2

    new_key = tmp_path / "new.key"
    assert meshclaw("admin", "vault", "generate-key", str(new_key)).exit_code == 0
    # Rotation is the install operator's: no org's person, not even a platform admin.
    for who in ("alice", "admin"):
        denied = meshclaw(who, "vault", "rotate", str(new_key))
        assert denied.exit_code == 2 and "install operator" in denied.stderr
    rotated = json.loads(meshclaw(None, "vault", "rotate", str(new_key), "--json").stdout)
    assert rotated["rewrapped"] == 2 and rotated["new_key"] == read_key_file(new_key).id
    store = VaultCredentialStore(Vault(world.platform.db, read_key_file(new_key)))
    assert (
        store.resolve("mail", user_id=world.alice.user_id, org_id=world.alice.org_id).field(
            "password"
        )
        == SECRET
    )
    gone = meshclaw("alice", "vault", "delete", "mail", "--user", "alice")
    assert gone.exit_code == 0
    assert meshclaw("alice", "vault", "delete", "mail", "--user", "alice").exit_code == 2
