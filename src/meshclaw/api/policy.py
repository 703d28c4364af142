"""``/v1/policy``: validate org policies and explain decisions, as ``meshclaw policy``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from meshclaw.api.deps import Authed, PlatformDep
from meshclaw.errors import NotFoundError
from meshclaw.policy.api import ApiResource
from meshclaw.policy.arguments import call_targets
from meshclaw.policy.authorizer import AuthzRequest, Principal
from meshclaw.policy.cedar import Explanation, read_policy_file
from meshclaw.spec.registry import agent_resource

router = APIRouter(prefix="/v1/policy", tags=["policy"])


class ValidateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policies: str = Field(description="Cedar text of the org's own policies.")


class IssueOut(BaseModel):
    policy: str
    line: int | None
    message: str


class ValidateOut(BaseModel):
    valid: bool
    errors: list[IssueOut]


class ExplainIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: str
    tool: str | None = Field(default=None, description="connector.tool; omit for the model.")
    arguments: dict[str, Any] = Field(default_factory=dict)
    untrusted: StrictBool = False
    approved: StrictBool = False
    trigger: str = "manual"


class CheckOut(BaseModel):
    action: str
    resource: str
    context: dict[str, Any]
    allowed: bool
    policies: list[str]
    errors: list[str]


class ExplainOut(BaseModel):
    allowed: bool
    needs_approval: bool
    reason: str
    policies: list[str]
    checks: list[CheckOut]
    policy_texts: dict[str, str]


def _out(explanation: Explanation) -> ExplainOut:
    d = explanation.decision
    return ExplainOut(
        allowed=d.allowed,
        needs_approval=d.needs_approval,
        reason=d.reason,
        policies=list(d.policies),
        checks=[
            CheckOut(
                action=c.action,
                resource=c.resource,
                context=c.context,
                allowed=c.allowed,
                policies=list(c.policies),
                errors=list(c.errors),
            )
            for c in explanation.checks
        ],
        policy_texts=explanation.policy_texts,
    )


@router.post("/validate")
def validate(body: ValidateIn, platform: PlatformDep, caller: Authed) -> ValidateOut:
    """Check org policies against the schema without loading them (platform admins)."""
    platform.access.require(caller, "policy.manage", ApiResource.org(caller.org_id))
    issues = platform.policies.validate(body.policies)
    return ValidateOut(
        valid=not issues,
        errors=[IssueOut(policy=i.policy, line=i.line, message=i.message) for i in issues],
    )


class ReloadOut(BaseModel):
    generation: int
    """Increases with every policy set that was loaded."""
    source: str | None


@router.post("/reload")
def reload(platform: PlatformDep, caller: Authed) -> ReloadOut:
    """Re-read ``policy_file`` (platform admins). An invalid file is rejected with every
    problem (HTTP 422) and the active policy set stays as it was."""
    platform.access.require(caller, "policy.manage", ApiResource.org(caller.org_id))
    path = platform.settings.policy_file
    text = read_policy_file(path) if path is not None else ""
    loaded = platform.policies.load(text, source=str(path) if path else None)
    return ReloadOut(generation=loaded.generation, source=str(path) if path else None)


@router.post("/explain")
async def explain(body: ExplainIn, platform: PlatformDep, caller: Authed) -> ExplainOut:
    """Why a call by an agent would be allowed, denied or held for approval."""
    info = platform.agents.get(caller, body.agent)
    platform.access.require(caller, "agent.read", agent_resource(info))
    context: dict[str, Any] = {
        "run_id": "explain",
        "trigger": body.trigger,
        "untrusted_content_seen": body.untrusted,
        "approved": body.approved,
    }
    if body.tool is None:
        action = "model.invoke"
        resource = f"model:{info.spec.model.provider}/{info.spec.model.model}"
    else:
        connector, _, name = body.tool.partition(".")
        connectors = platform.connectors()
        try:
            listed = await connectors.tools(connector, org_id=info.org_id, user_id=info.owner_id)
            definition = listed.get(name)
        finally:
            await connectors.aclose()
        if definition is None:
            raise NotFoundError(f"no tool {body.tool!r}")
        action, resource = f"tool.{definition.action}", f"tool:{body.tool}"
        targets = call_targets(definition.targets, body.arguments)
        context |= {"arguments": body.arguments, "targets": targets}
    request = AuthzRequest(
        principal=Principal(
            org_id=info.org_id, user_id=info.owner_id, agent_id=info.id, team_id=info.team_id
        ),
        action=action,  # type: ignore[arg-type]
        resource=resource,
        spec=info.spec,
        context=context,
    )
    return _out(platform.authorizer.explain(request))
