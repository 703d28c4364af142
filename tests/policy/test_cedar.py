"""The Cedar authoriser on its own: compiled scopes, provenance, approvals, failing closed."""

from __future__ import annotations

from typing import Any

import cedarpy
import pytest

from meshclaw.errors import PolicyError
from meshclaw.policy.authorizer import AuthzRequest, Decision, Principal
from meshclaw.policy.cedar import MAX_ARGUMENT_VALUES, CedarAuthorizer, PolicyStore
from meshclaw.policy.compiler import compile_spec
from meshclaw.spec.loader import parse_spec
from meshclaw.spec.models import AgentSpec

SPEC = """\
name: mailer
owner: alice
model: {provider: scripted, model: m1}
instructions: Mail people.
tools:
  - {name: mail.*, scope: read}
  - name: mail.send
    scope: write
    arguments: {to: ["*@acme.example"], cc: ["*@acme.example"]}
  - {name: tickets.*, scope: write, targets: ["ticket:OPS-*"]}
  - {name: deploy.rollout, scope: write, arguments: {env: [staging]}}
  - {name: notes.write, scope: read}
"""

ALICE_AGENT = Principal(org_id="org_a", user_id="usr_alice", agent_id="agt_1", team_id="team_1")


@pytest.fixture(scope="module")
def spec() -> AgentSpec:
    return parse_spec(SPEC)


@pytest.fixture(scope="module")
def cedar() -> CedarAuthorizer:
    return CedarAuthorizer()


def ask(
    authz: CedarAuthorizer,
    spec: AgentSpec,
    action: str,
    resource: str,
    principal: Principal = ALICE_AGENT,
    **context: Any,
) -> Decision:
    return authz.authorize(
        AuthzRequest(
            principal=principal,
            action=action,  # type: ignore[arg-type]
            resource=resource,
            spec=spec,
            context={"run_id": "run_1", "trigger": "manual"} | context,
        )
    )


def test_only_the_declared_model_may_be_invoked(cedar: CedarAuthorizer, spec: AgentSpec) -> None:
    allowed = ask(cedar, spec, "model.invoke", "model:scripted/m1")
    assert allowed.allowed and allowed.policies == ("spec.model scripted/m1",)
    other = ask(cedar, spec, "model.invoke", "model:scripted/expensive")
    assert not other.allowed and not other.needs_approval
    assert "deny by default" in other.reason


def test_deny_by_default_for_tools_outside_the_spec(
    cedar: CedarAuthorizer, spec: AgentSpec
) -> None:
    decision = ask(cedar, spec, "tool.read", "tool:calendar.list")
    assert not decision.allowed
    assert (
        decision.reason == "tool.read Tool::calendar.list: no policy permits it (deny by default)"
    )


def test_read_grant_does_not_allow_writes(cedar: CedarAuthorizer, spec: AgentSpec) -> None:
    assert ask(cedar, spec, "tool.read", "tool:mail.read").allowed
    assert not ask(cedar, spec, "tool.write", "tool:mail.delete").allowed
    assert not ask(cedar, spec, "tool.write", "tool:notes.write", arguments={}).allowed


def test_exact_grant_wins_over_the_connector_wildcard(
    cedar: CedarAuthorizer, spec: AgentSpec
) -> None:
    # mail.* (no argument constraints) must not reopen what mail.send constrains.
    decision = ask(
        cedar, spec, "tool.write", "tool:mail.send", arguments={"to": "eve@evil.example"}
    )
    assert not decision.allowed
    assert "argument to='eve@evil.example'" in decision.reason


def test_every_recipient_must_match_the_argument_constraint(
    cedar: CedarAuthorizer, spec: AgentSpec
) -> None:
    inside = {"to": ["bob@acme.example", "carol@acme.example"], "body": "hi"}
    ok = ask(cedar, spec, "tool.write", "tool:mail.send", arguments=inside)
    assert ok.allowed, ok.reason
    assert ok.policies == ("spec.grant mail.send write",)
    mixed = {"to": ["bob@acme.example"], "cc": ["bob@acme.example", "x@evil.example"]}
    refused = ask(cedar, spec, "tool.write", "tool:mail.send", arguments=mixed)
    assert not refused.allowed
    assert "argument cc='x@evil.example'" in refused.reason
    # A look-alike domain does not match the glob.
    lookalike = {"to": "bob@acme.example.evil.example"}
    assert not ask(cedar, spec, "tool.write", "tool:mail.send", arguments=lookalike).allowed


def test_exact_value_constraint_and_nested_arguments(
    cedar: CedarAuthorizer, spec: AgentSpec
) -> None:
    assert ask(
        cedar, spec, "tool.write", "tool:deploy.rollout", arguments={"env": "staging"}
    ).allowed
    prod = ask(cedar, spec, "tool.write", "tool:deploy.rollout", arguments={"env": "production"})
    assert not prod.allowed and "env='production'" in prod.reason
    # No value at all is not a constraint violation; a list smuggling prod is.
    smuggled = {"env": ["staging", "production"]}
    assert not ask(cedar, spec, "tool.write", "tool:deploy.rollout", arguments=smuggled).allowed


def test_every_target_must_match_the_grant(cedar: CedarAuthorizer, spec: AgentSpec) -> None:
    ok = ask(cedar, spec, "tool.write", "tool:tickets.update", targets=["ticket:OPS-12"])
    assert ok.allowed, ok.reason
    other = ask(cedar, spec, "tool.write", "tool:tickets.update", targets=["ticket:SEC-1"])
    assert not other.allowed and "target 'ticket:SEC-1'" in other.reason
    both = ["ticket:OPS-12", "ticket:SEC-1"]
    assert not ask(cedar, spec, "tool.write", "tool:tickets.update", targets=both).allowed
    # A tool that names no target is limited by name, scope and arguments only.
    assert ask(cedar, spec, "tool.write", "tool:tickets.comment").allowed
    # Reads without a target are fine: they touch nothing the grant restricts.
    assert ask(cedar, spec, "tool.read", "tool:tickets.search").allowed


def test_write_after_untrusted_content_needs_approval(
    cedar: CedarAuthorizer, spec: AgentSpec
) -> None:
    args = {"to": "bob@acme.example"}
    held = ask(
        cedar, spec, "tool.write", "tool:mail.send", arguments=args, untrusted_content_seen=True
    )
    assert not held.allowed and held.needs_approval
    assert held.policies == ("approval.write-after-untrusted",)
    assert str(held).startswith("needs approval")
    approved = ask(
        cedar,
        spec,
        "tool.write",
        "tool:mail.send",
        arguments=args,
        untrusted_content_seen=True,
        approved=True,
    )
    assert approved.allowed
    # Reads stay allowed after untrusted content.
    assert ask(cedar, spec, "tool.read", "tool:mail.read", untrusted_content_seen=True).allowed


def test_an_approval_cannot_rescue_a_call_outside_the_scope(
    cedar: CedarAuthorizer, spec: AgentSpec
) -> None:
    # The hijacked-model case: a write to an outside recipient after untrusted mail
    # is denied outright, not offered for approval.
    args = {"to": "attacker@evil.example"}
    decision = ask(
        cedar, spec, "tool.write", "tool:mail.send", arguments=args, untrusted_content_seen=True
    )
    assert not decision.allowed and not decision.needs_approval


def test_forbid_beats_permit_in_org_policies(spec: AgentSpec) -> None:
    store = PolicyStore(
        '@id("org.no-deploys-on-cron")\n'
        'forbid (principal, action == Action::"tool.write", resource in Connector::"deploy")\n'
        'when { context.trigger == "cron" };\n'
    )
    authz = CedarAuthorizer(store)
    args = {"env": "staging"}
    assert ask(authz, spec, "tool.write", "tool:deploy.rollout", arguments=args).allowed
    cron = ask(authz, spec, "tool.write", "tool:deploy.rollout", arguments=args, trigger="cron")
    assert not cron.allowed and cron.policies == ("org.no-deploys-on-cron",)
    assert "forbidden by org.no-deploys-on-cron" in cron.reason


def test_org_argument_rules_see_every_argument(spec: AgentSpec) -> None:
    store = PolicyStore(
        '@id("org.no-secrets-in-mail")\n'
        'forbid (principal, action == Action::"tool.argument", resource)\n'
        'when { context.kind == "argument" && context.value like "*password*" };\n'
    )
    authz = CedarAuthorizer(store)
    args = {"to": "bob@acme.example", "body": "the password is hunter2"}
    decision = ask(authz, spec, "tool.write", "tool:mail.send", arguments=args)
    assert not decision.allowed and decision.policies == ("org.no-secrets-in-mail",)


def test_invalid_policy_is_rejected_with_location_and_the_old_set_stays(
    spec: AgentSpec,
) -> None:
    store = PolicyStore()
    authz = CedarAuthorizer(store)
    before = store.current.generation
    bad = (
        '@id("org.ok")\nforbid (principal, action, resource) when { false };\n\n'
        '@id("org.typo")\n'
        'forbid (principal, action == Action::"tool.write", resource)\n'
        "when { context.untrusted };\n"
    )
    with pytest.raises(PolicyError) as exc:
        store.load(bad, source="org.cedar")
    (issue,) = exc.value.issues
    assert issue.policy == "org.typo" and issue.line == 4
    assert "untrusted" in issue.message
    assert "org.cedar" in str(exc.value) and "line 4: org.typo" in str(exc.value)
    assert store.current.generation == before
    assert ask(authz, spec, "tool.read", "tool:mail.read").allowed


def test_parse_errors_name_the_policy_and_line() -> None:
    store = PolicyStore()
    text = (
        "permit (principal, action, resource);\n\n"
        '@id("broken")\npermit (principal, actoin, resource);\n'
    )
    issues = store.validate(text)
    assert [(i.policy, i.line) for i in issues] == [("broken", 3)]
    assert "actoin" in issues[0].message
    with pytest.raises(PolicyError):
        PolicyStore(text)


def test_a_valid_load_takes_effect(spec: AgentSpec) -> None:
    store = PolicyStore()
    authz = CedarAuthorizer(store)
    assert ask(authz, spec, "tool.read", "tool:mail.read").allowed
    store.load('@id("org.no-mail")\nforbid (principal, action, resource in Connector::"mail");\n')
    assert not ask(authz, spec, "tool.read", "tool:mail.read").allowed


def test_engine_errors_at_decision_time_fail_closed(spec: AgentSpec) -> None:
    # The owner entity is not in the request, so this forbid errors when evaluated.
    # Cedar alone would skip it and allow; MeshClaw denies.
    store = PolicyStore(
        '@id("org.owner-role")\n'
        'forbid (principal is Agent, action == Action::"tool.read", resource)\n'
        'when { principal.owner.role == "contractor" };\n'
    )
    decision = ask(CedarAuthorizer(store), spec, "tool.read", "tool:mail.read")
    assert not decision.allowed
    assert decision.reason.startswith("policy engine error")


def test_exceptions_in_the_engine_fail_closed(
    spec: AgentSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    authz = CedarAuthorizer()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("engine on fire")

    monkeypatch.setattr(cedarpy, "is_authorized_batch", broken)
    decision = ask(authz, spec, "model.invoke", "model:scripted/m1")
    assert not decision.allowed
    assert "engine on fire" in decision.reason


def test_too_many_argument_values_are_refused(cedar: CedarAuthorizer, spec: AgentSpec) -> None:
    args = {"to": [f"u{i}@acme.example" for i in range(MAX_ARGUMENT_VALUES + 1)]}
    decision = ask(cedar, spec, "tool.write", "tool:mail.send", arguments=args)
    assert not decision.allowed and "at most" in decision.reason


def test_non_object_arguments_are_refused(cedar: CedarAuthorizer, spec: AgentSpec) -> None:
    decision = ask(cedar, spec, "tool.write", "tool:mail.send", arguments=["x"])
    assert not decision.allowed


def test_scopes_are_per_agent(cedar: CedarAuthorizer, spec: AgentSpec) -> None:
    other = Principal(org_id="org_a", user_id="usr_bob", agent_id="agt_2")
    narrow = parse_spec(SPEC.split("tools:")[0] + "tools: []\n")
    assert ask(cedar, spec, "tool.read", "tool:mail.read").allowed
    assert not ask(cedar, narrow, "tool.read", "tool:mail.read", principal=other).allowed
    assert ask(cedar, spec, "tool.read", "tool:mail.read").allowed


def test_explain_lists_every_check_and_the_deciding_policy_text(
    cedar: CedarAuthorizer, spec: AgentSpec
) -> None:
    explanation = cedar.explain(
        AuthzRequest(
            principal=ALICE_AGENT,
            action="tool.write",
            resource="tool:mail.send",
            spec=spec,
            context={"run_id": "r", "trigger": "manual", "arguments": {"to": ["a@acme.example"]}},
        )
    )
    assert [c.describe() for c in explanation.checks] == [
        "allow tool.write Tool::mail.send",
        "allow tool.argument Tool::mail.send argument to='a@acme.example'",
    ]
    text = explanation.policy_texts["spec.grant mail.send argument to"]
    assert 'context.value like "*@acme.example"' in text


def test_globs_with_quotes_and_backslashes_match_literally() -> None:
    spec = parse_spec(
        SPEC.split("tools:")[0]
        + "tools:\n  - name: files.write\n    scope: write\n    arguments: {path: ['a\"b\\*']}\n"
    )
    text = compile_spec("agt_9", spec)
    assert cedarpy.PolicySet.from_str(text)  # escaping produced valid Cedar
    authz = CedarAuthorizer()
    p = Principal(org_id="o", user_id="u", agent_id="agt_9")
    assert ask(
        authz, spec, "tool.write", "tool:files.write", p, arguments={"path": 'a"b\\x'}
    ).allowed
    assert not ask(
        authz, spec, "tool.write", "tool:files.write", p, arguments={"path": "ab"}
    ).allowed


def test_the_documented_external_mail_gate(spec: AgentSpec) -> None:
    # The example in docs/policy.md: outside recipients need a person's approval.
    open_spec = parse_spec(
        SPEC.replace('arguments: {to: ["*@acme.example"], cc: ["*@acme.example"]}', "arguments: {}")
    )
    store = PolicyStore(
        '@id("approval.external-mail")\n'
        'forbid (principal is Agent, action == Action::"tool.argument",\n'
        '  resource == Tool::"mail.send")\n'
        'when { context.name == "to" && !(context.value like "*@acme.example")\n'
        "  && !context.approved };\n"
    )
    authz = CedarAuthorizer(store)
    inside = ask(
        authz, open_spec, "tool.write", "tool:mail.send", arguments={"to": "b@acme.example"}
    )
    assert inside.allowed
    outside = ask(authz, open_spec, "tool.write", "tool:mail.send", arguments={"to": "x@y.example"})
    assert outside.needs_approval and outside.policies == ("approval.external-mail",)
    approved = ask(
        authz,
        open_spec,
        "tool.write",
        "tool:mail.send",
        arguments={"to": "x@y.example"},
        approved=True,
    )
    assert approved.allowed


def test_org_policies_may_not_impersonate_built_in_or_compiled_ids() -> None:
    store = PolicyStore()
    text = (
        '@id("tenant.isolation")\npermit (principal, action, resource);\n'
        '@id("spec.grant mail.* read")\npermit (principal, action, resource);\n'
    )
    assert [(i.policy, i.line) for i in store.validate(text)] == [
        ("tenant.isolation", 1),
        ("spec.grant mail.* read", 3),
    ]


def test_argument_constraints_in_the_spec_are_validated_and_optional() -> None:
    from meshclaw.errors import SpecError
    from meshclaw.spec.loader import dump_spec

    head = SPEC.split("tools:")[0]
    with pytest.raises(SpecError) as exc:
        parse_spec(
            head + "tools:\n  - name: mail.send\n    scope: write\n"
            "    arguments: {'bad name': ['x'], to: []}\n"
        )
    text = str(exc.value)
    assert "tools[0].arguments" in text and "bad name" in text
    # A spec without constraints dumps exactly as before the field existed.
    plain = parse_spec(head + "tools:\n  - {name: mail.read, scope: read}\n")
    assert "arguments" not in dump_spec(plain)
    constrained = parse_spec(
        head
        + "tools:\n  - name: mail.send\n    scope: write\n    arguments: {to: ['*@a.example']}\n"
    )
    assert "arguments:" in dump_spec(constrained)
    assert parse_spec(dump_spec(constrained)) == constrained
