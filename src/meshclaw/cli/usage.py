"""``meshclaw usage``: tokens and cost per user, team, agent, model and period;
``meshclaw usage reprice``: re-price history after the price table changed."""

from __future__ import annotations

from datetime import datetime
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
from meshclaw.cli._output import console, money, print_json
from meshclaw.clock import as_utc
from meshclaw.errors import UserError

if TYPE_CHECKING:
    from meshclaw.metering.usage import GroupBy, Period

usage_app = typer.Typer(
    help="Usage and cost. Tokens are a cost, never a measure of achievement.",
    invoke_without_command=True,
)
app.add_typer(usage_app, name="usage")


def _parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        raise UserError(f"{option}: not an ISO 8601 date or time: {value!r}") from None


@usage_app.callback()
@handle_errors
def usage(
    ctx: typer.Context,
    by: str | None = typer.Option(
        None, "--by", help="user, team, agent or model (default: user for your own, else team)."
    ),
    period: str | None = typer.Option(None, "--period", help="day, week or month."),
    user: str | None = typer.Option(
        None, "--user", help="One person (handle). Someone else's: needs --reason, recorded."
    ),
    reason: str | None = typer.Option(None, "--reason", help="Why you look at their usage."),
    since: str | None = typer.Option(None, help="ISO 8601 start (UTC if no zone)."),
    until: str | None = typer.Option(None, help="ISO 8601 end, exclusive."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Usage and cost. Tokens are a cost, never a measure of achievement."""
    if ctx.invoked_subcommand is not None:
        return
    if by not in (None, "user", "team", "agent", "model"):
        raise UserError(f"--by: must be user, team, agent or model, not {by!r}")
    if period not in (None, "day", "week", "month"):
        raise UserError(f"--period: must be day, week or month, not {period!r}")
    group: GroupBy | None = by  # type: ignore[assignment]
    per: Period | None = period  # type: ignore[assignment]
    start, end = _parse_time(since, "--since"), _parse_time(until, "--until")
    from meshclaw.analytics.usage_views import usage_view

    with open_platform() as platform:
        view = usage_view(
            platform.db,
            platform.access,
            platform.audit,
            resolve_caller(platform, token),
            group_by=group,
            since=start,
            until=end,
            period=per,
            user=user,
            reason=reason,
        )
    if json_output:
        print_json({"group_by": view.group_by, "period": period, "rows": view.rows})
        return
    columns = ["model calls", "tool calls", "input", "output", "cached", "reasoning", "cost"]
    table = Table(*(["period"] if period else []), view.group_by, *columns)
    for r in view.rows:
        table.add_row(
            *([r.period or ""] if period else []),
            r.key,
            str(r.model_calls),
            str(r.tool_calls),
            str(r.input_tokens),
            str(r.output_tokens),
            str(r.cached_tokens),
            str(r.reasoning_tokens),
            money(r.cost_usd),
        )
    console.print(table)


@usage_app.command("reprice")
@handle_errors
def reprice_command(
    since: str | None = typer.Option(None, help="ISO 8601 start (UTC if no zone)."),
    until: str | None = typer.Option(None, help="ISO 8601 end, exclusive."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; write nothing."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Re-price usage records with the current price table (platform admins; audited)."""
    start, end = _parse_time(since, "--since"), _parse_time(until, "--until")
    from meshclaw.metering.reprice import reprice

    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        result = reprice(
            platform.db,
            platform.audit,
            platform.price_book,
            caller,
            since=start,
            until=end,
            dry_run=dry_run,
            access=platform.access,
        )
    if json_output:
        print_json(result)
        return
    verb = "would change" if dry_run else "changed"
    console.print(
        f"price table {result.version}: {result.examined} model call(s) examined, "
        f"{result.changed} {verb}, {result.unpriced} without a price; "
        f"total {money(result.before_usd)} → {money(result.after_usd)}"
    )
