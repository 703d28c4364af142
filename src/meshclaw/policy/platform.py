"""The platform's own connector calls, decided by Cedar like an agent's tool calls.

Two things call connectors for the platform itself, outside any run: the notifier
(``notify.deliver``: approval requests, soft-cap alerts, feedback requests, through the
org's chat or mail tool) and the chat and mail trigger pollers (``triggers.inbound``:
reading a channel or a folder for new messages). Each call is asked here first, with a
``Platform`` principal of the org the call is for:

- ``Platform::"notifier"`` may write with the messaging tools (``NOTIFIER_TOOLS``) only,
  and mail only to addresses inside the org: every value of ``to``, ``cc`` and ``bcc``
  must be at a domain a person of the org has an address at, or be the message's own
  recipient (an outcome's beneficiary outside the org, asked for feedback);
- ``Platform::"trigger-poller"`` may read with the tools a poll stands in for
  (``POLLER_TOOLS``: a folder's new mail, a channel's new messages), any channel or
  folder (the agent's own read grant is checked before, ``triggers._inbound``).

That scope is compiled per org to Cedar permits with the helpers that compile agent
specs (``policy.compiler``), and decided with the same machinery as an agent's call
(``CedarAuthorizer``): the call (``tool.read`` / ``tool.write``) and each argument value
and target (``tool.argument``) in one engine call, the same policy sets (built-ins, the
operator's, the org's own: an org policy may forbid more, or permit more), deny by
default, forbid beats permit, fail closed.

Why not the gateway itself: the gateway's path is a run's (a budget reserved against the
run's agent, user and team, a run step persisted, usage metered to the agent and run,
approvals that pause the run). These calls have no run, no agent and no spec to charge,
persist or pause, so only the decision is shared, and the caller records a refusal where
its own records are (a notification's ``last_error`` and ``notification.denied``; a
trigger's problem and ``trigger.refused``), with ``decision_details`` in the audit record.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import cedarpy

from meshclaw.policy._source import split_statements
from meshclaw.policy.arguments import flatten_arguments, summarize_arguments
from meshclaw.policy.authorizer import Decision
from meshclaw.policy.cedar import (
    MAX_ARGUMENT_VALUES,
    CedarAuthorizer,
    Check,
    Explanation,
    LoadedPolicies,
    _Compiled,
    _ref,
    _uid,
    entity,
)
from meshclaw.policy.compiler import _policy, cedar_string, like_pattern

log = logging.getLogger(__name__)

PlatformName = Literal["notifier", "trigger-poller"]
NOTIFIER: PlatformName = "notifier"
POLLER: PlatformName = "trigger-poller"

NOTIFIER_TOOLS = frozenset({"chat.post_message", "mail.send"})
"""The tools the notifier may send with (under their default connector names)."""
ADDRESS_ARGUMENTS = ("to", "cc", "bcc")
"""The notifier's arguments whose values are mail addresses, held inside the org."""
POLLER_TOOLS = frozenset({"list_messages", "read_channel"})
"""The read tools (of any connector) a trigger poll stands in for: a folder's new mail,
a channel's new messages."""


@dataclass(frozen=True, kw_only=True)
class PlatformCall:
    """One connector call the platform makes for itself, for one org."""

    org_id: str
    principal: PlatformName
    tool: str
    """``connector.tool``."""
    kind: Literal["read", "write"]
    arguments: dict[str, Any] = field(default_factory=dict)
    targets: tuple[str, ...] = ()
    """``kind:value`` of what the call touches (``chat:#help``, ``folder:INBOX``)."""
    trigger: str = ""
    """What the call is for: ``notification``, ``chat``, ``mail`` (``context.trigger``)."""
    org_domains: tuple[str, ...] = ()
    """Notifier: the mail domains of the org's people (lower case)."""
    own_recipients: tuple[str, ...] = ()
    """Notifier: outside addresses the message itself is for (``external:`` recipients)."""

    @property
    def action(self) -> str:
        return f"tool.{self.kind}"


def decision_details(call: PlatformCall, decision: Decision) -> dict[str, Any]:
    """What an audit record keeps of a platform call's decision (no argument values)."""
    verdict = "allow" if decision.allowed else "deny"
    return {
        "principal": f'Platform::"{call.principal}"',
        "action": call.action,
        "tool": call.tool,
        "decision": verdict,
        "reason": decision.reason[:1000],
        "policies": list(decision.policies),
    }


def compile_scope(call: PlatformCall) -> str:
    """The Cedar permits of the platform principal's scope for ``call``'s org."""
    principal = f"principal == {_uid_text('Platform', call.principal)}"
    if call.principal == NOTIFIER:
        tools = " || ".join(f"resource == {_uid_text('Tool', t)}" for t in sorted(NOTIFIER_TOOLS))
        addresses = "[" + ", ".join(cedar_string(a) for a in ADDRESS_ARGUMENTS) + "]"
        nested = " || ".join(
            f"context.name like {like_pattern(a + '.*')}" for a in ADDRESS_ARGUMENTS
        )
        is_address = f"({addresses}.contains(context.name) || {nested})"
        out = [
            _policy("platform.notifier.send", principal, "tool.write", "resource", f"({tools})"),
            _policy(
                "platform.notifier.arguments", principal, "tool.argument", "resource",
                f"({tools})", 'context.kind == "argument"', f"!{is_address}",
            ),
        ]  # fmt: skip
        inside = [f"*@{d}" for d in call.org_domains if d and "*" not in d]
        if inside:
            matches = " || ".join(f"context.value like {like_pattern(g)}" for g in inside)
            out.append(
                _policy(
                    "platform.notifier.recipients-inside-org", principal, "tool.argument",
                    "resource", f"({tools})", 'context.kind == "argument"', is_address,
                    f"({matches})",
                )
            )  # fmt: skip
        if call.own_recipients:
            own = "[" + ", ".join(cedar_string(a) for a in sorted(call.own_recipients)) + "]"
            out.append(
                _policy(
                    "platform.notifier.own-recipient", principal, "tool.argument", "resource",
                    f"({tools})", 'context.kind == "argument"', is_address,
                    f"{own}.contains(context.value)",
                )
            )  # fmt: skip
        return "\n\n".join(out) + "\n"
    names = "[" + ", ".join(cedar_string(t) for t in sorted(POLLER_TOOLS)) + "]"
    reads = f"{names}.contains(resource.name)"
    return (
        "\n\n".join(
            [
                _policy("platform.trigger-poller.read", principal, "tool.read", "resource", reads),
                _policy(
                    "platform.trigger-poller.arguments",
                    principal,
                    "tool.argument",
                    "resource",
                    reads,
                ),
            ]
        )
        + "\n"
    )


def _uid_text(kind: str, ident: str) -> str:
    return f"{kind}::{cedar_string(ident)}"


class PlatformAuthorizer(CedarAuthorizer):
    """Decides ``PlatformCall``s with the policy store the gateway and the API use."""

    def decide(self, call: PlatformCall) -> Explanation:
        """The decision and the checks behind it; never raises (an error is a deny)."""
        try:
            return self._decide(call)
        except Exception as exc:  # fail closed: no answer is a deny
            log.exception("policy engine error (platform call)")
            reason = f"policy engine error: {type(exc).__name__}: {exc}"
            return Explanation(decision=Decision(allowed=False, reason=reason))

    def _decide(self, call: PlatformCall) -> Explanation:
        loaded = self.store.for_org(call.org_id)
        compiled = self._scope(loaded, call)
        pairs = flatten_arguments(call.arguments)
        if len(pairs) > MAX_ARGUMENT_VALUES:
            reason = f"{len(pairs)} argument values; at most {MAX_ARGUMENT_VALUES} are checked"
            return Explanation(decision=Decision(allowed=False, reason=reason))
        base = {"run_id": "", "trigger": call.trigger, "untrusted_content_seen": False}
        arg = base | {"approved": False}
        targets = sorted(set(call.targets))
        items: list[tuple[str, dict[str, Any]]] = [
            (
                call.action,
                arg
                | {"arguments_summary": summarize_arguments(call.arguments), "targets": targets},
            )
        ]
        items += [("tool.argument", arg | {"kind": "argument", "name": n, "value": v})
                  for n, v in pairs]  # fmt: skip
        items += [("tool.argument", arg | {"kind": "target", "name": "", "value": t})
                  for t in targets]  # fmt: skip
        checks = self._evaluate(
            compiled,
            self._platform_entities(call),
            _uid("Platform", call.principal),
            _uid("Tool", call.tool),
            items,
        )
        explained = self._conclude(compiled, checks)
        denied = next((c for c in checks if not c.allowed), None)
        if denied is None:
            return explained
        # The engine's reason names an argument's value; a refusal is kept and shown to
        # admins, so it names the argument only (a target, a channel or folder, is kept).
        decision = Decision(
            allowed=False, reason=_reason(denied), policies=explained.decision.policies
        )
        return Explanation(
            decision=decision, checks=explained.checks, policy_texts=explained.policy_texts
        )

    def _scope(self, loaded: LoadedPolicies, call: PlatformCall) -> _Compiled:
        text = compile_scope(call)
        key = (loaded.key, f"platform:{call.principal}", text)
        return self._compiled.get(key, lambda: self._with_scope(loaded, text))

    @staticmethod
    def _with_scope(loaded: LoadedPolicies, text: str) -> _Compiled:
        texts = {s.label: s.text for s in loaded.statements}
        texts |= {s.label: s.text for s in split_statements(text)}
        return _Compiled(handle=loaded.handle.with_added_str(text), texts=texts)

    def _platform_entities(self, call: PlatformCall) -> cedarpy.Entities:
        key = ("platform", call.org_id, call.principal, call.tool, call.kind)
        return self._entities.get(key, lambda: self._build_platform(call))

    def _build_platform(self, call: PlatformCall) -> cedarpy.Entities:
        org = _ref("Org", call.org_id)
        connector, _, name = call.tool.partition(".")
        out = [
            entity("Org", call.org_id, {}),
            entity("Platform", call.principal, {"org": org, "name": call.principal}),
            entity("Connector", connector, {"org": org}),
            entity(
                "Tool",
                call.tool,
                {"org": org, "connector": connector, "name": name, "kind": call.kind},
                [("Connector", connector)],
            ),
        ]
        return self._roles.with_added_json_str(json.dumps(out))


def _reason(denied: Check) -> str:
    subject = f"{denied.action} {denied.resource}"
    if denied.action == "tool.argument":
        if denied.context.get("kind") == "argument":
            subject += f" argument {denied.context.get('name')}"
        else:
            subject += f" target {denied.context.get('value')!r}"
    if denied.errors:
        return f"{subject}: policy engine error: {'; '.join(denied.errors)}"
    if denied.policies:
        return f"{subject}: forbidden by {', '.join(denied.policies)}"
    return f"{subject}: no policy permits it (deny by default)"
