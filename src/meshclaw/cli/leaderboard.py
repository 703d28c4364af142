"""``meshclaw leaderboard`` and ``meshclaw report``: offline analytics on any org's history.

Both read an event format v1 file (JSON Lines) through the columnar cache
(``analytics.load_history``), need no store and no token, and report skipped lines
(with line numbers) and feedback for unknown outcomes on stderr, so that ``--json``
output on stdout stays exactly the documented shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table

from meshclaw.cli._app import JsonOption, app, handle_errors
from meshclaw.cli._output import console, errors, print_json
from meshclaw.errors import UserError

# ``meshclaw.analytics`` (Polars) is imported inside the functions that use it, so that
# every other command starts without it.
if TYPE_CHECKING:
    from meshclaw.analytics import Credit, Cutoff, History
    from meshclaw.integrity.scope import Withholding

SHOWN_PROBLEMS = 10
"""Skipped lines listed on stderr (all are counted; ``report --json`` lists them)."""

EventsArgument = typer.Argument(..., help="Event format v1 history (JSON Lines).")
CacheDirOption = typer.Option(
    None, "--cache-dir", help="Columnar cache directory (default ~/.cache/meshclaw)."
)
NoCacheOption = typer.Option(
    False, "--no-cache", help="Parse the file; neither read nor write the cache."
)
FindingsOption = typer.Option(
    None,
    "--findings",
    help="Integrity scan result (JSON); the credit its findings concern is withheld.",
)
ScanOption = typer.Option(
    False, "--scan", help="Run the integrity scan now and withhold the credit it flags."
)
WeightsOption = typer.Option(
    None, "--weights", help='JSON file of outcome type weights, e.g. {"deploy": 2.0}.'
)
WeekdayOption = typer.Option(
    4, "--cutoff-weekday", help="Measurement cut-off weekday (0=Mon, 4=Fri)."
)
HourOption = typer.Option(17, "--cutoff-hour", help="Measurement cut-off hour (UTC).")


def _cutoff(weekday: int, hour: int) -> Cutoff:
    from meshclaw.analytics import Cutoff

    if not (0 <= weekday <= 6 and 0 <= hour <= 23):
        raise UserError("--cutoff-weekday must be 0..6 and --cutoff-hour 0..23")
    return Cutoff(weekday=weekday, hour=hour)


def _weights(path: Path | None) -> dict[str, float]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"--weights: cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, int | float) and v >= 0 for k, v in data.items()
    ):
        raise UserError("--weights: expected a JSON object of outcome type -> weight >= 0")
    return {k: float(v) for k, v in data.items()}


@contextmanager
def _progress(label: str) -> Iterator[Any]:
    with Progress(
        f"[progress.description]{label}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=errors,
        transient=True,
        disable=not errors.is_terminal,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _load(events: Path, cache_dir: Path | None, no_cache: bool) -> History:
    if not events.is_file():
        raise UserError(f"no such events file: {events}")
    from meshclaw.analytics import load_history

    with _progress(f"reading {events.name}") as update:
        return load_history(events, cache_dir=cache_dir, use_cache=not no_cache, progress=update)


def _withheld(
    events: Path, findings: Path | None, scan: bool, cutoff: Cutoff
) -> frozenset[Withholding]:
    from meshclaw.analytics import withheld_from_findings, withheld_from_scan

    withheld: set[Withholding] = set()
    if findings is not None:
        try:
            withheld |= withheld_from_findings(json.loads(findings.read_text()))
        except (OSError, ValueError) as exc:
            raise UserError(f"--findings: {exc}") from None
    if scan:
        from meshclaw.integrity import ScanConfig, scan_file

        config = ScanConfig(cutoff_weekday=cutoff.weekday, cutoff_hour=cutoff.hour)
        withheld |= withheld_from_scan(scan_file(events, config=config))
    return frozenset(withheld)


def _warn_input(history: History, credit: Credit) -> None:
    report = history.report
    if report.skipped:
        errors.print(
            f"[yellow]warning:[/yellow] {report.skipped} malformed line(s) skipped",
            highlight=False,
        )
        for problem in report.problems[:SHOWN_PROBLEMS]:
            errors.print(f"  {escape(str(problem))}", highlight=False, soft_wrap=True)
        if report.skipped > SHOWN_PROBLEMS:
            errors.print(f"  ... and {report.skipped - SHOWN_PROBLEMS} more", highlight=False)
    unknown = credit.unknown_feedback
    if unknown.height:
        errors.print(
            f"[yellow]warning:[/yellow] {unknown.height} feedback event(s) for unknown outcomes"
            " (ignored)",
            highlight=False,
        )
        for line, ident, outcome in unknown.head(SHOWN_PROBLEMS).iter_rows():
            errors.print(
                f"  line {line}: feedback {escape(ident)} is about unknown outcome"
                f" {escape(str(outcome))}",
                highlight=False,
                soft_wrap=True,
            )
        if unknown.height > SHOWN_PROBLEMS:
            errors.print(f"  ... and {unknown.height - SHOWN_PROBLEMS} more", highlight=False)


def _credit(
    events: Path,
    *,
    cache_dir: Path | None,
    no_cache: bool,
    findings: Path | None,
    scan: bool,
    weights: Path | None,
    cutoff: Cutoff,
) -> tuple[History, Credit]:
    from meshclaw.analytics import CreditRules, compute_credit

    rules = CreditRules(
        weights=_weights(weights), cutoff=cutoff, withheld=_withheld(events, findings, scan, cutoff)
    )
    history = _load(events, cache_dir, no_cache)
    credit = compute_credit(history.tables, rules)
    _warn_input(history, credit)
    return history, credit


@app.command("leaderboard")
@handle_errors
def leaderboard_command(
    events: Path = EventsArgument,
    top: int | None = typer.Option(None, "--top", min=0, help="Show the first N."),
    by: str = typer.Option("user", "--by", help="user or team."),
    findings: Path | None = FindingsOption,
    scan: bool = ScanOption,
    weights: Path | None = WeightsOption,
    cutoff_weekday: int = WeekdayOption,
    cutoff_hour: int = HourOption,
    cache_dir: Path | None = CacheDirOption,
    no_cache: bool = NoCacheOption,
    json_output: bool = JsonOption,
) -> None:
    """Rank people by accepted, durable outcome value (docs/outcomes.md has the formula)."""
    if by not in ("user", "team"):
        raise UserError(f"--by: must be user or team, not {by!r}")
    _, credit = _credit(
        events, cache_dir=cache_dir, no_cache=no_cache, findings=findings, scan=scan,
        weights=weights, cutoff=_cutoff(cutoff_weekday, cutoff_hour),
    )  # fmt: skip
    from meshclaw.analytics import leaderboard

    board = leaderboard(credit, top=top, by="user" if by == "user" else "team")
    if json_output:
        print(json.dumps(board.to_json()))
        return
    table = Table("rank", by, "score", "credited outcomes", "pending review")
    for e in board.entries:
        table.add_row(
            str(e.rank),
            escape(e.id),
            f"{e.score:.3f}",
            str(e.outcomes),
            f"{e.pending:.3f} pending review" if e.pending else "",
        )
    console.print(table)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.4f}"


@app.command("report")
@handle_errors
def report_command(
    events: Path = EventsArgument,
    findings: Path | None = FindingsOption,
    scan: bool = ScanOption,
    weights: Path | None = WeightsOption,
    cutoff_weekday: int = WeekdayOption,
    cutoff_hour: int = HourOption,
    cache_dir: Path | None = CacheDirOption,
    no_cache: bool = NoCacheOption,
    json_output: bool = JsonOption,
) -> None:
    """Adoption (weekly active = a credited outcome), cost per outcome by team, acceptance
    and durability rates. Tokens appear only as cost."""
    history, credit = _credit(
        events, cache_dir=cache_dir, no_cache=no_cache, findings=findings, scan=scan,
        weights=weights, cutoff=_cutoff(cutoff_weekday, cutoff_hour),
    )  # fmt: skip
    from meshclaw.analytics import build_report

    report = build_report(history.tables, credit, history.report)
    if json_output:
        print_json(report.to_json())
        return
    t = report.totals
    span = "no events" if report.start is None else f"{report.start} .. {report.end}"
    console.print(
        f"[bold]{escape(str(events))}[/bold]: {history.report.summary()}; "
        f"{span}; weeks end {report.cutoff.label()}",
        highlight=False,
    )
    pending = bool(t.get("pending"))
    teams = Table(
        "team", "people", "active", "outcomes", "credited", "acceptance", "durability",
        "cost", "cost / outcome", *(["pending review"] if pending else []), title="By team",
    )  # fmt: skip
    for row in [*report.teams, {**t, "team": "all"}]:
        teams.add_row(
            escape(str(row["team"])),
            str(row["people"]),
            str(row["active"]),
            str(row["outcomes"]),
            str(row["credited"]),
            _pct(row["acceptance_rate"]),
            _pct(row["durability_rate"]),
            _usd(row["cost_usd"]),
            _usd(row["cost_per_outcome"]),
            *([f"{row['pending']:.2f}" if row["pending"] else ""] if pending else []),
            end_section=bool(report.teams) and row is report.teams[-1],
        )
    console.print(teams)
    weeks = Table(
        "week ending", "people", "active", "adoption", "credited", "cost", "cost / outcome",
        title="Weekly adoption (active = at least one credited outcome)",
    )  # fmt: skip
    for w in report.weeks:
        weeks.add_row(
            str(w["week_ending"]),
            str(w["people"]),
            str(w["active"]),
            _pct(w["adoption_rate"]),
            str(w["credited"]),
            _usd(w["cost_usd"]),
            _usd(w["cost_per_outcome"]),
        )
    console.print(weeks)
