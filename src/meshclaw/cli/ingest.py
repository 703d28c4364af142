"""``meshclaw ingest``: usage history from other gateways into event format v1."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from meshclaw.cli._app import JsonOption, app, handle_errors
from meshclaw.cli._output import console, errors, print_json
from meshclaw.errors import UserError

if TYPE_CHECKING:
    from meshclaw.metering.ingest import Format


@app.command("ingest")
@handle_errors
def ingest_command(
    source: Path = typer.Argument(..., help="OTLP JSON (traces) or a LiteLLM spend-log export."),
    fmt: str = typer.Option(..., "--format", help="otel or litellm."),
    output: Path = typer.Option(..., "--output", "-o", help="Event format v1 JSON Lines to write."),
    org: str = typer.Option("default", help="Org for records that name none."),
    team: str = typer.Option("unknown", help="Team for records that name none."),
    agent: str = typer.Option("unknown", help="Agent for records that name none."),
    keep_ids: bool = typer.Option(
        False, "--keep-ids", help="Keep the source's user ids instead of pseudonymising them."
    ),
    jobs: int | None = typer.Option(
        None,
        "--jobs",
        "-j",
        min=1,
        help="Processes mapping a big LiteLLM JSON Lines export (default: one per CPU, "
        "up to 8; 1: this process only).",
    ),
    json_output: bool = JsonOption,
) -> None:
    """Map OTel GenAI spans or LiteLLM spend logs onto event format v1 (malformed records
    are reported with their position, skipped and counted)."""
    from meshclaw.metering.ingest import Defaults, ingest

    if fmt not in ("otel", "litellm"):
        raise UserError(f"--format: must be otel or litellm, not {fmt!r}")
    if not source.is_file():
        raise UserError(f"no such file: {source}")
    chosen: Format = fmt  # type: ignore[assignment]
    defaults = Defaults(org=org, team=team, agent=agent, pseudonymise=not keep_ids)
    report = ingest(source, chosen, output, defaults, jobs=jobs)
    if json_output:
        print_json(report)
        return
    for problem in report.problems:
        errors.print(f"[yellow]skipped[/yellow] {problem}", highlight=False, soft_wrap=True)
    console.print(
        f"{report.events} events written to {output} from {report.records} records; "
        f"{report.skipped} malformed skipped, {report.ignored} non-GenAI spans ignored"
    )
    if report.unattributed:
        errors.print(
            f"[yellow]{report.unattributed} spans mapped without their trace's invoke_agent "
            "span[/yellow] (it came more than 20,000 spans later): their agent, user and "
            "team come from the span itself or the options",
            highlight=False,
            soft_wrap=True,
        )
