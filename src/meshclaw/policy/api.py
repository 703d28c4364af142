"""Cedar decisions for what people do through the API and CLI.

Services ask ``ApiAuthorizer.authorize_api(caller, action, resource)`` (or
``require``, which raises ``PermissionDenied``) instead of comparing roles in code,
so the four roles, tenant isolation and any org policy apply the same way to every
entry point. Resources are described with ``ApiResource``'s constructors.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import cedarpy

from meshclaw.errors import PermissionDenied
from meshclaw.policy.authorizer import Decision
from meshclaw.policy.cedar import (
    ROLE_ENTITIES,
    Check,
    Explanation,
    PolicyStore,
    _Lru,
    _ref,
    entity,
    user_entity,
)
from meshclaw.policy.schema import API_ACTIONS

if TYPE_CHECKING:
    from meshclaw.accounts.service import Caller
    from meshclaw.audit.sink import AuditSink
    from meshclaw.store.db import Database

log = logging.getLogger(__name__)

ResourceKind = Literal["Agent", "Run", "Team", "User", "Org", "Outcome", "Tool"]


@dataclass(frozen=True, kw_only=True)
class ApiResource:
    """What an API action is about, with the attributes the policies read."""

    kind: ResourceKind
    id: str
    org_id: str
    owner_id: str | None = None
    """Agent, Run and Outcome: the owner."""
    team_id: str | None = None
    started_by: str | None = None
    """Run: who started it (may differ from the owner)."""
    agent_id: str | None = None
    """Run and Outcome: its agent."""
    name: str = ""
    role: str = "employee"
    """User (a person as the subject of analytics): their role."""
    beneficiaries: tuple[str, ...] = ()
    """Outcome: the user ids of the people who received it (outsiders are left out)."""

    @classmethod
    def agent(
        cls, *, id: str, org_id: str, owner_id: str, team_id: str | None = None, name: str = ""
    ) -> ApiResource:
        return cls(
            kind="Agent", id=id, org_id=org_id, owner_id=owner_id, team_id=team_id, name=name
        )

    @classmethod
    def run(
        cls,
        *,
        id: str,
        org_id: str,
        owner_id: str,
        agent_id: str,
        started_by: str | None = None,
        team_id: str | None = None,
    ) -> ApiResource:
        return cls(
            kind="Run",
            id=id,
            org_id=org_id,
            owner_id=owner_id,
            agent_id=agent_id,
            started_by=started_by,
            team_id=team_id,
        )

    @classmethod
    def outcome(
        cls,
        *,
        id: str,
        org_id: str,
        owner_id: str,
        agent_id: str,
        type_name: str,
        beneficiaries: tuple[str, ...] = (),
        team_id: str | None = None,
    ) -> ApiResource:
        """One outcome; ``beneficiaries`` may hold ``external`` (dropped: not a person here)."""
        people = tuple(sorted({b for b in beneficiaries if b != "external"}))
        return cls(
            kind="Outcome", id=id, org_id=org_id, owner_id=owner_id, agent_id=agent_id,
            name=type_name, beneficiaries=people, team_id=team_id,
        )  # fmt: skip

    @classmethod
    def team(cls, *, id: str, org_id: str, name: str = "") -> ApiResource:
        return cls(kind="Team", id=id, org_id=org_id, name=name)

    @classmethod
    def person(
        cls, *, id: str, org_id: str, team_id: str | None = None, role: str = "employee"
    ) -> ApiResource:
        return cls(kind="User", id=id, org_id=org_id, team_id=team_id, role=role)

    @classmethod
    def org(cls, org_id: str) -> ApiResource:
        return cls(kind="Org", id=org_id, org_id=org_id)

    @classmethod
    def tool(cls, *, qualified: str, org_id: str, kind: str = "write") -> ApiResource:
        """A connector tool (``connector.tool``) the platform itself calls; ``kind`` read or
        write."""
        return cls(kind="Tool", id=qualified, org_id=org_id, name=kind)

    def entities(self) -> list[dict[str, Any]]:
        org = _ref("Org", self.org_id)
        out = [entity("Org", self.org_id, {})]
        if self.kind == "Org":
            return out
        if self.team_id is not None:
            out.append(
                entity("Team", self.team_id, {"org": org, "name": ""}, [("Org", self.org_id)])
            )
        attrs: dict[str, Any] = {"org": org}
        team = {"team": _ref("Team", self.team_id)} if self.team_id is not None else {}
        if self.kind == "Agent":
            attrs |= {"owner": _ref("User", self.owner_id or ""), "name": self.name} | team
        elif self.kind == "Run":
            attrs |= {
                "owner": _ref("User", self.owner_id or ""),
                "agent": _ref("Agent", self.agent_id or ""),
            } | team
            if self.started_by is not None:
                attrs["started_by"] = _ref("User", self.started_by)
        elif self.kind == "Outcome":
            attrs |= {
                "owner": _ref("User", self.owner_id or ""),
                "agent": _ref("Agent", self.agent_id or ""),
                "type": self.name,
                "beneficiaries": [_ref("User", b) for b in self.beneficiaries],
            } | team
        elif self.kind == "Tool":
            connector, _, tool = self.id.partition(".")
            return [
                *out,
                entity("Connector", connector, {"org": org}),
                entity(
                    "Tool",
                    self.id,
                    {"org": org, "connector": connector, "name": tool, "kind": self.name},
                    [("Connector", connector)],
                ),
            ]
        elif self.kind == "Team":
            return [
                *out[:1],
                entity("Team", self.id, {"org": org, "name": self.name}, [("Org", self.org_id)]),
            ]
        else:  # a person
            return user_entity(self.org_id, self.id, self.role, self.team_id)
        return [*out, entity(self.kind, self.id, attrs)]


def _merge(*groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entity per uid (the caller may also be the resource, or share its org).

    Two descriptions of one uid must agree on its org: ids are unique across the install,
    so a disagreement is corrupt data, and keeping either copy could let one org's
    attributes decide for another. ``explain`` turns the error into a denial."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for group in groups:
        for item in group:
            uid = (item["uid"]["type"], item["uid"]["id"])
            kept = merged.setdefault(uid, item)
            org, other = kept.get("attrs", {}).get("org"), item.get("attrs", {}).get("org")
            if org is not None and other is not None and org != other:
                raise ValueError(f"{uid[0]}::{uid[1]} is described with two different orgs")
    return list(merged.values())


class ApiAuthorizer:
    """Decides API actions of people with the same Cedar policy set as the gateway."""

    def __init__(self, store: PolicyStore) -> None:
        self.store = store
        self._roles = cedarpy.Entities.from_json_str(json.dumps(ROLE_ENTITIES))
        self._entities: _Lru[tuple[Any, ...], cedarpy.Entities] = _Lru(2048)
        self._record: tuple[Database, AuditSink] | None = None

    def record_refusals(self, db: Database, audit: AuditSink) -> None:
        """From now on, append to the audit log every refusal ``require`` raises
        (``api.denied``) and every policy engine error (``policy.error``; the action is
        refused). ``authorize_api`` alone is a question, not a refusal: services ask it to
        find what someone may see (the org? their team?) and are not recorded."""
        self._record = (db, audit)

    def authorize_api(
        self,
        caller: Caller,
        action: str,
        resource: ApiResource,
        *,
        drill_down: bool = False,
        context: Mapping[str, Any] | None = None,
    ) -> Decision:
        """``context``: what an action's context type adds to ``drill_down`` (the schema's
        ``NotifyContext`` for ``notify.send``)."""
        return self.explain(
            caller, action, resource, drill_down=drill_down, context=context
        ).decision

    def require(
        self,
        caller: Caller,
        action: str,
        resource: ApiResource,
        *,
        message: str | None = None,
        drill_down: bool = False,
    ) -> Decision:
        """The decision if allowed; else ``PermissionDenied`` with ``message`` and the reason."""
        decision = self.authorize_api(caller, action, resource, drill_down=drill_down)
        if not decision.allowed:
            self._append(caller, "api.denied", action, resource, decision.reason)
            head = f"{message} " if message else ""
            raise PermissionDenied(f"{head}({action} denied: {decision.reason})")
        return decision

    def _append(
        self, caller: Caller, what: str, action: str, resource: ApiResource, reason: str
    ) -> None:
        if self._record is None:
            return
        from meshclaw.audit.sink import AuditRecord  # here: the audit package imports this one

        db, audit = self._record
        record = AuditRecord(
            action=what,
            resource=f"{resource.kind}:{resource.id}"[:300],
            outcome="denied",
            org_id=caller.org_id,
            actor_user_id=caller.user_id,
            details={"action": action, "reason": reason[:1000]},
        )
        try:
            with db.session() as session:
                audit.append(session, record)
        except Exception:  # the refusal stands; the missing record is logged loudly
            log.exception("could not record %s of %s by %s", what, action, caller.user_id)

    def explain(
        self,
        caller: Caller,
        action: str,
        resource: ApiResource,
        *,
        drill_down: bool = False,
        context: Mapping[str, Any] | None = None,
    ) -> Explanation:
        if action not in API_ACTIONS:
            reason = f"unknown API action {action!r}"
            return Explanation(decision=Decision(allowed=False, reason=reason))
        try:
            return self._explain(
                caller, action, resource, {"drill_down": drill_down, **(context or {})}
            )
        except Exception as exc:  # fail closed, and say so where operators look
            reason = f"policy engine error: {type(exc).__name__}: {exc}"
            log.error("%s on %s:%s refused: %s", action, resource.kind, resource.id, reason)
            self._append(caller, "policy.error", action, resource, reason)
            return Explanation(decision=Decision(allowed=False, reason=reason))

    def _explain(
        self, caller: Caller, action: str, resource: ApiResource, context: dict[str, Any]
    ) -> Explanation:
        # The caller's org's set: another org's policies never decide for this caller.
        loaded = self.store.for_org(caller.org_id)
        key = (caller, resource)
        entities = self._entities.get(key, lambda: self._build(caller, resource))
        result = cedarpy.is_authorized(
            {
                "principal": {"type": "User", "id": caller.user_id},
                "action": {"type": "Action", "id": action},
                "resource": {"type": resource.kind, "id": resource.id},
                "context": context,
            },
            loaded.handle,
            entities,
            self.store.schema,
        )
        errors = tuple(result.diagnostics.errors)
        names = result.diagnostics.id_annotations_by_reason
        policies = tuple(names.get(p) or p for p in result.diagnostics.reasons)
        check = Check(
            action=action,
            resource=f"{resource.kind}::{resource.id}",
            context=context,
            allowed=result.allowed and not errors,
            policies=policies,
            errors=errors,
        )
        if check.allowed:
            reason = f"permitted by {', '.join(policies)}"
        elif errors:
            reason = f"policy engine error: {'; '.join(errors)}"
        elif policies:
            reason = f"forbidden by {', '.join(policies)}"
        else:
            reason = f"no policy permits it for role {caller.role} (deny by default)"
        texts = {s.label: s.text for s in loaded.statements if s.label in policies}
        decision = Decision(allowed=check.allowed, reason=reason, policies=policies)
        return Explanation(decision=decision, checks=(check,), policy_texts=texts)

    def _build(self, caller: Caller, resource: ApiResource) -> cedarpy.Entities:
        principal = user_entity(caller.org_id, caller.user_id, caller.role, caller.team_id)
        return self._roles.with_added_json_str(json.dumps(_merge(principal, resource.entities())))
