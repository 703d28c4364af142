"""``/v1/policy``: the caller's org's own policies (read, save a version, versions, diff),
validation and explanations, as ``meshclaw policy``.

There is no reload: the install's ``policy_file`` holds the operator's install-wide
policies, read when a process starts; no org's admin changes what applies to every org.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from meshclaw.api.deps import Authed, PlatformDep
from meshclaw.api.schemas import Problem
from meshclaw.errors import NotFoundError, PolicyError
from meshclaw.policy.api import ApiResource
from meshclaw.policy.authorizer import AuthzRequest, Principal
from meshclaw.policy.cedar import Explanation
from meshclaw.policy.org_policies import MAX_NOTE_CHARS, MAX_POLICY_CHARS, PolicyVersionInfo
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
    """Check org policies against the schema (with the built-ins and the install's
    operator policies) without saving them (platform admins)."""
    platform.access.require(caller, "policy.manage", ApiResource.org(caller.org_id))
    issues = platform.policies.validate(body.policies)
    return ValidateOut(
        valid=not issues,
        errors=[IssueOut(policy=i.policy, line=i.line, message=i.message) for i in issues],
    )


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policies: str = Field(
        description="Cedar text of the org's own policies (replaces the current text).",
        max_length=MAX_POLICY_CHARS,
    )
    expected_version: StrictInt | None = Field(
        default=None,
        ge=0,
        description="The version this text was edited from: if someone saved since, 409.",
    )
    note: str = Field(default="", max_length=MAX_NOTE_CHARS, description="Why it changed.")


class PolicyOut(BaseModel):
    org_id: str
    version: int
    """0: the org has never saved policies."""
    policies: str
    sha256: str
    created_at: datetime | None
    created_by: str | None
    """The author's handle."""
    note: str
    changed: bool | None = None
    """On save: whether a new version was made (the same text makes none)."""


class VersionOut(BaseModel):
    version: int
    sha256: str
    created_at: datetime | None
    created_by: str | None
    note: str
    lines: int


class DiffOut(BaseModel):
    old: int
    new: int
    diff: str
    """Unified diff of the two versions' texts."""


def _policy_out(info: PolicyVersionInfo, changed: bool | None = None) -> PolicyOut:
    return PolicyOut(
        org_id=info.org_id,
        version=info.version,
        policies=info.text,
        sha256=info.sha256,
        created_at=info.created_at,
        created_by=info.created_by,
        note=info.note,
        changed=changed,
    )


@router.get("")
def current(platform: PlatformDep, caller: Authed) -> PolicyOut:
    """The caller's org's own policies in force and their version (``policy.read``:
    platform admins and auditors). The built-ins and the install's operator policies
    apply as well (``meshclaw policy show --all``)."""
    return _policy_out(platform.org_policies.current(caller))


@router.put(
    "",
    response_model=PolicyOut,
    responses={422: {"description": "Invalid policies: every problem with its line."}},
)
def save(body: PolicyIn, platform: PlatformDep, caller: Authed) -> Response:
    """Save the org's own policies as a new version (``policy.manage``: platform admins).

    Validated against the schema first: an invalid text is answered 422 with every
    problem (policy, line, Cedar's message) and the version in force stays. Audited
    (``policy.update``). The same text as the current one makes no new version."""
    try:
        info, changed = platform.org_policies.save(
            caller, body.policies, expected_version=body.expected_version, note=body.note
        )
    except PolicyError as exc:
        problem = Problem(
            title="Invalid policies",
            status=422,
            detail=str(exc),
            errors=[{"policy": i.policy, "line": i.line, "message": i.message} for i in exc.issues],
        )
        return JSONResponse(
            problem.model_dump(exclude_none=True), 422, media_type="application/problem+json"
        )
    return JSONResponse(_policy_out(info, changed).model_dump(mode="json"))


@router.get("/versions")
def versions(platform: PlatformDep, caller: Authed) -> list[VersionOut]:
    """Every version of the org's own policies, newest first (``policy.read``)."""
    return [
        VersionOut(
            version=v.version,
            sha256=v.sha256,
            created_at=v.created_at,
            created_by=v.created_by,
            note=v.note,
            lines=len(v.text.splitlines()),
        )
        for v in platform.org_policies.versions(caller)
    ]


@router.get("/diff")
def diff(
    platform: PlatformDep,
    caller: Authed,
    old: int = Query(ge=0, description="A version (0: the empty start)."),
    new: int = Query(ge=0),
) -> DiffOut:
    """What changed between two versions of the org's own policies (``policy.read``)."""
    return DiffOut(old=old, new=new, diff=platform.org_policies.diff(caller, old, new))


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
        context |= definition.policy_context(body.arguments)
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
