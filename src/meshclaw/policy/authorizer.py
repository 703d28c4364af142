"""The authoriser seam behind the choke point.

The gateway asks before every model and tool call. This issue ships two answers:
``AllowAll`` (for tests of other layers) and ``SpecGrantAuthorizer``, which enforces
the tools and scopes an agent's spec declares. ``policy.cedar.CedarAuthorizer``
implements the same Protocol with Cedar policies and is the platform default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from meshclaw.spec.models import AgentSpec

ActionName = Literal["model.invoke", "tool.read", "tool.write"]


@dataclass(frozen=True, kw_only=True)
class Principal:
    org_id: str
    user_id: str
    """The human the agent acts for."""
    agent_id: str | None = None
    team_id: str | None = None
    """The agent's team, when it has one."""


@dataclass(frozen=True, kw_only=True)
class AuthzRequest:
    principal: Principal
    action: ActionName
    resource: str
    """``model:<provider>/<model>`` or ``tool:<connector.tool>``."""
    spec: AgentSpec
    context: dict[str, Any] = field(default_factory=dict)
    """Run id, trigger, arguments summary."""


@dataclass(frozen=True, kw_only=True)
class Decision:
    allowed: bool
    reason: str
    needs_approval: bool = False
    """Refused for now, but a person may approve this exact call."""
    policies: tuple[str, ...] = ()
    """The ids of the policies that determined the answer (empty: deny by default)."""

    def __str__(self) -> str:
        verdict = "allow" if self.allowed else "needs approval" if self.needs_approval else "deny"
        return f"{verdict}: {self.reason}"


class Authorizer(Protocol):
    def authorize(self, request: AuthzRequest) -> Decision: ...


class AllowAll:
    """Allows everything. Never the default outside tests."""

    def authorize(self, request: AuthzRequest) -> Decision:
        return Decision(allowed=True, reason="allow-all authoriser")


class SpecGrantAuthorizer:
    """Least privilege from the spec: only declared tools, and writes only with a write grant."""

    def authorize(self, request: AuthzRequest) -> Decision:
        if request.action == "model.invoke":
            wanted = f"model:{request.spec.model.provider}/{request.spec.model.model}"
            if request.resource != wanted:
                return Decision(allowed=False, reason=f"spec declares {wanted}")
            return Decision(allowed=True, reason="model declared in spec")
        tool = request.resource.removeprefix("tool:")
        grant = request.spec.grant_for(tool)
        if grant is None:
            return Decision(allowed=False, reason=f"tool {tool} is not granted in the spec")
        if request.action == "tool.write" and grant.scope != "write":
            return Decision(allowed=False, reason=f"{grant.name} is granted read-only")
        return Decision(allowed=True, reason=f"granted by {grant.name} ({grant.scope})")
