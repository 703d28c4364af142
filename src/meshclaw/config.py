"""Settings from environment variables (``MESHCLAW_*``) and an optional TOML file.

Precedence: explicit arguments > environment > ``$MESHCLAW_CONFIG`` (default
``./meshclaw.toml`` if present) > defaults. Secrets are never stored here: a provider
names the environment variable (later: the vault entry) that holds its key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from meshclaw.connectors.config import ConnectorConfig


class ProviderConfig(BaseModel):
    """How to reach one model provider."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["openai", "anthropic", "bedrock"] = "openai"
    """Wire protocol. ``openai`` covers OpenAI, vLLM, Ollama, llama.cpp and gateways;
    ``anthropic`` is the Messages API; ``bedrock`` is AWS Bedrock's Converse API."""
    base_url: str | None = None
    """The API's base URL; for ``bedrock`` the ``endpoint_url`` (default: the region's)."""
    api_key_env: str | None = None
    """Name of the environment variable holding the API key (never the key itself)."""
    region: str | None = None
    """``bedrock`` only: the AWS region (default: the AWS configuration's)."""
    aws_profile: str | None = None
    """``bedrock`` only: a named AWS profile; default the standard credential chain."""
    timeout_seconds: float = 60.0
    max_retries: int = Field(default=4, ge=0, le=10)


class WitnessConfig(BaseModel):
    """An HTTP witness of the audit log's checkpoints (docs/audit.md#witnesses)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://[^\s]+$")
    """This log's endpoint at the witness: checkpoints are POSTed here, and a GET returns
    the latest one the witness holds."""
    key: str | None = None
    """The witness's verifier key (``<name>+<id>+<key>``): its cosignature must verify
    before it is stored, and ``audit verify`` checks it again. None: stored unchecked."""
    protocol: Literal["plain", "tlog-witness"] = "plain"
    """``plain``: POST the signed note to ``url``, GET what the witness holds.
    ``tlog-witness``: the C2SP tlog-witness protocol, ``url`` is the witness's
    submission prefix (``POST <url>/add-checkpoint`` with a consistency proof), and
    ``key`` is its C2SP tlog-cosignature key (algorithm byte 0x04)."""


class AuditSettings(BaseModel):
    """The tamper-evident audit log (docs/audit.md)."""

    model_config = ConfigDict(extra="forbid")

    signing_key: Path | None = None
    """Ed25519 checkpoint signing key (PEM, mode 0600); default ``<home>/audit-signing.key``,
    created on first use."""
    origin: str = Field(default="meshclaw/audit", pattern=r"^[^\s+]+$")
    """The log's name in its checkpoints and the signing key's name."""
    checkpoint_every: int = Field(default=1000, ge=0)
    """Sign a checkpoint every this many records, in the appending transaction (0: off)."""
    checkpoint_dir: Path | None = None
    """Also write each checkpoint note here after commit, for witnesses and backups."""
    min_retention_days: int = Field(default=30, ge=0)
    """Records younger than this can never be redacted."""
    checkpoint_seconds: float = Field(default=300.0, ge=0, le=24 * 3600)
    """The scheduler signs a checkpoint this often when records exist that none covers
    yet (0: off; ``checkpoint_every`` still applies)."""
    syslog: list[str] = Field(default_factory=list)
    """Also send every signed checkpoint to these syslog receivers, ``udp://host:port``
    or ``tcp://host:port`` (RFC 5424; TCP framed by octet counting, RFC 6587)."""
    witnesses: list[WitnessConfig] = Field(default_factory=list)
    """HTTP witnesses: each signed checkpoint is POSTed to each; ``verify`` compares the
    checkpoint each one holds with the log."""
    witness_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    """How long one send to (or fetch from) a witness or syslog receiver may take."""
    verify_workers: int = Field(default=0, ge=0, le=64)
    """Processes ``audit verify`` checks records with (0: one per CPU for logs of 50,000
    records or more; 1: a single pass). The findings are the same."""
    token_use_interval_seconds: float = Field(default=3600.0, ge=0, le=30 * 24 * 3600)
    """An API token's use is recorded (``token.use``) on its first use and then at most
    once per this many seconds (0: every request); a revoked token's every use is."""

    @field_validator("syslog")
    @classmethod
    def _syslog_targets(cls, targets: list[str]) -> list[str]:
        for target in targets:
            scheme, _, rest = target.partition("://")
            host, _, port = rest.rpartition(":")
            if scheme not in ("udp", "tcp") or not host or not port.isdigit():
                raise ValueError(f"{target!r}: want udp://host:port or tcp://host:port")
            if not 0 < int(port) < 65536:
                raise ValueError(f"{target!r}: port must be 1..65535")
        return targets

    def schedule_seconds(self) -> float:
        """How often the scheduler's audit job runs (timed checkpoints, witness retries)."""
        if self.checkpoint_seconds:
            return self.checkpoint_seconds
        return 60.0 if self.syslog or self.witnesses else 0.0


class MeteringSettings(BaseModel):
    """Budgets, rate limits and the runaway-loop guard (docs/metering.md)."""

    model_config = ConfigDict(extra="forbid")

    max_identical_calls: int = Field(default=5, ge=0)
    """Circuit breaker: refuse a run's call made this many times before, identically
    (same model request, or same tool with the same arguments); 0: off."""


class TelemetrySettings(BaseModel):
    """OpenTelemetry GenAI spans and Prometheus metrics (docs/metering.md)."""

    model_config = ConfigDict(extra="forbid")

    otlp_endpoint: str | None = None
    """OTLP/HTTP traces endpoint, e.g. ``http://collector:4318/v1/traces``; None: no export."""
    otlp_headers: dict[str, str] = Field(default_factory=dict)
    """Extra headers for the OTLP exporter (e.g. an auth header)."""
    service_name: str = "meshclaw"
    """``service.name`` of the exported spans."""
    metrics: bool = True
    """Serve Prometheus metrics at ``/metrics`` (org/team/agent labels, never users)."""
    metrics_scrape_token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """SHA-256 (hex) of the operator's scrape token: that bearer gets every org's series."""


class WebSettings(BaseModel):
    """The dashboard's sign-in sessions, and the platform's public address."""

    model_config = ConfigDict(extra="forbid")

    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    """How long a dashboard sign-in lasts before the person must sign in again."""
    secure_cookies: bool = False
    """Mark the session cookie ``Secure`` (set it when the platform is served over HTTPS)."""
    open_browser: bool = True
    """``meshclaw serve --demo`` opens the dashboard in a browser when one is available."""
    public_url: str | None = Field(default=None, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    """Where people reach the platform (``https://meshclaw.example.com``): the base of the
    signed feedback links the platform mails. None: ``http://<host>:<port>`` (the serve
    address), or only the link's path when the platform listens on every interface."""


class TriggerSettings(BaseModel):
    """Chat and mail triggers (docs/triggers.md#chat-and-mail)."""

    model_config = ConfigDict(extra="forbid")

    retry_hours: float = Field(default=24.0, ge=0, le=24 * 30)
    """How long a chat or mail message whose run could not be created is retried (back-off
    from 1 minute, doubling, at most hourly) before it is given up, audited
    ``trigger.abandoned``; 0 gives up at the first failure."""
    matrix_txn_retention_hours: float = Field(default=72.0, gt=0, le=24 * 365)
    """How long a processed Matrix push transaction id is remembered (``triggers.matrix_push``):
    the homeserver sending it again within it is answered at once; after it, it is processed
    again."""


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
    audit: AuditSettings = Field(default_factory=AuditSettings)
    """Audit log signing, checkpoints and retention."""
    metering: MeteringSettings = Field(default_factory=MeteringSettings)
    """Budgets, rate limits and the runaway-loop guard."""
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    """OpenTelemetry export and Prometheus metrics."""
    connectors: dict[str, ConnectorConfig] = Field(default_factory=dict)
    """MCP servers by connector name (docs/connectors.md); more can be added at run time."""
    web: WebSettings = Field(default_factory=WebSettings)
    """Dashboard sign-in (docs/dashboard.md)."""
    triggers: TriggerSettings = Field(default_factory=TriggerSettings)
    """Chat and mail triggers: how long a message whose run cannot be created is retried."""
    credentials_file: Path | None = None
    """File-backed credential store; default ``<home>/credentials.json`` (mode 0600)."""
    vault_key_file: Path | None = None
    """Key-encryption key of the credential vault; default ``<home>/vault.key`` (mode 0600,
    created on first use). ``$MESHCLAW_VAULT_KEY`` (base64) takes precedence."""
    policy_file: Path | None = None
    """The org's own Cedar policies, added to the built-in roles and gates (docs/policy.md).
    Validated on start: an invalid file stops the platform with every error and its line."""
    broker_url: str | None = None
    """Celery broker (``redis://…`` or ``amqp://…``) for scale-out workers; without one,
    runs execute in the API process's embedded worker (docs/deploy.md)."""
    lease_seconds: float = Field(default=30.0, ge=1, le=3600)
    """How long a scale-out worker's hold on a run lasts without a heartbeat; after it, the
    run is continued by another worker."""
    max_run_attempts: int = Field(default=5, ge=1, le=100)
    """A run whose worker was lost this many times is failed instead of retried."""
    outcomes_recheck_seconds: float = Field(default=900.0, ge=0, le=7 * 24 * 3600)
    """How often the scheduler runs every org's due outcome durability re-checks and
    silence acceptances (``OutcomeService.recheck_due``); 0 turns the schedule off."""
    outcomes_recheck_grace_hours: float = Field(default=72.0, ge=0, le=365 * 24)
    """How long past its first due time an outcome's durability re-check may keep failing
    (connector down, credential revoked) before an integrity finding about its owner
    withholds the credit pending review (``OutcomeService``, ``recheck_grace``)."""
    integrity_scan_hours: float = Field(default=24.0, ge=0, le=24 * 366)
    """How often the scheduler scans every org's last four weeks for gaming patterns and
    records the findings for review (``integrity.live``); 0 turns the schedule off."""
    notify_seconds: float = Field(default=30.0, ge=0, le=24 * 3600)
    """How often the scheduler sends the notification outbox (``notify.deliver``); 0
    turns sending off (notifications then wait in the outbox)."""
    usage_rollup_seconds: float = Field(default=3600.0, ge=0, le=7 * 24 * 3600)
    """How often the scheduler rolls closed days of usage up (``metering.rollup``), so no
    report pays for it; 0 leaves it to the first report that needs a day."""

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
