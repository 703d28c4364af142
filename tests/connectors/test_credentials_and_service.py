"""The file-backed credential store, connector administration, and unreachable servers in runs."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from meshclaw.connectors.config import ConnectorConfig
from meshclaw.connectors.credentials import Credential, FileCredentialStore
from meshclaw.connectors.service import ConnectorService
from meshclaw.errors import ConfigError, ConflictError, NotFoundError, PermissionDenied
from meshclaw.providers.scripted import ScriptedServer
from tests.conftest import World, agent_yaml
from tests.connectors.conftest import FIXTURE_SERVER


def test_file_store_resolves_delegated_then_default_credentials(tmp_path: Path) -> None:
    store = FileCredentialStore(tmp_path / "credentials.json")
    store.put("mail", {"username": "bot", "password": "pw-default"})
    store.put("mail", {"username": "alice", "password": "pw-alice"}, user_id="usr_alice")
    assert (tmp_path / "credentials.json").stat().st_mode & 0o777 == 0o600

    alice = store.resolve("mail", user_id="usr_alice")
    assert alice.field("username") == "alice"
    assert store.resolve("mail", user_id="usr_bob").field("username") == "bot"
    assert store.resolve("mail").fingerprint() != alice.fingerprint()
    for shown in (repr(alice), str(alice), f"{alice}"):
        assert "pw-alice" not in shown and "username" in shown

    with pytest.raises(ConfigError, match="no credential 'nope'"):
        store.resolve("nope")
    with pytest.raises(ConfigError, match="has no field 'token'") as exc:
        alice.field("token")
    assert "pw-alice" not in str(exc.value)


def test_file_store_refuses_a_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"mail": {"default": {"password": "pw"}}}))
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        FileCredentialStore(path).resolve("mail")
    path.chmod(0o600)
    assert FileCredentialStore(path).resolve("mail").field("password") == "pw"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="is not valid JSON") as exc:
        FileCredentialStore(path).resolve("mail")
    assert "not json" not in str(exc.value)


def test_credential_templates_render_fields() -> None:
    credential = Credential(ref="api", values={"token": "t0k"})
    assert credential.render("Bearer {token}") == "Bearer t0k"
    with pytest.raises(ConfigError, match="has no field 'key'"):
        credential.render("Key {key}")


def test_settings_connectors_are_listed_and_cannot_be_shadowed(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    fixture = ConnectorConfig(command=sys.executable, args=[str(FIXTURE_SERVER)])
    service = ConnectorService(
        db=world.platform.db,
        audit=world.platform.audit,
        access=world.platform.access,
        settings_connectors={"fx": fixture},
        credentials=FileCredentialStore(Path("/nonexistent/credentials.json")),
    )
    (info,) = service.list_connectors(world.alice)
    assert (info.name, info.source, info.transport) == ("fx", "settings", "stdio")
    with pytest.raises(ConflictError):
        service.add(world.admin, "fx", {"command": "x"})
    with pytest.raises(ConflictError):
        service.add(world.admin, "clock", {"command": "x"})
    with pytest.raises(NotFoundError, match="it is in settings"):
        service.remove(world.admin, "fx")
    with pytest.raises(PermissionDenied):
        service.approve(world.bob, "fx")
    with pytest.raises(NotFoundError, match="no recorded tools yet"):
        service.approve(world.admin, "fx")
    with pytest.raises(ConfigError, match="may not contain '__'"):
        ConnectorService(
            db=world.platform.db,
            audit=world.platform.audit,
            access=world.platform.access,
            settings_connectors={"a__b": fixture},
            credentials=FileCredentialStore(Path("/nonexistent")),
        )


def test_an_unreachable_connector_fails_the_run_with_a_clear_recorded_error(
    scripted: Callable[[dict[str, Any]], ScriptedServer], make_world: Callable[..., World]
) -> None:
    server = scripted({"turns": [{"reply": {"content": "never reached"}}]})
    world = make_world(server.base_url)
    world.platform.connector_admin.add(
        world.admin, "gone", {"transport": "http", "url": "http://127.0.0.1:9/mcp"}
    )
    world.save_agent(agent_yaml(tools=(("gone.*", "read"),)))
    info = world.run("helper")
    assert info.status == "failed"
    assert info.error is not None
    assert "cannot connect to MCP server 'gone' (http http://127.0.0.1:9/mcp)" in info.error
    assert server.requests == []  # no model call was paid for
