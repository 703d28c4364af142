"""Settings: environment over the TOML file over defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshclaw.config import Settings


def test_toml_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "meshclaw.toml"
    config.write_text(
        'port = 9100\nhome = "/srv/meshclaw"\n'
        '[providers.local]\nbase_url = "http://127.0.0.1:11434/v1"\napi_key_env = "LOCAL_KEY"\n'
    )
    monkeypatch.setenv("MESHCLAW_CONFIG", str(config))
    monkeypatch.setenv("MESHCLAW_PORT", "9200")
    settings = Settings()
    assert settings.port == 9200
    assert settings.home == Path("/srv/meshclaw")
    assert settings.providers["local"].api_key_env == "LOCAL_KEY"
    assert settings.resolved_database_url() == "sqlite:////srv/meshclaw/meshclaw.db"


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHCLAW_CONFIG", str(tmp_path / "absent.toml"))
    for name in ("MESHCLAW_PORT", "MESHCLAW_HOME", "MESHCLAW_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert (settings.host, settings.port, settings.home) == ("127.0.0.1", 8000, Path("var"))
