"""``policy.platform``: the platform's own connector calls (the notifier's sends, the
trigger pollers' reads) decided by Cedar with a ``Platform`` principal and a scope
compiled per org like an agent spec's grants."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from meshclaw.policy.cedar import MemoryOrgPolicies, PolicyStore
from meshclaw.policy.platform import (
    NOTIFIER,
    POLLER,
    PlatformAuthorizer,
    PlatformCall,
    compile_scope,
    decision_details,
)


def _send(tool: str = "mail.send", **arguments: Any) -> PlatformCall:
    return PlatformCall(
        org_id="org_a", principal=NOTIFIER, tool=tool, kind="write", arguments=arguments,
        trigger="notification", org_domains=("acme.example",),
        own_recipients=("client@customer.example",),
    )  # fmt: skip


@pytest.fixture
def authorizer() -> PlatformAuthorizer:
    return PlatformAuthorizer(PolicyStore())


@pytest.mark.parametrize("principal", [NOTIFIER, POLLER])
def test_the_compiled_scope_is_valid_against_the_schema(principal: Any) -> None:
    call = PlatformCall(
        org_id="o", principal=principal, tool="mail.send", kind="write",
        org_domains=("acme.example", "acme.test"), own_recipients=('we"ird@x.example',),
    )  # fmt: skip
    assert PolicyStore().validate(compile_scope(call)) == []


def test_the_notifier_mails_inside_the_org_and_the_messages_own_recipient(
    authorizer: PlatformAuthorizer,
) -> None:
    inside = _send(to=["bob@acme.example"], cc=["client@customer.example"], body="see x.io/a")
    assert authorizer.decide(inside).decision.allowed
    outside = authorizer.decide(_send(to=["bob@acme.example", "eve@evil.example"]))
    assert not outside.decision.allowed
    assert outside.decision.reason == (
        "tool.argument Tool::mail.send argument to: no policy permits it (deny by default)"
    )
    assert "evil" not in outside.decision.reason  # the argument, never its value
    # The whole domain: not one that only starts with the org's.
    assert not authorizer.decide(_send(to=["eve@acme.example.evil"])).decision.allowed
    assert not authorizer.decide(_send(bcc="spy@acme.example.evil")).decision.allowed
    assert not authorizer.decide(_send(to=["Client@customer.example"])).decision.allowed
    # An address under a nested name is an address too.
    assert not authorizer.decide(_send(to=[{"address": "eve@evil.example"}])).decision.allowed
    assert authorizer.decide(_send(to=[{"address": "bob@acme.example"}])).decision.allowed


def test_the_notifier_sends_with_messaging_tools_only(authorizer: PlatformAuthorizer) -> None:
    assert authorizer.decide(_send("chat.post_message", channel="#ops", text="t")).decision.allowed
    denied = authorizer.decide(_send("deploy.rollout", env="prod")).decision
    assert not denied.allowed and denied.reason == (
        "tool.write Tool::deploy.rollout: no policy permits it (deny by default)"
    )
    reading = PlatformCall(
        org_id="org_a", principal=NOTIFIER, tool="mail.read_message", kind="read"
    )
    assert not authorizer.decide(reading).decision.allowed


def test_the_poller_reads_only(authorizer: PlatformAuthorizer) -> None:
    read = PlatformCall(
        org_id="org_a", principal=POLLER, tool="mail.list_messages", kind="read",
        arguments={"folder": "INBOX"}, targets=("folder:INBOX",), trigger="mail",
    )  # fmt: skip
    assert authorizer.decide(read).decision.allowed
    send = PlatformCall(
        org_id="org_a", principal=POLLER, tool="mail.send", kind="write",
        arguments={"to": ["bob@acme.example"]}, trigger="mail",
    )  # fmt: skip
    assert not authorizer.decide(send).decision.allowed
    other = PlatformCall(org_id="org_a", principal=POLLER, tool="mail.read_message", kind="read")
    assert not authorizer.decide(other).decision.allowed


def test_an_org_policy_decides_for_its_own_org_only() -> None:
    orgs = MemoryOrgPolicies()
    orgs.put(
        "org_a",
        '@id("org.no-chat-alerts")\n'
        'forbid (principal == Platform::"notifier", action == Action::"tool.write",\n'
        '        resource == Tool::"chat.post_message");\n',
    )
    authorizer = PlatformAuthorizer(PolicyStore(orgs=orgs))
    call = _send("chat.post_message", channel="#ops", text="t")
    denied = authorizer.decide(call).decision
    assert not denied.allowed and denied.policies == ("org.no-chat-alerts",)
    other = replace(call, org_id="org_b")
    assert authorizer.decide(other).decision.allowed
    assert decision_details(call, denied) == {
        "principal": 'Platform::"notifier"', "action": "tool.write", "tool": "chat.post_message",
        "decision": "deny", "policies": ["org.no-chat-alerts"],
        "reason": "tool.write Tool::chat.post_message: forbidden by org.no-chat-alerts",
    }  # fmt: skip


def test_an_agent_only_policy_leaves_the_platform_alone(authorizer: PlatformAuthorizer) -> None:
    orgs = MemoryOrgPolicies()
    orgs.put(
        "org_a",
        '@id("org.agents-no-mail")\n'
        'forbid (principal is Agent, action == Action::"tool.write",\n'
        '        resource == Tool::"mail.send");\n',
    )
    assert (
        PlatformAuthorizer(PolicyStore(orgs=orgs))
        .decide(_send(to=["b@acme.example"]))
        .decision.allowed
    )


def test_too_many_argument_values_are_refused(authorizer: PlatformAuthorizer) -> None:
    many = _send(to=[f"p{i}@acme.example" for i in range(300)])
    decision = authorizer.decide(many).decision
    assert not decision.allowed and "at most 256 are checked" in decision.reason


def test_an_org_policy_saved_before_the_platform_principal_fails_closed() -> None:
    """An org's stored policy reading ``principal.owner`` on a tool action without
    ``principal is Agent`` validated when tool actions were the agents' only; now it does
    not, so that org's decisions are refused (agents' and the platform's alike) with the
    validator's message, and the other orgs are untouched (docs/policy.md, upgrading)."""
    from meshclaw.policy.authorizer import AuthzRequest, Principal
    from meshclaw.policy.cedar import CedarAuthorizer
    from meshclaw.spec.loader import parse_spec

    orgs = MemoryOrgPolicies()  # ``put`` stores as the database holds: not validated again
    orgs.put(
        "org_a",
        '@id("org.no-contractor-mail")\n'
        'forbid (principal, action == Action::"tool.write", resource == Tool::"mail.send")\n'
        'when { principal.owner == User::"usr_contractor" };\n',
    )
    store = PolicyStore(orgs=orgs)
    assert "owner" in str(store.validate(orgs.current("org_a").text))  # type: ignore[union-attr]
    spec = parse_spec(
        "name: mailer\nowner: alice\nmodel: {provider: scripted, model: m1}\ninstructions: x\n"
        "tools:\n  - {name: mail.send, scope: write}\n"
    )

    def agent_in(org: str) -> bool:
        who = Principal(org_id=org, user_id="usr_alice", agent_id="agt_1")
        request = AuthzRequest(
            principal=who, action="tool.write", resource="tool:mail.send", spec=spec,
            context={"run_id": "run_1", "trigger": "manual", "arguments": {"to": ["b@x.example"]}},
        )  # fmt: skip
        return CedarAuthorizer(store).authorize(request).allowed

    assert not agent_in("org_a") and agent_in("org_b")
    platform = PlatformAuthorizer(store)
    refused = platform.decide(_send(to=["b@acme.example"])).decision
    assert not refused.allowed and refused.reason.startswith("policy engine error")
    assert platform.decide(replace(_send(to=["b@acme.example"]), org_id="org_b")).decision.allowed
