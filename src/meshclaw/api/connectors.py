"""``/v1/connectors``: the same operations as ``meshclaw connector ...`` over HTTP.

Every route is about the caller's org: another org's connector is a 404, like a name
that does not exist (``ConnectorService``).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from meshclaw.api.deps import PROBLEM_RESPONSES, Authed, PlatformDep
from meshclaw.connectors.approvals import ToolState
from meshclaw.connectors.config import ConnectorConfig
from meshclaw.errors import ToolError

router = APIRouter(prefix="/v1/connectors", tags=["connectors"])


class ConnectorCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    config: ConnectorConfig


class ConnectorOut(BaseModel):
    name: str
    source: Literal["settings", "store"]
    transport: str
    target: str
    approval: str
    tools: dict[str, int]
    """Recorded tools by status (approved, pending, changed)."""


class ToolOut(BaseModel):
    connector: str
    tool: str
    status: Literal["approved", "pending", "changed"]
    definition: dict[str, Any]
    definition_hash: str
    approved_hash: str | None
    approved_by: str | None
    approved_at: datetime | None
    last_seen_at: datetime


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tools: list[str] | None = Field(default=None, description="None approves every tool.")
    expected_hash: str | None = Field(
        default=None, description="Approve only if the definition still has this hash."
    )


class ProbeOut(BaseModel):
    name: str
    ok: bool
    latency_ms: int
    tools: int
    approved: int
    error: str | None
    server: dict[str, str | None]
    """The server's name, version and the MCP protocol version agreed."""


def _tool(state: ToolState) -> ToolOut:
    return ToolOut.model_validate(asdict(state))


@router.get("")
def list_connectors(platform: PlatformDep, who: Authed) -> list[ConnectorOut]:
    """The connectors of the caller's org (settings and stored) and their tool counts."""
    infos = platform.connector_admin.list_connectors(who)
    return [ConnectorOut.model_validate(asdict(i)) for i in infos]


@router.post("", status_code=201)
def add_connector(body: ConnectorCreate, platform: PlatformDep, who: Authed) -> ConnectorOut:
    """Register an MCP server in the caller's org (platform admins). Its tools wait for
    approval; the same name may exist in another org."""
    config = body.config.model_dump(mode="json")
    info = platform.connector_admin.add(who, body.name, config)
    return ConnectorOut.model_validate(asdict(info))


@router.delete("/{name}", status_code=204)
def remove_connector(name: str, platform: PlatformDep, who: Authed) -> None:
    platform.connector_admin.remove(who, name)


UNREACHABLE: dict[int | str, dict[str, Any]] = {
    502: {
        "description": "The connector's server could not be reached or misbehaved (why is in "
        "`detail`); `refresh=false` still lists what is recorded.",
        "content": PROBLEM_RESPONSES["4XX"]["content"],
    }
}


@router.get("/{name}/tools", responses=UNREACHABLE)
async def connector_tools(
    name: str, platform: PlatformDep, who: Authed, refresh: bool = True
) -> list[ToolOut]:
    """The connector's tools, hashes and approval status; ``refresh`` asks the server first."""
    try:
        states = await platform.connector_admin.tools(who, name, refresh=refresh)
    except ToolError as exc:  # the server's fault, not ours: a gateway error, not a 500
        raise HTTPException(502, detail=str(exc)) from exc
    return [_tool(s) for s in states]


@router.post("/{name}/approve")
def approve_tools(name: str, body: ApproveIn, platform: PlatformDep, who: Authed) -> list[ToolOut]:
    states = platform.connector_admin.approve(
        who, name, body.tools, expected_hash=body.expected_hash
    )
    return [_tool(s) for s in states]


@router.post("/{name}/test")
async def test_connector(name: str, platform: PlatformDep, who: Authed) -> ProbeOut:
    """Connect and list the tools; ``ok: false`` with the reason if that fails."""
    report = await platform.connector_admin.test(who, name)
    return ProbeOut.model_validate(asdict(report))
