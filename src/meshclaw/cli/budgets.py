"""``meshclaw budget``: budgets and rate limits per org, team, user and agent."""

from __future__ import annotations

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
from meshclaw.cli._output import console, print_json

budget_app = typer.Typer(help="Budgets and rate limits.", no_args_is_help=True)
app.add_typer(budget_app, name="budget")


@budget_app.command("set")
@handle_errors
def set_budget(
    scope: str = typer.Argument(..., help="org, team, user or agent."),
    name: str = typer.Argument("org", help="Team name, user handle or agent name."),
    metric: str = typer.Option("cost", "--metric", help="cost (USD), tokens or calls."),
    period: str = typer.Option("month", "--period", help="minute, hour, day, week or month."),
    hard: str | None = typer.Option(None, "--hard", help="Hard cap: calls are refused at it."),
    soft: str | None = typer.Option(None, "--soft", help="Soft cap: an alert when crossed."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Create or replace a budget (platform admins; team admins for their team). Audited."""
    with open_platform() as platform:
        info = platform.budgets.set(
            resolve_caller(platform, token),
            scope=scope,
            name=name,
            metric=metric,
            period=period,
            hard_cap=hard,
            soft_cap=soft,
        )
    if json_output:
        print_json(info)
        return
    console.print(
        f"budget {info.id}: {info.scope} {info.name}, {info.metric} per {info.period}, "
        f"hard {info.hard_cap or '-'}, soft {info.soft_cap or '-'}"
    )


@budget_app.command("list")
@handle_errors
def list_budgets(token: str | None = TokenOption, json_output: bool = JsonOption) -> None:
    """Budgets you manage or that apply to you, with this window's spend and state."""
    with open_platform() as platform:
        infos = platform.budgets.visible(resolve_caller(platform, token))
    if json_output:
        print_json(infos)
        return
    table = Table("id", "scope", "name", "metric", "period", "hard", "soft", "spent", "state")
    for b in infos:
        table.add_row(
            b.id,
            b.scope,
            b.name,
            b.metric,
            b.period,
            b.hard_cap or "-",
            b.soft_cap or "-",
            b.spent,
            b.state,
        )
    console.print(table)


@budget_app.command("delete")
@handle_errors
def delete_budget(budget_id: str, token: str | None = TokenOption) -> None:
    """Remove a budget and its counters. Audited."""
    with open_platform() as platform:
        platform.budgets.delete(resolve_caller(platform, token), budget_id)
    console.print(f"deleted budget {budget_id}")
