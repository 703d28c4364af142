"""``meshclaw integrity scan EVENTS.jsonl``: find gaming patterns in any org's history.

``meshclaw integrity scan-live`` scans the caller's org's own recent history in the
store (``integrity.live``) and records the findings, as the scheduler does every day.

Reads event format v1 (``../shared/DESIGN.md``). With ``--json`` prints exactly one
object ``{"users": [{"user", "flagged", "score", "findings": [{"detector",
"evidence"}]}]}`` on stdout, one entry per person in the file; otherwise a progress
bar and a Rich table. Skipped (malformed) lines are reported on stderr with their line
numbers either way. Exit codes: 0 scanned (whatever was found), 2 bad input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from meshclaw.cli._app import (
    JsonOption,
    TokenOption,
    app,
    handle_errors,
    open_platform,
    resolve_caller,
)
from meshclaw.cli._output import console, errors, print_json
from meshclaw.errors import UserError

if TYPE_CHECKING:
    from meshclaw.events import ReadReport
    from meshclaw.integrity import ScanConfig, ScanResult
    from meshclaw.integrity.findings import FindingView

integrity_app = typer.Typer(help="Integrity: detect gaming of usage metrics.", no_args_is_help=True)
app.add_typer(integrity_app, name="integrity")

SHOWN_PROBLEMS = 20


def _report_problems(report: ReadReport) -> None:
    if not report.skipped:
        return
    errors.print(
        f"[yellow]warning:[/yellow] {report.skipped} malformed line(s) skipped",
        markup=True,
        highlight=False,
    )
    for problem in report.problems[:SHOWN_PROBLEMS]:
        errors.print(f"  {escape(str(problem))}", markup=True, highlight=False)
    if report.skipped > SHOWN_PROBLEMS:
        errors.print(f"  ... and {report.skipped - SHOWN_PROBLEMS} more", highlight=False)


def _scan_with_progress(path: Path, config: ScanConfig) -> ScanResult:
    from meshclaw.integrity import DETECTORS, scan_file

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=errors, transient=True) as progress:
        reading = progress.add_task("reading events", total=path.stat().st_size or 1)
        detecting = progress.add_task("detectors", total=len(DETECTORS), start=False)

        def on_bytes(done: int, total: int) -> None:
            progress.update(reading, completed=done, total=total or 1)

        def on_step(name: str) -> None:
            progress.start_task(detecting)
            progress.update(detecting, advance=1, description=f"detector {name}")

        return scan_file(path, config=config, progress=on_bytes, step=on_step)


def _table(result: ScanResult, show_all: bool) -> Table:
    table = Table("user", "score", "flagged", "detectors", "key evidence", title="Integrity scan")
    for u in result.users:
        if not (u.flagged or show_all):
            continue
        first = u.findings[0] if u.findings else None
        key = ""
        if first is not None:
            items = [
                f"{k}={v}" for k, v in first.evidence.items() if not isinstance(v, list | dict)
            ]
            key = ", ".join(items[:3])
        table.add_row(
            escape(u.user),
            f"{u.score:.2f}",
            "[red]yes[/red]" if u.flagged else "no",
            ", ".join(f.detector for f in u.findings),
            escape(key),
        )
    return table


@integrity_app.command("scan")
@handle_errors
def scan(
    events: Path = typer.Argument(..., help="Event format v1 history (JSON Lines)."),
    json_output: bool = JsonOption,
    show_all: bool = typer.Option(False, "--all", help="List everyone, not only the flagged."),
    threshold: float = typer.Option(0.5, help="Combined score at which a person is flagged."),
    cutoff_weekday: int = typer.Option(4, help="Measurement cut-off weekday (0=Mon, 4=Fri)."),
    cutoff_hour: int = typer.Option(17, help="Measurement cut-off hour (UTC)."),
    record: bool = typer.Option(
        False, "--record", help="Store the findings for review in your org (auditors, admins)."
    ),
    token: str | None = TokenOption,
) -> None:
    """Scan a history for gaming patterns; every person gets a score and evidence."""
    if events.is_dir():
        raise UserError(f"{events} is a directory: pass one event file (JSON Lines)")
    if not events.is_file():
        raise UserError(f"{events}: no such file")
    if not 0.0 < threshold <= 1.0:
        raise UserError(f"--threshold: must be in (0, 1], not {threshold}")
    if not (0 <= cutoff_weekday <= 6 and 0 <= cutoff_hour <= 23):
        raise UserError("--cutoff-weekday must be 0..6 and --cutoff-hour 0..23")
    # Imported here: the detectors need Polars and NumPy, which other commands do not.
    from meshclaw.integrity import ScanConfig, scan_file

    config = ScanConfig(threshold=threshold, cutoff_weekday=cutoff_weekday, cutoff_hour=cutoff_hour)
    if json_output:
        result = scan_file(events, config=config)
        _report_problems(result.report)
        if record:
            _record(result, events, token)
        print(json.dumps(result.to_json(), ensure_ascii=False))
        return
    result = _scan_with_progress(events, config)
    _report_problems(result.report)
    if record:
        _record(result, events, token)
    console.print(_table(result, show_all))
    flagged = len(result.flagged)
    console.print(
        f"{result.report.summary()}; {len(result.users)} people, {flagged} flagged "
        f"(score >= {config.threshold}). Findings are for a human to review, not verdicts."
    )


def _record(result: ScanResult, events: Path, token: str | None) -> None:
    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        summary = platform.findings.record(caller, result, source=f"scan:{events.name}")
    errors.print(
        f"findings recorded: {summary.opened} opened, {summary.updated} updated, "
        f"{summary.suppressed} not raised again (dismissed before, no new evidence)",
        highlight=False,
    )


@integrity_app.command("scan-live")
@handle_errors
def scan_live(
    weeks: int = typer.Option(4, help="How many weeks back from now to scan (1..52)."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Scan your org's own recent history now and record the findings (auditors, admins)."""
    if not 1 <= weeks <= 52:
        raise UserError(f"--weeks: must be 1..52, not {weeks}")
    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        (done,) = platform.scan_integrity(caller=caller, weeks=weeks)
    summary = {
        "org": done.org_id, "since": done.since.isoformat(), "until": done.until.isoformat(),
        "events": done.events, "people": done.people, "flagged": done.flagged,
        "opened": done.recorded.opened, "updated": done.recorded.updated,
        "suppressed": done.recorded.suppressed,
    }  # fmt: skip
    if json_output:
        print_json(summary)
        return
    console.print(
        f"scanned {done.events} events of {done.people} people since {done.since:%Y-%m-%d}; "
        f"{len(done.flagged)} flagged. Findings: {done.recorded.opened} opened, "
        f"{done.recorded.updated} updated, {done.recorded.suppressed} not raised again "
        "(dismissed before, no new evidence). They are for a human to review, not verdicts.",
        highlight=False,
    )


def _finding_json(f: FindingView) -> dict[str, object]:
    return {
        "id": f.id, "subject": f.subject, "detector": f.detector, "status": f.status,
        "score": f.score, "strength": f.strength, "evidence": f.evidence, "source": f.source,
        "reason": f.reason, "reviewed_by": f.reviewed_by,
        "created_at": f.created_at.isoformat(), "updated_at": f.updated_at.isoformat(),
    }  # fmt: skip


@integrity_app.command("findings")
@handle_errors
def findings(
    status: list[str] = typer.Option(
        ["open", "under_review"], "--status", help="open, under_review, confirmed, dismissed."
    ),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """The review queue: your org's findings (auditors, admins) or the ones about you."""
    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        rows = platform.findings.queue(caller, status)
    if json_output:
        print_json({"findings": [_finding_json(f) for f in rows]})
        return
    table = Table("id", "person", "detector", "status", "score", "source", title="Findings")
    for f in rows:
        table.add_row(
            escape(f.id), escape(f.subject), f.detector, f.status, f"{f.score:.2f}",
            escape(f.source),
        )  # fmt: skip
    console.print(table)


@integrity_app.command("review")
@handle_errors
def review(
    finding: str = typer.Argument(..., help="Finding id."),
    action: str = typer.Argument(..., help="start, confirm or dismiss."),
    reason: str = typer.Option("", "--reason", help="Required to confirm or dismiss."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Move a finding: start a review, confirm it, or dismiss it (audited)."""
    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        moved = platform.findings.move(caller, finding, action, reason=reason)
    if json_output:
        print_json(_finding_json(moved))
        return
    console.print(f"finding {escape(moved.id)} is now {moved.status}")
