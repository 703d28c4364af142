"""``meshclaw policy ...``: validate policies, show and save your org's own policies and
their versions, show the schema and an agent's scopes, explain why a call would be
allowed or denied."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from meshclaw.cli._app import (
    JsonOption,
    TokenOption,
    app,
    handle_errors,
    open_platform,
    resolve_caller,
)
from meshclaw.cli._output import console, print_code, print_json
from meshclaw.errors import ConfigError, NotFoundError, PolicyError

if TYPE_CHECKING:
    from meshclaw.connectors.base import ToolDefinition
    from meshclaw.platform import Platform
    from meshclaw.policy.cedar import Explanation

policy_app = typer.Typer(
    help="Cedar policies: your org's own (show, set, versions), validate, explain decisions.",
    no_args_is_help=True,
)
app.add_typer(policy_app, name="policy")


@policy_app.command("validate")
@handle_errors
def validate(file: Path, json_output: bool = JsonOption) -> None:
    """Check a policy file against the schema; every problem with its policy and line."""
    from meshclaw.policy.cedar import PolicyStore, read_policy_file

    issues = PolicyStore().validate(read_policy_file(file))
    if json_output:
        print_json({"valid": not issues, "errors": [vars(i) for i in issues]})
        if issues:
            raise typer.Exit(2)
        return
    if issues:
        raise PolicyError(issues, str(file))
    console.print(f"[green]valid[/green]: {file}")


@policy_app.command("schema")
@handle_errors
def schema(json_output: bool = JsonOption) -> None:
    """Print the Cedar schema policies are validated against."""
    from meshclaw.policy.schema import SCHEMA

    if json_output:
        print_json({"schema": SCHEMA.strip()})
    else:
        print_code(SCHEMA.strip(), "rust")


@policy_app.command("show")
@handle_errors
def show(
    agent: str = typer.Argument(None, help="Show this agent's compiled scopes instead."),
    all_policies: bool = typer.Option(
        False, "--all", help="The whole set in force: built-ins, install-wide, the org's own."
    ),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Your org's own policies and their version; or the whole set in force for your org
    (``--all``); or one agent's compiled scopes."""
    from meshclaw.policy.compiler import compile_spec
    from meshclaw.spec.registry import agent_resource

    version: int | None = None
    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        if agent is not None:
            info = platform.agents.get(caller, agent)
            platform.access.require(caller, "agent.read", agent_resource(info))
            text = compile_spec(info.id, info.spec)
        else:
            current = platform.org_policies.current(caller)  # policy.read
            version = current.version
            text = platform.policies.for_org(caller.org_id).text if all_policies else current.text
    if json_output:
        print_json({"policies": text.strip()} | ({} if version is None else {"version": version}))
        return
    if version is not None and not all_policies:
        console.print(f"[bold]org policies, version {version}[/bold]")
        if not text.strip():
            console.print("(none: only the built-in and install-wide policies apply)")
            return
    print_code(text.strip(), "rust")


@policy_app.command("set")
@handle_errors
def set_policies(
    file: Path,
    note: str = typer.Option("", "--note", help="Why it changes (kept with the version)."),
    expected_version: int = typer.Option(
        None, "--expected-version", help="Refuse if the current version is another one."
    ),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Save FILE as your org's own policies (a new version; platform admins). Invalid
    policies are refused with every problem and its line; the current version stays."""
    from meshclaw.policy.cedar import read_policy_file

    text = read_policy_file(file)
    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        try:
            info, changed = platform.org_policies.save(
                caller, text, expected_version=expected_version, note=note
            )
        except PolicyError as exc:
            raise PolicyError(exc.issues, str(file)) from None
    if json_output:
        print_json({"version": info.version, "changed": changed, "sha256": info.sha256})
    elif changed:
        console.print(f"[green]saved[/green]: org policies version {info.version}")
    else:
        console.print(f"unchanged: version {info.version} already has this text")


@policy_app.command("versions")
@handle_errors
def versions(token: str | None = TokenOption, json_output: bool = JsonOption) -> None:
    """Every version of your org's own policies: who saved it, when and why."""
    with open_platform() as platform:
        listed = platform.org_policies.versions(resolve_caller(platform, token))
    if json_output:
        print_json(
            [
                {
                    "version": v.version,
                    "created_at": v.created_at.isoformat() if v.created_at else None,
                    "created_by": v.created_by,
                    "note": v.note,
                    "sha256": v.sha256,
                }
                for v in listed
            ]
        )
        return
    if not listed:
        console.print("no org policies saved yet (version 0)")
        return
    table = Table("version", "saved", "by", "note")
    for v in listed:
        when = v.created_at.strftime("%Y-%m-%d %H:%M UTC") if v.created_at else ""
        table.add_row(str(v.version), when, escape(v.created_by or ""), escape(v.note))
    console.print(table)


@policy_app.command("diff")
@handle_errors
def diff(
    old: int, new: int, token: str | None = TokenOption, json_output: bool = JsonOption
) -> None:
    """What changed between two versions of your org's policies (0: the empty start)."""
    with open_platform() as platform:
        text = platform.org_policies.diff(resolve_caller(platform, token), old, new)
    if json_output:
        print_json({"old": old, "new": new, "diff": text})
    else:
        print_code(text or "(no difference)", "diff")


def _parse_arguments(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--args is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError('--args must be a JSON object, e.g. \'{"to": "bob@acme.example"}\'')
    return value


def _explanation_json(explanation: Explanation) -> dict[str, Any]:
    decision = explanation.decision
    return {
        "allowed": decision.allowed,
        "needs_approval": decision.needs_approval,
        "reason": decision.reason,
        "policies": list(decision.policies),
        "checks": [
            {
                "action": c.action,
                "resource": c.resource,
                "context": c.context,
                "allowed": c.allowed,
                "policies": list(c.policies),
                "errors": list(c.errors),
            }
            for c in explanation.checks
        ],
        "policy_texts": explanation.policy_texts,
    }


def _print_explanation(explanation: Explanation) -> None:
    decision = explanation.decision
    colour = "green" if decision.allowed else "yellow" if decision.needs_approval else "red"
    console.print(f"[{colour}]{escape(str(decision))}[/{colour}]", soft_wrap=True)
    for check in explanation.checks:
        mark = "[green]✓[/green]" if check.allowed else "[red]✗[/red]"
        by = ", ".join(check.policies) or "no policy applies (deny by default)"
        console.print(f"  {mark} {escape(check.subject())}  ← {escape(by)}", soft_wrap=True)
        for error in check.errors:
            console.print(f"      [red]error:[/red] {escape(error)}", soft_wrap=True)
    for policy_id, text in explanation.policy_texts.items():
        if text:
            console.print(f"\n[bold]{escape(policy_id)}[/bold]")
            print_code(text, "rust")


@policy_app.command("explain")
@handle_errors
def explain(
    agent: str,
    tool: str = typer.Option(None, "--tool", help="A tool call, as connector.tool."),
    model: bool = typer.Option(False, "--model", help="Explain the agent's model call."),
    arguments: str = typer.Option("{}", "--args", help="The call's arguments as JSON."),
    untrusted: bool = typer.Option(
        False, "--untrusted", help="As if untrusted content had entered the run."
    ),
    approved: bool = typer.Option(False, "--approved", help="As if a person approved it."),
    trigger: str = typer.Option("manual", "--trigger", help="The run's trigger."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Why a call by AGENT would be allowed, denied or held for approval, policy by policy."""
    from meshclaw.policy.authorizer import AuthzRequest, Principal
    from meshclaw.spec.registry import agent_resource

    if (tool is None) == (not model):
        raise ConfigError("give exactly one of --tool connector.tool or --model")
    args = _parse_arguments(arguments)
    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        info = platform.agents.get(caller, agent)
        platform.access.require(caller, "agent.read", agent_resource(info))
        context: dict[str, Any] = {
            "run_id": "explain",
            "trigger": trigger,
            "untrusted_content_seen": untrusted,
            "approved": approved,
        }
        if model:
            action, resource = (
                "model.invoke",
                f"model:{info.spec.model.provider}/{info.spec.model.model}",
            )
        else:
            definition = _tool_definition(platform, tool, org_id=info.org_id, user_id=info.owner_id)
            action, resource = f"tool.{definition.action}", f"tool:{tool}"
            context |= definition.policy_context(args)
        explanation = platform.authorizer.explain(
            AuthzRequest(
                principal=Principal(
                    org_id=info.org_id,
                    user_id=info.owner_id,
                    agent_id=info.id,
                    team_id=info.team_id,
                ),
                action=action,  # type: ignore[arg-type]
                resource=resource,
                spec=info.spec,
                context=context,
            )
        )
    if json_output:
        print_json(_explanation_json(explanation))
    else:
        _print_explanation(explanation)
    if not explanation.decision.allowed:
        raise typer.Exit(1)


def _tool_definition(platform: Platform, tool: str, *, org_id: str, user_id: str) -> ToolDefinition:
    """The definition of ``connector.tool`` as the agent's owner sees it.

    A tool the connector hides because an admin has not approved it (or its definition changed
    since) is named as such: "no tool" would send the reader looking for a typo.
    """
    connector, _, name = tool.partition(".")
    connectors = platform.connectors()

    async def list_tools() -> dict[str, ToolDefinition]:
        try:
            return await connectors.tools(connector, org_id=org_id, user_id=user_id)
        finally:
            await connectors.aclose()

    definition = asyncio.run(list_tools()).get(name)
    if definition is not None:
        return definition
    state = next(
        (s for s in platform.connector_admin.approvals(org_id).states(connector) if s.tool == name),
        None,
    )
    if state is not None and state.status == "pending":
        raise NotFoundError(
            f"{tool} is not approved yet, so agents cannot see or call it: an admin must run "
            f"`meshclaw connector approve {connector} --tool {name}`"
        )
    if state is not None and state.status == "changed":
        raise NotFoundError(
            f"{tool} is blocked: its definition changed since it was approved; "
            f"an admin must review it (`meshclaw connector tools {connector}`) and re-approve it"
        )
    known = ", ".join(connectors.names(org_id))
    raise NotFoundError(f"no tool {tool!r} (connectors: {known})")


@policy_app.command("why")
@handle_errors
def why(
    run_id: str,
    step: int,
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Explain a recorded step of a run under the policies active now.

    The step's own arguments, the run's trigger, its provenance at that point (whether an
    earlier tool result was untrusted) and its approval, if one was granted, are used.
    """
    from meshclaw.policy.authorizer import AuthzRequest, Principal
    from meshclaw.spec.loader import parse_stored_spec

    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        run = platform.runs.get(caller, run_id)
        steps = platform.runs.steps(caller, run_id)
        target = next((s for s in steps if s.seq == step), None)
        if target is None:
            raise NotFoundError(f"run {run_id} has no step {step}")
        _, version = platform.agents.version(caller, run.agent_id, run.agent_version)
        spec = parse_stored_spec(version.spec_yaml)
        info = platform.agents.get(caller, run.agent_id)
        untrusted = any(
            (s.response or {}).get("untrusted") for s in steps if s.kind == "tool" and s.seq < step
        )
        context: dict[str, Any] = {
            "run_id": run.id,
            "trigger": run.trigger,
            "untrusted_content_seen": untrusted,
            "approved": platform.approvals.approved_step(run.id, step),
        }
        if target.kind == "model":
            action, resource = "model.invoke", f"model:{spec.model.provider}/{target.name}"
        else:
            definition = _tool_definition(
                platform, target.name, org_id=info.org_id, user_id=info.owner_id
            )
            args = (target.request or {}).get("arguments") or {}
            action, resource = f"tool.{definition.action}", f"tool:{target.name}"
            context |= definition.policy_context(args)
        explanation = platform.authorizer.explain(
            AuthzRequest(
                principal=Principal(
                    org_id=info.org_id,
                    user_id=run.user_id,
                    agent_id=run.agent_id,
                    team_id=info.team_id,
                ),
                action=action,  # type: ignore[arg-type]
                resource=resource,
                spec=spec,
                context=context,
            )
        )
    if json_output:
        print_json(_explanation_json(explanation) | {"recorded": target.decision})
    else:
        console.print(f"recorded: {escape(target.decision or '(no decision recorded)')}")
        console.print("now:", end=" ")
        _print_explanation(explanation)
