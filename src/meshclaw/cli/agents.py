"""``meshclaw agent ...``: validate, create, list, show, versions, diff."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
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
from meshclaw.errors import SpecError

if TYPE_CHECKING:
    from meshclaw.spec.registry import AgentInfo

agent_app = typer.Typer(
    help="Agent specs: validate, create, inspect versions.", no_args_is_help=True
)
app.add_typer(agent_app, name="agent")


def _summary(agent: AgentInfo) -> dict[str, object]:
    return {
        "id": agent.id,
        "name": agent.name,
        "owner": agent.owner_handle,
        "team_id": agent.team_id,
        "version": agent.version,
        "model": f"{agent.spec.model.provider}/{agent.spec.model.model}",
        "tools": [t.name for t in agent.spec.tools],
        "outcomes": [o.type for o in agent.spec.outcomes],
        "created_at": agent.created_at,
        "archived_at": agent.archived_at,
    }


@agent_app.command("validate")
@handle_errors
def validate(file: Path, json_output: bool = JsonOption) -> None:
    """Check a spec file; every problem is reported with its field path and line."""
    from meshclaw.spec.loader import load_spec

    try:
        spec = load_spec(file)
    except SpecError as exc:
        if json_output:
            print_json({"valid": False, "errors": [vars(i) for i in exc.issues]})
            raise typer.Exit(2) from None
        raise
    if json_output:
        print_json({"valid": True, "name": spec.name})
    else:
        console.print(f"[green]valid[/green]: {file} (agent {spec.name!r})")


@agent_app.command("create")
@handle_errors
def create(file: Path, token: str | None = TokenOption, json_output: bool = JsonOption) -> None:
    """Create an agent from a spec file, or add a new version if it exists and changed."""
    from meshclaw.spec.loader import load_spec

    spec = load_spec(file)
    with open_platform() as platform:
        agent, changed = platform.agents.save(resolve_caller(platform, token), spec)
    if json_output:
        print_json(_summary(agent) | {"changed": changed})
    elif changed:
        console.print(f"saved [bold]{agent.name}[/bold] version {agent.version}")
    else:
        console.print(f"[bold]{agent.name}[/bold] unchanged (version {agent.version})")


@agent_app.command("list")
@handle_errors
def list_agents(
    include_archived: bool = typer.Option(False, "--all", help="Archived agents too."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Agents in your org (archived ones with --all)."""
    with open_platform() as platform:
        agents = platform.agents.list_agents(
            resolve_caller(platform, token), include_archived=include_archived
        )
    if json_output:
        print_json([_summary(a) for a in agents])
        return
    table = Table("name", "owner", "version", "model", "tools")
    for a in agents:
        table.add_row(
            a.name + (" (archived)" if a.archived_at else ""),
            a.owner_handle,
            str(a.version),
            f"{a.spec.model.provider}/{a.spec.model.model}",
            ", ".join(t.name for t in a.spec.tools),
        )
    console.print(table)


@agent_app.command("archive")
@handle_errors
def archive(name: str, token: str | None = TokenOption, json_output: bool = JsonOption) -> None:
    """Archive an agent: no new runs, its triggers stop; its history stays (restore undoes)."""
    _set_archived(name, True, token, json_output)


@agent_app.command("restore")
@handle_errors
def restore(name: str, token: str | None = TokenOption, json_output: bool = JsonOption) -> None:
    """Restore an archived agent: it runs and its triggers fire again."""
    _set_archived(name, False, token, json_output)


def _set_archived(name: str, archived: bool, token: str | None, json_output: bool) -> None:
    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        registry = platform.agents
        agent = registry.archive(caller, name) if archived else registry.restore(caller, name)
    if json_output:
        print_json(_summary(agent))
    elif archived:
        console.print(f"archived [bold]{agent.name}[/bold] (meshclaw agent restore {agent.name})")
    else:
        console.print(f"restored [bold]{agent.name}[/bold]")


@agent_app.command("show")
@handle_errors
def show(
    name: str,
    version: int | None = typer.Option(None, "--version", "-v", help="A past version."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Show an agent's spec (latest version unless --version)."""
    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        agent = platform.agents.get(caller, name)
        _, row = platform.agents.version(
            caller, agent.id, agent.version if version is None else version
        )
    if json_output:
        print_json(_summary(agent) | {"shown_version": row.version, "spec_yaml": row.spec_yaml})
        return
    console.print(
        f"[bold]{agent.name}[/bold] v{row.version} of {agent.version} (owner {agent.owner_handle})"
    )
    print_code(row.spec_yaml, "yaml")


@agent_app.command("versions")
@handle_errors
def versions(
    name: str,
    limit: int = typer.Option(100, min=1, max=500, help="At most this many."),
    offset: int = typer.Option(0, min=0, help="Skip this many (oldest first)."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """The versions of an agent, oldest first (--offset and --limit page through them)."""
    with open_platform() as platform:
        rows = platform.agents.versions(
            resolve_caller(platform, token), name, limit=limit, offset=offset
        )
    if json_output:
        print_json([{k: v for k, v in vars(r).items() if k != "spec_yaml"} for r in rows])
        return
    table = Table("version", "created", "by", "hash")
    for r in rows:
        table.add_row(
            str(r.version),
            r.created_at.isoformat(timespec="seconds"),
            r.created_by,
            r.spec_hash[:12],
        )
    console.print(table)


@agent_app.command("diff")
@handle_errors
def diff(
    name: str,
    old: int,
    new: int,
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Unified diff between two versions of an agent."""
    with open_platform() as platform:
        text = platform.agents.diff(resolve_caller(platform, token), name, old, new)
    if json_output:
        print_json({"agent": name, "old": old, "new": new, "diff": text})
    else:
        print_code(text or "(no differences)", "diff")
