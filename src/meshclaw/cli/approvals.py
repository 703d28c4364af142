"""``meshclaw approval ...``: see held tool calls with their exact arguments; approve or deny.

Approving the last pending call of a run queues it again; a running server's worker
continues it, or ``--resume`` continues it here and follows it to its end.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
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
from meshclaw.cli._output import console, print_json, to_jsonable

if TYPE_CHECKING:
    from meshclaw.platform import Platform
    from meshclaw.policy.approvals import ApprovalInfo

approval_app = typer.Typer(
    help="Tool calls held for a person's approval: list, show, approve, deny.",
    no_args_is_help=True,
)
app.add_typer(approval_app, name="approval")

NoteOption = typer.Option(None, "--note", help="Why; recorded with the decision.")
ResumeOption = typer.Option(
    False, "--resume", help="Continue the run here once nothing else is pending."
)


def _print(info: ApprovalInfo) -> None:
    console.print(f"[bold]{info.id}[/bold]  {info.status}  run {info.run_id}")
    console.print(f"  {escape(info.action)} [bold]{escape(info.tool)}[/bold]")
    args = json.dumps(info.arguments, indent=2, ensure_ascii=False, sort_keys=True)
    for line in args.splitlines():
        console.print(f"    {escape(line)}", highlight=False, soft_wrap=True)
    console.print(f"  held because: {escape(info.reason)}", soft_wrap=True)
    console.print(f"  expires: {info.expires_at.isoformat()}")
    if info.decided_by:
        note = f" ({escape(info.note)})" if info.note else ""
        when = info.decided_at.isoformat() if info.decided_at else ""
        console.print(f"  decided by {info.decided_by} at {when}{note}")


@approval_app.command("list")
@handle_errors
def list_pending(
    limit: int = typer.Option(100, "--limit", min=1, max=500),
    offset: int = typer.Option(0, "--offset", min=0, help="Skip this many (oldest first)."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Pending approvals you may decide, oldest first."""
    with open_platform() as platform:
        pending = platform.approvals.pending(
            resolve_caller(platform, token), limit=limit, offset=offset
        )
    if json_output:
        print_json(to_jsonable(pending))
        return
    if not pending:
        console.print("nothing waits for your approval")
        return
    table = Table("id", "run", "tool", "arguments", "expires")
    for a in pending:
        args = json.dumps(a.arguments, ensure_ascii=False, sort_keys=True)
        table.add_row(a.id, a.run_id, a.tool, escape(args), a.expires_at.isoformat())
    console.print(table)


@approval_app.command("show")
@handle_errors
def show(approval_id: str, token: str | None = TokenOption, json_output: bool = JsonOption) -> None:
    """One approval: the exact action and arguments, why it was held, who decided."""
    with open_platform() as platform:
        info = platform.approvals.get(resolve_caller(platform, token), approval_id)
    if json_output:
        print_json(to_jsonable(info))
    else:
        _print(info)


def _decide(
    approval_id: str,
    approve: bool,
    note: str | None,
    token: str | None,
    resume: bool,
    json_output: bool,
) -> None:
    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        info = platform.approvals.decide(caller, approval_id, approve=approve, note=note)
        status = None
        if resume and platform.runs.claim(info.run_id):
            asyncio.run(_execute(platform, info.run_id))
            status = platform.runs.get(caller, info.run_id).status
        elif platform.runs.get(caller, info.run_id).status == "queued":
            from meshclaw.workers.dispatch import broker_dispatcher

            broker = broker_dispatcher(platform)  # scale-out workers; else the server polls
            if broker is not None:
                broker.dispatch(info.run_id)
    if json_output:
        print_json(to_jsonable(info) | ({"run_status": status} if status else {}))
    else:
        _print(info)
        if status:
            console.print(f"run {info.run_id}: {status}")
    if status is not None and status not in ("succeeded", "waiting_approval"):
        raise typer.Exit(EXIT_FAILED)


async def _execute(platform: Platform, run_id: str) -> None:
    gateway = platform.build_gateway()
    try:
        await platform.executor(gateway).execute(run_id)
    finally:
        await gateway.aclose()


@approval_app.command("approve")
@handle_errors
def approve(
    approval_id: str,
    note: str | None = NoteOption,
    resume: bool = ResumeOption,
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Let exactly this call through, once."""
    _decide(approval_id, True, note, token, resume, json_output)


@approval_app.command("deny")
@handle_errors
def deny(
    approval_id: str,
    note: str | None = NoteOption,
    resume: bool = ResumeOption,
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Refuse the call; the run goes on and the model is told who refused it and why."""
    _decide(approval_id, False, note, token, resume, json_output)
