"""How to reach one MCP server: the settings a platform admin writes for a connector.

A connector is configured in ``meshclaw.toml`` / ``MESHCLAW_CONNECTORS__<NAME>__...``
(``Settings.connectors``) or added at run time with ``meshclaw connector add`` (kept in
the store). Both produce a ``ConnectorConfig``. Secrets never appear here: ``credentials``
names an entry in the credential store, and ``credential_env`` / ``credential_headers``
say where its fields go.

A connector belongs to one org. One added at run time belongs to the org of the admin
who added it; one declared in settings names its org in ``org`` (an org *name*), and
without it belongs to the install's oldest org (on a single-org install: the org; in
the demo: ``acme``).
"""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

CONNECTOR_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
"""Lower case, no dots: the name is the first half of every ``connector.tool``."""


class ConnectorConfig(BaseModel):
    """One MCP server, reached over stdio (a command) or streamable HTTP (a URL)."""

    model_config = ConfigDict(extra="forbid")

    transport: Literal["stdio", "http"] = "stdio"
    command: str | None = None
    """Executable for ``stdio`` (looked up on ``PATH``)."""
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment for a ``stdio`` server (not secrets: see ``credential_env``)."""
    cwd: str | None = None
    url: str | None = None
    """Endpoint for ``http``, e.g. ``http://127.0.0.1:9000/mcp``."""
    credentials: str | None = None
    """Reference into the credential store (never the secret itself)."""
    credential_env: dict[str, str] = Field(default_factory=dict)
    """Environment variable -> credential field, for ``stdio`` servers."""
    credential_headers: dict[str, str] = Field(default_factory=dict)
    """HTTP header -> template over credential fields, e.g. ``Bearer {token}``."""
    approval: Literal["admin", "first_use"] = "admin"
    """``admin``: every tool waits for an admin's approval. ``first_use``: the first
    definition seen is trusted. Either way a *changed* definition is blocked."""
    connect_timeout_seconds: float = Field(default=30.0, gt=0)
    call_timeout_seconds: float = Field(default=60.0, gt=0)
    max_result_chars: int = Field(default=20_000, ge=100)
    """Longer tool results are cut here and marked as truncated."""
    untrusted: bool = False
    """Results come from outside the org (web pages, outside mail): the policy knows."""
    targets: dict[str, dict[str, str]] = Field(default_factory=dict)
    """Per tool: argument -> target kind, e.g. ``{"send": {"to": "mail"}}`` (policy targets)."""
    org: str | None = None
    """Settings only: the name of the org the connector belongs to (default: the oldest
    org). A connector added at run time belongs to its admin's org and leaves this out."""

    @model_validator(mode="after")
    def _transport_target(self) -> Self:
        if self.transport == "stdio" and not self.command:
            raise ValueError("a stdio connector needs 'command'")
        if self.transport == "http" and not self.url:
            raise ValueError("an http connector needs 'url'")
        return self

    def target(self) -> str:
        """What the connector talks to, for listings (no secrets are ever in here)."""
        if self.transport == "http":
            return str(self.url)
        return " ".join([str(self.command), *self.args])
