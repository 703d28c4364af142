"""Request and response bodies of the REST API (they make up ``/openapi.json``)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from meshclaw.policy.approvals import ApprovalInfo
from meshclaw.runtime.service import RunInfo, StepInfo


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def _fields_of(record: type[Any]) -> type[_Out]:
    """A response model with a service dataclass's fields (names, types, defaults), so the
    API says what the service returns without a copy to keep in step. Subclass it to
    name the schema: ``/openapi.json`` shows the subclass alone, with every field."""
    hints = get_type_hints(record)
    fields: dict[str, Any] = {
        f.name: (hints[f.name], ... if f.default is dataclasses.MISSING else f.default)
        for f in dataclasses.fields(record)
    }
    return create_model(f"_{record.__name__}Fields", __base__=_Out, **fields)


if TYPE_CHECKING:  # what mypy sees: the fields are only read through validation

    class _StepFields(_Out): ...

    class _RunFields(_Out): ...

    class _ApprovalFields(_Out): ...

else:
    _StepFields = _fields_of(StepInfo)
    _RunFields = _fields_of(RunInfo)
    _ApprovalFields = _fields_of(ApprovalInfo)


class ApprovalOut(_ApprovalFields):
    """A held tool call and its decision: ``policy.approvals.ApprovalInfo``, field for
    field (``arguments`` are exactly those the call is made with if approved)."""


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
    archived_at: datetime | None = None
    """When it was archived (it starts no runs; ``POST .../restore`` undoes it)."""


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


class StepOut(_StepFields):
    """One model turn or tool call of a run: ``runtime.service.StepInfo``, field for field."""


class RunOut(_RunFields):
    """A run: ``runtime.service.RunInfo``, field for field. ``outcomes_settled_at`` is when
    its outcomes were recorded after its end (null until then): read the run's outcomes
    once it is set. ``outcomes_error``: why recording them failed."""

    steps: list[StepOut] | None = None
    """With ``GET /v1/runs/{id}``: every step."""


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
