"""Settings from environment variables (``MESHCLAW_*``) and an optional TOML file.

Precedence: explicit arguments > environment > ``$MESHCLAW_CONFIG`` (default
``./meshclaw.toml`` if present) > defaults. Secrets are never stored here: a provider
names the environment variable (later: the vault entry) that holds its key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class ProviderConfig(BaseModel):
    """How to reach one model provider."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["openai"] = "openai"
    """Wire protocol. ``openai`` covers OpenAI, vLLM, Ollama, llama.cpp and gateways."""
    base_url: str | None = None
    api_key_env: str | None = None
    """Name of the environment variable holding the API key (never the key itself)."""
    timeout_seconds: float = 60.0
    max_retries: int = Field(default=4, ge=0, le=10)


def _config_file() -> Path:
    return Path(os.environ.get("MESHCLAW_CONFIG", "meshclaw.toml"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MESHCLAW_", env_nested_delimiter="__")

    home: Path = Path("var")
    """Where the embedded database and local state live."""
    database_url: str | None = None
    """SQLAlchemy URL; defaults to SQLite at ``<home>/meshclaw.db``."""
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(default=4, ge=1, le=64)
    """In-process run worker threads (embedded mode)."""
    price_table: Path | None = None
    """YAML price table; defaults to the one shipped in the package."""
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    embedded_model_server: bool = True
    """Start the scripted model server in-process as provider ``scripted`` (demo/offline)."""
    model_script: Path | None = None
    """Script for the embedded model server; defaults to the shipped demo script."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_config_file())
        return (init_settings, env_settings, toml)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'meshclaw.db').resolve()}"
