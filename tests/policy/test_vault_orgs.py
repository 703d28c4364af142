"""The credential vault is per org: an org resolves, lists and changes its own entries
only, each org may have its own ``mail`` default, per-user entries stay per user, the
CLI acts in the caller's org, and the upgrade gives existing rows an org (their old
ciphertexts open until ``rotate`` binds them to it). Connectors over HTTP:
``tests/connectors/test_org_credentials.py``."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import text
from typer.testing import CliRunner, Result

from meshclaw.accounts.service import Caller
from meshclaw.cli.main import app
from meshclaw.config import Settings
from meshclaw.connectors.credentials import MemoryCredentialStore
from meshclaw.errors import ConfigError
from meshclaw.platform import Platform
from meshclaw.policy.vault import KEY_ENV, Kek, Vault, VaultCredentialStore, load_kek
from meshclaw.store.db import alembic_config, make_engine, migrate
from tests.conftest import World, store_url_of
from tests.policy.two_orgs import TwoOrgs, two_orgs

ACME_SECRET = "acme-mail-secret-1"
GLOBEX_SECRET = "globex-mail-secret-2"


@pytest.fixture
def orgs(make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch) -> TwoOrgs:
    return two_orgs(make_world, monkeypatch)


# -- resolution -------------------------------------------------------------------------


def test_each_org_resolves_its_own_entries_only(orgs: TwoOrgs) -> None:
    vault, world = orgs.world.platform.vault, orgs.world
    vault.put("mail", {"token": ACME_SECRET}, org_id=orgs.acme)
    vault.put("mail", {"token": "alices-own"}, org_id=orgs.acme, user_id=world.alice.user_id)
    store = VaultCredentialStore(vault)
    # Globex has no "mail": acme's default is not found there, for anyone.
    for user in (None, orgs.mallory.user_id, world.alice.user_id):
        with pytest.raises(ConfigError, match="no credential 'mail' in this org") as caught:
            store.resolve("mail", org_id=orgs.globex, user_id=user)
        assert ACME_SECRET not in str(caught.value)
    # Each org may have its own default of the same reference.
    vault.put("mail", {"token": GLOBEX_SECRET}, org_id=orgs.globex)
    assert store.resolve("mail", org_id=orgs.acme).field("token") == ACME_SECRET
    assert store.resolve("mail", org_id=orgs.globex).field("token") == GLOBEX_SECRET
    # Per-user entries stay per user (and per org): alice's own in acme, the default for bob.
    alice, bob = world.alice.user_id, world.bob.user_id
    assert store.resolve("mail", org_id=orgs.acme, user_id=alice).field("token") == "alices-own"
    assert store.resolve("mail", org_id=orgs.acme, user_id=bob).field("token") == ACME_SECRET
    assert store.resolve("mail", org_id=orgs.globex, user_id=alice).field("token") == (
        GLOBEX_SECRET
    )
    # Deleting in one org leaves the other's.
    assert not vault.delete("mail", org_id=orgs.globex, user_id=alice)
    assert vault.delete("mail", org_id=orgs.globex)
    assert vault.get("mail", org_id=orgs.acme) == {"token": ACME_SECRET}
    with pytest.raises(ConfigError, match="no credential 'mail' in this org"):
        store.resolve("mail", org_id=orgs.globex)
    # Outside any org nothing resolves, and a put needs a real org.
    with pytest.raises(ConfigError, match="within an org"):
        store.resolve("mail")
    with pytest.raises(ConfigError, match="no org"):
        vault.put("mail", {"token": "x"}, org_id="org_nope")
    # Listing is per org.
    assert [(e.ref, e.user_id) for e in vault.entries(org_id=orgs.acme)] == [
        ("mail", None),
        ("mail", alice),
    ]
    assert vault.entries(org_id=orgs.globex) == []


def test_the_credentials_file_answers_for_the_oldest_org_only(orgs: TwoOrgs) -> None:
    fallback = MemoryCredentialStore({"files": {"default": {"token": "from-file"}}})
    store = VaultCredentialStore(orgs.world.platform.vault, fallback=fallback)
    assert store.resolve("files", org_id=orgs.acme).field("token") == "from-file"
    with pytest.raises(ConfigError, match="no credential 'files' in this org"):
        store.resolve("files", org_id=orgs.globex)


# -- the CLI ------------------------------------------------------------------------------


@pytest.fixture
def meshclaw(orgs: TwoOrgs, tmp_path: Path) -> Iterator[Callable[..., Result]]:
    runner = CliRunner()
    accounts = orgs.world.platform.accounts

    def invoke(caller: Caller, *args: str, stdin: str | None = None) -> Result:
        env = {
            "MESHCLAW_HOME": str(tmp_path / "var"),
            "MESHCLAW_EMBEDDED_MODEL_SERVER": "false",
            "MESHCLAW_DATABASE_URL": store_url_of(tmp_path),
            "MESHCLAW_CONFIG": None,
            "MESHCLAW_TOKEN": accounts.issue_token(caller.user_id, "cli"),
        }
        return runner.invoke(app, list(args), env=env, input=stdin)

    yield invoke


def test_the_cli_acts_in_the_callers_org(orgs: TwoOrgs, meshclaw: Callable[..., Result]) -> None:
    world, vault = orgs.world, orgs.world.platform.vault
    acme_values, globex_values = json.dumps({"token": ACME_SECRET}), json.dumps({"token": "g"})
    put = meshclaw(world.admin, "vault", "put", "mail", "--stdin", stdin=acme_values)
    assert put.exit_code == 0, put.output
    own = meshclaw(world.alice, "vault", "put", "mail", "--user", "alice", "--stdin", stdin="{}")
    assert own.exit_code == 2  # an empty object is refused
    put = meshclaw(orgs.mallory, "vault", "put", "mail", "--stdin", stdin=globex_values)
    assert put.exit_code == 0, put.output
    # Mallory cannot name acme's people, and sees, changes and deletes globex's only.
    alice = meshclaw(orgs.mallory, "vault", "put", "mail", "--user", "alice", "--stdin", stdin="")
    assert alice.exit_code != 0 and ACME_SECRET not in alice.output
    listed = json.loads(meshclaw(orgs.mallory, "vault", "list", "--json").stdout)
    assert [(e["ref"], e["user_id"], e["org_bound"]) for e in listed] == [("mail", None, True)]
    table = meshclaw(world.admin, "vault", "list")
    assert table.exit_code == 0 and "mail" in table.stdout and ACME_SECRET not in table.stdout
    assert meshclaw(orgs.mallory, "vault", "delete", "mail").exit_code == 0
    again = meshclaw(orgs.mallory, "vault", "delete", "mail")
    assert again.exit_code == 2 and "no vault entry 'mail'" in again.stderr
    assert vault.get("mail", org_id=orgs.acme) == {"token": ACME_SECRET}
    assert vault.get("mail", org_id=orgs.globex) is None


# -- upgrading: existing rows get an org; old ciphertexts open until re-bound -------------

LEGACY_KEK = Kek(b"k" * 32)


def _legacy_row(ref: str, user_id: str, values: dict[str, str]) -> dict[str, Any]:
    """A row as the vault wrote it before orgs: bound to (reference, user) only."""
    aad = json.dumps([ref, user_id]).encode()
    dek = AESGCM.generate_key(bit_length=256)
    nonce, wrap_nonce = os.urandom(12), os.urandom(12)
    ciphertext = AESGCM(dek).encrypt(nonce, json.dumps(values).encode(), aad)
    wrapped = AESGCM(LEGACY_KEK.key).encrypt(wrap_nonce, dek, aad)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return {
        "id": f"vlt_{ref}_{user_id or 'default'}",
        "ref": ref,
        "user_id": user_id,
        "fields": sorted(values),
        "kek_id": LEGACY_KEK.id,
        "wrapped_dek": base64.b64encode(wrap_nonce + wrapped).decode(),
        "ciphertext": base64.b64encode(nonce + ciphertext).decode(),
        "created_at": now,
        "updated_at": now,
    }


def _seed_before_orgs(database_url: str) -> None:
    jan = datetime(2026, 1, 1, tzinfo=UTC)
    orgs = sa.table("orgs", *(sa.column(c) for c in ("id", "name")), sa.column("settings", sa.JSON))
    orgs.append_column(sa.column("created_at", sa.DateTime(timezone=True)))
    users = sa.table(
        "users",
        *(sa.column(c) for c in ("id", "org_id", "handle", "display_name", "role")),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    connectors = sa.table(
        "connectors",
        *(sa.column(c) for c in ("id", "org_id", "name", "created_by")),
        sa.column("config", sa.JSON),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    entries = sa.table(
        "vault_entries",
        *(sa.column(c) for c in ("id", "ref", "user_id", "kek_id", "wrapped_dek", "ciphertext")),
        sa.column("fields", sa.JSON),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(database_url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "policy_0001")
            command.upgrade(cfg, "connectors_org_0001")
            conn.execute(
                orgs.insert(),
                [
                    {"id": o, "name": o, "settings": {}, "created_at": jan.replace(month=m)}
                    for m, o in ((1, "org_old"), (2, "org_new"), (3, "org_third"))
                ],
            )
            conn.execute(
                users.insert(),
                [
                    {"id": "usr_n", "org_id": "org_new", "handle": "nina", "display_name": "",
                     "role": "employee", "created_at": jan},
                ],
            )  # fmt: skip
            conn.execute(
                connectors.insert(),
                [
                    {"id": f"con_{i}", "org_id": org, "name": f"c{i}", "created_by": None,
                     "config": {"command": "x", "credentials": ref}, "created_at": jan}
                    for i, (org, ref) in enumerate(
                        [("org_new", "mail"), ("org_new", "mail"), ("org_new", "shared"),
                         ("org_third", "shared")]
                    )
                ],
            )  # fmt: skip
            conn.execute(
                entries.insert(),
                [
                    _legacy_row("mail", "", {"token": "mail-default"}),
                    _legacy_row("shared", "", {"token": "shared-default"}),
                    _legacy_row("lonely", "", {"token": "lonely-default"}),
                    _legacy_row("mail", "usr_n", {"token": "ninas"}),
                    _legacy_row("mail", "usr_gone", {"token": "someones"}),
                ],
            )
    finally:
        engine.dispose()


def test_migration_gives_existing_entries_an_org_and_rotation_binds_them(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A per-user entry goes to its user's org; a default to the one org whose
    connectors name it, else the oldest org. Old ciphertexts still open, unbound, until
    ``rotate`` re-encrypts them bound to their org."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    _seed_before_orgs(database_url)
    migrate(database_url)
    platform = Platform(
        Settings(home=tmp_path / "var", database_url=database_url, embedded_model_server=False)
    )
    try:
        vault = Vault(platform.db, LEGACY_KEK)
        placed = {
            org: [(e.ref, e.user_id, e.org_bound) for e in vault.entries(org_id=org)]
            for org in ("org_old", "org_new", "org_third")
        }
        assert placed == {
            "org_old": [
                ("lonely", None, False),
                ("mail", "usr_gone", False),
                ("shared", None, False),
            ],
            "org_new": [("mail", None, False), ("mail", "usr_n", False)],
            "org_third": [],
        }
        store = VaultCredentialStore(vault)
        assert store.resolve("mail", org_id="org_new").field("token") == "mail-default"
        assert store.resolve("mail", org_id="org_new", user_id="usr_n").field("token") == "ninas"
        assert store.resolve("shared", org_id="org_old").field("token") == "shared-default"
        with pytest.raises(ConfigError, match="no credential 'shared' in this org"):
            store.resolve("shared", org_id="org_third")
        # Unbound (old) rows are what rotation re-encrypts; the same key works too.
        assert vault.rotate(LEGACY_KEK) == 5
        assert all(e.org_bound for o in placed for e in vault.entries(org_id=o))
        assert store.resolve("mail", org_id="org_new").field("token") == "mail-default"
        # Now bound: moving the default to another org makes it fail to open.
        with platform.db.session() as session:
            session.execute(
                text("UPDATE vault_entries SET org_id = 'org_third' WHERE ref = 'shared'")
            )
        with pytest.raises(ConfigError, match="does not open in this org"):
            store.resolve("shared", org_id="org_third")
        # Rotation is all or nothing: the moved row makes it refuse, changing no row.
        with pytest.raises(ConfigError, match="does not open in this org"):
            vault.rotate(load_kek(tmp_path / "new.key"))
        assert store.resolve("mail", org_id="org_new").field("token") == "mail-default"
    finally:
        platform.close()
