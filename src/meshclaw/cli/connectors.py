"""``meshclaw connector ...``: add, list, tools, approve, test, remove MCP connectors."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from meshclaw.cli._app import (
    EXIT_FAILED,
    JsonOption,
    TokenOption,
    app,
    handle_errors,
    open_platform,
    resolve_caller,
)
from meshclaw.cli._output import console, errors, print_json
from meshclaw.errors import ConfigError

if TYPE_CHECKING:
    from meshclaw.connectors.approvals import ToolState

connector_app = typer.Typer(
    help="MCP connectors: register servers, review and approve their tools.",
    no_args_is_help=True,
)
app.add_typer(connector_app, name="connector")


def _pairs(values: list[str], what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what} must be KEY=VALUE, got {value!r}")
        pairs[key] = rest
    return pairs


def _tool_row(state: ToolState) -> dict[str, Any]:
    return {
        "tool": f"{state.connector}.{state.tool}",
        "status": state.status,
        "action": "read"
        if (state.definition.get("annotations") or {}).get("readOnlyHint") is True
        else "write",
        "definition_hash": state.definition_hash,
        "approved_hash": state.approved_hash,
        "approved_by": state.approved_by,
        "approved_at": state.approved_at,
        "description": state.definition.get("description") or "",
        "definition": state.definition,
    }


@connector_app.command("add")
@handle_errors
def add(
    name: str,
    transport: str = typer.Option("stdio", help="stdio or http."),
    command: str | None = typer.Option(None, help="Server executable (stdio)."),
    builtin: str | None = typer.Option(
        None, "--builtin", help="A built-in server (mail, calendar, chat, docs, deploy, tickets)."
    ),
    arg: list[str] = typer.Option([], "--arg", help="Argument for the command (repeatable)."),
    env: list[str] = typer.Option([], "--env", help="KEY=VALUE for the server (repeatable)."),
    url: str | None = typer.Option(None, help="Streamable HTTP endpoint (http)."),
    credentials: str | None = typer.Option(None, help="Credential store reference."),
    credential_env: list[str] = typer.Option(
        [], "--credential-env", help="VAR=field: put a credential field in the environment."
    ),
    credential_header: list[str] = typer.Option(
        [], "--credential-header", help="Header=template, e.g. 'Authorization=Bearer {token}'."
    ),
    approval: str = typer.Option("admin", help="admin, or first_use to trust first sight."),
    call_timeout: float = typer.Option(60.0, help="Seconds a tool call may take."),
    max_result_chars: int = typer.Option(20_000, help="Longer results are truncated."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Register an MCP server as connector NAME (platform admins)."""
    if builtin is not None:
        from meshclaw.connectors.servers import SERVERS

        if builtin not in SERVERS:
            raise ConfigError(
                f"no built-in MCP server {builtin!r}; there are: {', '.join(SERVERS)}"
            )
        if command is not None or arg:
            raise ConfigError("--builtin sets the command: leave out --command and --arg")
        command, arg = sys.executable, ["-m", "meshclaw.connectors.servers", builtin]
    config: dict[str, Any] = {
        "transport": transport,
        "command": command,
        "args": arg,
        "env": _pairs(env, "--env"),
        "url": url,
        "credentials": credentials,
        "credential_env": _pairs(credential_env, "--credential-env"),
        "credential_headers": _pairs(credential_header, "--credential-header"),
        "approval": approval,
        "call_timeout_seconds": call_timeout,
        "max_result_chars": max_result_chars,
    }
    with open_platform() as platform:
        info = platform.connector_admin.add(resolve_caller(platform, token), name, config)
    if json_output:
        print_json(info)
    else:
        console.print(f"added connector [bold]{name}[/bold] ({info.transport} {info.target})")
        console.print(f"next: meshclaw connector tools {name}, then approve what you reviewed")


@connector_app.command("list")
@handle_errors
def list_connectors(token: str | None = TokenOption, json_output: bool = JsonOption) -> None:
    """Configured connectors and how many of their tools are approved."""
    with open_platform() as platform:
        infos = platform.connector_admin.list_connectors(resolve_caller(platform, token))
        unplaced = platform.connector_admin.unplaced()
    for name, org in unplaced.items():
        errors.print(f"warning: {_unplaced(name, org)}")
    if json_output:
        print_json(infos)
        return
    table = Table("name", "source", "transport", "target", "approval", "tools")
    for info in infos:
        tools = ", ".join(f"{n} {status}" for status, n in info.tools.items()) or "not listed yet"
        table.add_row(info.name, info.source, info.transport, info.target, info.approval, tools)
    console.print(table)


@connector_app.command("tools")
@handle_errors
def tools(
    name: str,
    refresh: bool = typer.Option(True, help="Ask the server for its tools first."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """A connector's tools with their definition hashes and approval status."""
    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        states = asyncio.run(platform.connector_admin.tools(caller, name, refresh=refresh))
    rows = [_tool_row(s) for s in states]
    if json_output:
        print_json(rows)
        return
    table = Table("tool", "status", "action", "hash", "description")
    colour = {"approved": "green", "pending": "yellow", "changed": "red"}
    for row in rows:
        status = f"[{colour[row['status']]}]{row['status']}[/]"
        description = row["description"][:60]
        table.add_row(row["tool"], status, row["action"], row["definition_hash"][:12], description)
    console.print(table)


@connector_app.command("approve")
@handle_errors
def approve(
    name: str,
    tool: list[str] = typer.Option([], "--tool", help="Tool to approve (repeatable)."),
    all_tools: bool = typer.Option(False, "--all", help="Approve every recorded tool."),
    expected_hash: str | None = typer.Option(
        None, "--hash", help="Approve only if the definition still has this hash."
    ),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Approve the tool definitions last seen (platform admins)."""
    if not tool and not all_tools:
        raise ConfigError("name the tools with --tool, or pass --all")
    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        states = platform.connector_admin.approve(
            caller, name, None if all_tools else tool, expected_hash=expected_hash
        )
    if json_output:
        print_json([_tool_row(s) for s in states])
    else:
        for state in states:
            console.print(f"approved {state.connector}.{state.tool} ({state.definition_hash[:12]})")


@connector_app.command("test")
@handle_errors
def test(name: str, token: str | None = TokenOption, json_output: bool = JsonOption) -> None:
    """Connect to the server and list its tools; exit 1 if that fails."""
    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        report = asyncio.run(platform.connector_admin.test(caller, name))
    if json_output:
        print_json(report)
    elif report.ok:
        server = report.server
        who = f"{server.get('name')} {server.get('version') or ''}".strip()
        console.print(
            f"[green]ok[/green] {name} ({who}, MCP {server.get('protocol')}): "
            f"{report.tools} tools, {report.approved} approved, {report.latency_ms} ms",
            highlight=False,
        )
    else:
        console.print(f"[red]failed[/red] {name}: {report.error}", highlight=False)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


@connector_app.command("remove")
@handle_errors
def remove(name: str, token: str | None = TokenOption) -> None:
    """Remove a connector added with `connector add` (platform admins)."""
    with open_platform() as platform:
        platform.connector_admin.remove(resolve_caller(platform, token), name)
    console.print(f"removed connector {name}")


@connector_app.command("serve")
@handle_errors
def serve(
    name: str,
    http: int | None = typer.Option(None, "--http", help="Serve streamable HTTP on this port."),
    host: str = typer.Option("127.0.0.1", help="Address for --http."),
) -> None:
    """Run a built-in MCP server (e.g. mail) over stdio, or HTTP with --http PORT.

    Settings come from MESHCLAW_<NAME>_* environment variables (docs/connectors.md).
    """
    from meshclaw.connectors.servers import build_server

    server = build_server(name)
    if http is None:
        server.run("stdio")
    else:
        server.run("streamable-http", host=host, port=http)


def _unplaced(name: str, org: str) -> str:
    return f"settings connector {name!r} names org {org!r}, which does not exist: no run uses it"
