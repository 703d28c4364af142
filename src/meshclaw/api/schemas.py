"""Request and response bodies of the REST API (they make up ``/openapi.json``)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class AgentCreate(BaseModel):
    """A spec as YAML text (what the CLI and form produce) or as a JSON object."""

    model_config = ConfigDict(extra="forbid")

    spec_yaml: str | None = Field(default=None, max_length=200_000)
    spec: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> AgentCreate:
        if (self.spec_yaml is None) == (self.spec is None):
            raise ValueError("send exactly one of 'spec_yaml' or 'spec'")
        return self


class AgentOut(_Out):
    id: str
    name: str
    owner: str
    team_id: str | None
    version: int
    created_at: datetime
    spec: dict[str, Any]
    changed: bool | None = None
    """On create/update: whether a new version was stored."""


class VersionOut(_Out):
    version: int
    spec_hash: str
    created_by: str
    created_at: datetime
    spec_yaml: str


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: str = Field(min_length=1, max_length=100, description="Agent name or id.")
    input: str = Field(default="", max_length=100_000)
    trigger: Literal["api", "manual"] = "api"


class StepOut(_Out):
    seq: int
    kind: str
    name: str
    status: str
    decision: str | None
    error: str | None
    request: dict[str, Any]
    response: dict[str, Any] | None
    cost_usd: Decimal
    started_at: datetime
    ended_at: datetime | None


class RunOut(_Out):
    id: str
    agent_id: str
    agent_name: str
    agent_version: int
    user_id: str
    trigger: str
    status: str
    input: str
    output: str | None
    error: str | None
    step_count: int
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    steps: list[StepOut] | None = None


class UsageRowOut(_Out):
    key: str
    model_calls: int
    tool_calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal
    cache_write_tokens: int = 0
    period: str | None = None
    """Start of the period (``YYYY-MM-DD``) when the report is by period."""


class UsageOut(BaseModel):
    group_by: str
    rows: list[UsageRowOut]
    period: str | None = None


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None
