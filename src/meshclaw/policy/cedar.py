"""Cedar behind the ``Authorizer`` seam: the policy gate of every model and tool call.

Layers: ``PolicyStore`` (``store.py``) holds the policy sets in force: the built-ins
from ``roles.py``, the install's operator policies (``settings.policy_file``) and, per
org, that org's own policies (stored by ``org_policies.py``), each validated against
``schema.SCHEMA`` before it replaces the previous one. A decision for a principal of
org X uses the built-ins, the operator's policies and X's own, never another org's.
``CedarAuthorizer`` turns an ``AuthzRequest`` into Cedar requests (the agent's spec
compiled by ``compiler.py`` is added to the set for that agent) and Cedar's answers into
a ``Decision``; ``policy.api`` does the same for API actions.

Deny by default, forbid beats permit (Cedar's semantics). It fails closed: an
exception, a request Cedar rejects, or any policy that errors while evaluating (Cedar
would skip it, and a skipped forbid would be an allow) is a deny.

Parsed policy sets, the schema and entity sets are cached, so a decision costs one
or a few engine calls and no parsing.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import cedarpy

from meshclaw.policy._source import split_statements
from meshclaw.policy.arguments import flatten_arguments, summarize_arguments
from meshclaw.policy.authorizer import AuthzRequest, Decision
from meshclaw.policy.compiler import compile_spec, constrained_arguments
from meshclaw.policy.roles import APPROVAL_PREFIX, ROLES
from meshclaw.policy.store import LoadedPolicies as LoadedPolicies
from meshclaw.policy.store import MemoryOrgPolicies as MemoryOrgPolicies
from meshclaw.policy.store import OrgPolicySource as OrgPolicySource
from meshclaw.policy.store import OrgPolicyText as OrgPolicyText
from meshclaw.policy.store import PolicyStore as PolicyStore
from meshclaw.policy.store import read_policy_file as read_policy_file
from meshclaw.spec.models import AgentSpec

log = logging.getLogger(__name__)

MAX_ARGUMENT_VALUES = 256
"""A call with more argument values than this is refused: each one must be checked."""

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Lru(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, build: Callable[[], V]) -> V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = build()
        with self._lock:
            self._items[key] = value
            if len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


def _uid(kind: str, ident: str) -> dict[str, str]:
    return {"type": kind, "id": ident}


def _ref(kind: str, ident: str) -> dict[str, Any]:
    return {"__entity": _uid(kind, ident)}


def entity(
    kind: str,
    ident: str,
    attrs: dict[str, Any],
    parents: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    """A Cedar entity in JSON form; ``attrs`` values may be ``_ref`` dicts."""
    return {
        "uid": _uid(kind, ident),
        "attrs": attrs,
        "parents": [_uid(k, i) for k, i in parents],
    }


def user_entity(org_id: str, user_id: str, role: str, team_id: str | None) -> list[dict[str, Any]]:
    """A person, their team and their org; the role entities are in every set."""
    attrs: dict[str, Any] = {"org": _ref("Org", org_id), "role": role}
    parents = [("Role", role if role in ROLES else "unknown")]
    out = [entity("Org", org_id, {})]
    if team_id is not None:
        attrs["team"] = _ref("Team", team_id)
        parents.append(("Team", team_id))
        out.append(
            entity("Team", team_id, {"org": _ref("Org", org_id), "name": ""}, [("Org", org_id)])
        )
    out.append(entity("User", user_id, attrs, parents))
    return out


ROLE_ENTITIES = [entity("Role", "employee", {})] + [
    entity("Role", r, {}, [("Role", "employee")]) for r in ROLES if r != "employee"
]
"""Every role is inside ``employee``: what an employee may do, every role may do."""


@dataclass(frozen=True, kw_only=True)
class Check:
    """One Cedar request and its answer, for ``explain``."""

    action: str
    resource: str
    context: dict[str, Any]
    allowed: bool
    policies: tuple[str, ...]
    errors: tuple[str, ...] = ()

    def describe(self) -> str:
        verdict = "allow" if self.allowed else "deny"
        return f"{verdict:5} {self.subject()}"

    def subject(self) -> str:
        subject = f"{self.action} {self.resource}"
        if self.action == "tool.argument":
            kind = self.context.get("kind")
            name = self.context.get("name")
            value = self.context.get("value")
            subject += f" {kind} {name}={value!r}" if kind == "argument" else f" target {value!r}"
        return subject


@dataclass(frozen=True, kw_only=True)
class Explanation:
    decision: Decision
    checks: tuple[Check, ...] = ()
    policy_texts: dict[str, str] = field(default_factory=dict)
    """``@id`` -> policy text, for every policy that determined a check."""


@dataclass(frozen=True, kw_only=True)
class _Compiled:
    handle: cedarpy.PolicySet
    texts: dict[str, str]


class CedarAuthorizer:
    """Decides model and tool calls of runs with Cedar; implements ``Authorizer``."""

    def __init__(self, store: PolicyStore | None = None) -> None:
        self.store = store or PolicyStore()
        self._roles = cedarpy.Entities.from_json_str(json.dumps(ROLE_ENTITIES))
        self._compiled: _Lru[tuple[tuple[int, str | None, int], str, str], _Compiled] = _Lru(512)
        self._spec_keys: _Lru[int, tuple[AgentSpec, str]] = _Lru(512)
        self._entities: _Lru[tuple[Any, ...], cedarpy.Entities] = _Lru(2048)
        self._model_decisions: _Lru[tuple[Any, ...], Explanation] = _Lru(4096)
        """A run's model calls ask the same question every step: same policy set (its
        ``key`` changes with any policy change), agent, spec, principal, model and
        context. The answer is a pure function of those, so it is reused."""

    # -- the Authorizer protocol ---------------------------------------------------------

    def authorize(self, request: AuthzRequest) -> Decision:
        return self.explain(request).decision

    def explain(self, request: AuthzRequest) -> Explanation:
        """The decision, every Cedar request behind it and the policies that decided."""
        try:
            return self._explain(request)
        except Exception as exc:  # fail closed: no answer is a deny
            log.exception("policy engine error")
            reason = f"policy engine error: {type(exc).__name__}: {exc}"
            return Explanation(decision=Decision(allowed=False, reason=reason))

    # -- internals ----------------------------------------------------------------------

    def _explain(self, request: AuthzRequest) -> Explanation:
        if request.principal.agent_id is None:
            return Explanation(
                decision=Decision(allowed=False, reason="run calls need an agent principal")
            )
        # Built-ins, the operator's policies and the principal's org's own: never another's.
        loaded = self.store.for_org(request.principal.org_id)
        digest = self._spec_digest(request.spec)
        compiled = self._policies_for(loaded, request.principal.agent_id, request.spec, digest)
        base = {
            "run_id": str(request.context.get("run_id", "")),
            "trigger": str(request.context.get("trigger", "")),
            "untrusted_content_seen": bool(request.context.get("untrusted_content_seen", False)),
        }
        if request.action == "model.invoke":
            p = request.principal
            key = (loaded.key, p.agent_id, digest, p.org_id, p.user_id, p.team_id,
                   request.resource, *base.values())  # fmt: skip
            return self._model_decisions.get(
                key, lambda: self._explain_model(request, compiled, base)
            )
        if request.action not in ("tool.read", "tool.write"):
            return Explanation(
                decision=Decision(allowed=False, reason=f"unknown action {request.action!r}")
            )
        tool = request.resource.removeprefix("tool:")
        connector, _, tool_name = tool.partition(".")
        kind = request.action.removeprefix("tool.")
        entities = self._entities_for(request, ("Tool", tool, connector, tool_name, kind))
        resource = _uid("Tool", tool)
        arguments = request.context.get("arguments") or {}
        if not isinstance(arguments, dict):
            return Explanation(
                decision=Decision(allowed=False, reason="tool arguments must be a JSON object")
            )
        targets = sorted({str(t) for t in request.context.get("targets") or ()})
        pairs = flatten_arguments(arguments)
        if len(pairs) > MAX_ARGUMENT_VALUES:
            reason = f"{len(pairs)} argument values; at most {MAX_ARGUMENT_VALUES} are checked"
            return Explanation(decision=Decision(allowed=False, reason=reason))
        offer = bool(request.context.get("offer", False))
        if offer:
            # Deciding whether to show the tool to the model at all: each call's
            # arguments and targets are checked when it is made.
            pairs = []
        elif not loaded.argument_rules:
            # Unconstrained arguments are permitted by the compiled grant and no org
            # policy speaks about arguments: checking them would only cost time.
            wanted = constrained_arguments(request.spec, tool)
            pairs = [(n, v) for n, v in pairs if n in wanted]

        principal = _uid("Agent", request.principal.agent_id)

        approved = bool(request.context.get("approved", False))
        context = base | {
            "approved": approved,
            "arguments_summary": summarize_arguments(arguments),
            "targets": targets,
        }
        items: list[tuple[str, dict[str, Any]]] = [(request.action, context)]
        arg_base = base | {"approved": approved}
        items += [
            ("tool.argument", arg_base | {"kind": "argument", "name": n, "value": v})
            for n, v in pairs
        ]
        if not offer:
            items += [
                ("tool.argument", arg_base | {"kind": "target", "name": "", "value": t})
                for t in targets
            ]
        # One engine call for the call itself and every argument and target.
        checks = self._evaluate(compiled, entities, principal, resource, items)
        explanation = self._conclude(compiled, checks)
        if approved or explanation.decision.allowed or not self._only_approval_gates(checks):
            return explanation
        # Only approval gates said no: would an approval of this exact call let it pass?
        retry = [(c.action, c.context | {"approved": True}) for c in checks if not c.allowed]
        if not all(
            c.allowed for c in self._evaluate(compiled, entities, principal, resource, retry)
        ):
            return explanation
        gates = tuple(sorted({p for c in checks if not c.allowed for p in c.policies}))
        decision = Decision(
            allowed=False,
            needs_approval=True,
            reason=f"needs approval ({', '.join(gates)})",
            policies=gates,
        )
        return Explanation(
            decision=decision, checks=explanation.checks, policy_texts=explanation.policy_texts
        )

    @staticmethod
    def _only_approval_gates(checks: list[Check]) -> bool:
        denied = [c for c in checks if not c.allowed]
        return bool(denied) and all(
            c.policies and not c.errors and all(p.startswith(APPROVAL_PREFIX) for p in c.policies)
            for c in denied
        )

    def _evaluate(
        self,
        compiled: _Compiled,
        entities: cedarpy.Entities,
        principal: dict[str, str],
        resource: dict[str, str],
        items: list[tuple[str, dict[str, Any]]],
    ) -> list[Check]:
        """Every (action, context) in one engine call."""
        cedar_requests = [
            {
                "principal": principal,
                "action": _uid("Action", action),
                "resource": resource,
                "context": context,
            }
            for action, context in items
        ]
        # No request validation against the schema here: MeshClaw builds these requests
        # itself and the policies were validated on load. A context a policy cannot
        # read is an evaluation error, and errors deny (below).
        results = cedarpy.is_authorized_batch(cedar_requests, compiled.handle, entities)
        checks = []
        for (action, context), result in zip(items, results, strict=True):
            errors = tuple(result.diagnostics.errors)
            names = result.diagnostics.id_annotations_by_reason
            policies = tuple(names.get(p) or p for p in result.diagnostics.reasons)
            checks.append(
                Check(
                    action=action,
                    resource=f"{resource['type']}::{resource['id']}",
                    context=context,
                    # Cedar skips a policy that errors; a skipped forbid must not allow.
                    allowed=result.allowed and not errors,
                    policies=policies,
                    errors=errors,
                )
            )
        return checks

    def _conclude(self, compiled: _Compiled, checks: list[Check]) -> Explanation:
        texts = {p: compiled.texts.get(p, "") for c in checks for p in c.policies}
        denied = next((c for c in checks if not c.allowed), None)
        if denied is None:
            main = checks[0]
            decision = Decision(
                allowed=True,
                reason=f"permitted by {', '.join(main.policies)}",
                policies=main.policies,
            )
        elif denied.errors:
            decision = Decision(
                allowed=False,
                reason=f"policy engine error: {'; '.join(denied.errors)}",
                policies=denied.policies,
            )
        elif denied.policies:
            decision = Decision(
                allowed=False,
                reason=f"{denied.subject()}: forbidden by {', '.join(denied.policies)}",
                policies=denied.policies,
            )
        else:
            decision = Decision(
                allowed=False, reason=f"{denied.subject()}: no policy permits it (deny by default)"
            )
        return Explanation(decision=decision, checks=tuple(checks), policy_texts=texts)

    def _explain_model(
        self, request: AuthzRequest, compiled: _Compiled, base: dict[str, Any]
    ) -> Explanation:
        model = request.resource.removeprefix("model:")
        provider, _, name = model.partition("/")
        entities = self._entities_for(request, ("Model", model, provider, name))
        resource = _uid("Model", model)
        assert request.principal.agent_id is not None  # ``_explain`` refused it otherwise
        principal = _uid("Agent", request.principal.agent_id)
        checks = self._evaluate(compiled, entities, principal, resource, [("model.invoke", base)])
        return self._conclude(compiled, checks)

    def _spec_digest(self, spec: AgentSpec) -> str:
        cached = self._spec_keys.get(id(spec), lambda: (spec, spec.model_dump_json()))
        return cached[1] if cached[0] is spec else spec.model_dump_json()

    def _policies_for(
        self, loaded: LoadedPolicies, agent_id: str, spec: AgentSpec, digest: str
    ) -> _Compiled:
        return self._compiled.get(
            (loaded.key, agent_id, digest), lambda: self._compile(loaded, agent_id, spec)
        )

    @staticmethod
    def _compile(loaded: LoadedPolicies, agent_id: str, spec: AgentSpec) -> _Compiled:
        text = compile_spec(agent_id, spec)
        ours = split_statements(text)
        texts = {s.label: s.text for s in loaded.statements} | {s.label: s.text for s in ours}
        return _Compiled(handle=loaded.handle.with_added_str(text), texts=texts)

    def _entities_for(
        self, request: AuthzRequest, resource_key: tuple[str, ...]
    ) -> cedarpy.Entities:
        p = request.principal
        key = (p.org_id, p.user_id, p.agent_id, p.team_id, request.spec.name, resource_key)
        return self._entities.get(key, lambda: self._build_entities(request, resource_key))

    def _build_entities(
        self, request: AuthzRequest, resource_key: tuple[str, ...]
    ) -> cedarpy.Entities:
        p = request.principal
        org = _ref("Org", p.org_id)
        agent_attrs: dict[str, Any] = {
            "org": org,
            "owner": _ref("User", p.user_id),
            "name": request.spec.name,
        }
        out = [entity("Org", p.org_id, {})]
        if p.team_id is not None:
            agent_attrs["team"] = _ref("Team", p.team_id)
            out.append(entity("Team", p.team_id, {"org": org, "name": ""}, [("Org", p.org_id)]))
        assert p.agent_id is not None
        out.append(entity("Agent", p.agent_id, agent_attrs))
        if resource_key[0] == "Model":
            _, model, provider, name = resource_key
            out.append(entity("Model", model, {"org": org, "provider": provider, "name": name}))
        else:
            _, tool, connector, name, kind = resource_key
            out.append(entity("Connector", connector, {"org": org}))
            attrs = {"org": org, "connector": connector, "name": name, "kind": kind}
            out.append(entity("Tool", tool, attrs, [("Connector", connector)]))
        return self._roles.with_added_json_str(json.dumps(out))
