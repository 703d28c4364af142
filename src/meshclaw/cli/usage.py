"""``meshclaw usage``: tokens and cost per user, team, agent or model."""

from __future__ import annotations

from datetime import datetime

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
from meshclaw.metering.usage import GroupBy, usage_report


def _parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        raise UserError(f"{option}: not an ISO 8601 date or time: {value!r}") from None


@app.command("usage")
@handle_errors
def usage(
    by: str = typer.Option("user", "--by", help="user, team, agent or model."),
    since: str | None = typer.Option(None, help="ISO 8601 start (UTC if no zone)."),
    until: str | None = typer.Option(None, help="ISO 8601 end, exclusive."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Usage and cost. Tokens are a cost, never a measure of achievement."""
    if by not in ("user", "team", "agent", "model"):
        raise UserError(f"--by: must be user, team, agent or model, not {by!r}")
    group: GroupBy = by  # type: ignore[assignment]
    start, end = _parse_time(since, "--since"), _parse_time(until, "--until")
    platform = open_platform()
    try:
        rows = usage_report(
            platform.db, resolve_caller(platform, token), group_by=group, since=start, until=end
        )
    finally:
        platform.close()
    if json_output:
        print_json({"group_by": by, "rows": rows})
        return
    table = Table(by, "model calls", "tool calls", "input", "output", "cached", "reasoning", "cost")
    for r in rows:
        table.add_row(
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
