"""``meshclaw audit``: read, prove, verify, export and redact the tamper-evident audit log.

``verify --bundle`` works offline with only the public key; every other command acts on
the configured store as the caller of ``--token`` (role checked, and recorded).
Exit codes: 0 ok, 1 verification failed, 2 bad input.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import Progress
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
from meshclaw.clock import as_utc
from meshclaw.errors import UserError

if TYPE_CHECKING:
    from meshclaw.audit.checkpoint import Verifier
    from meshclaw.audit.verify import Report, SignedNote

audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        raise UserError(f"{option}: not an ISO 8601 date or time: {value!r}") from None


def _load_verifier(value: str) -> Verifier:
    """A verifier key given inline or as a file holding it."""
    from meshclaw.audit.checkpoint import Verifier

    path = Path(value)
    if path.exists():
        return Verifier.from_vkey(path.read_text())
    if "+" not in value:
        raise UserError(f"--public-key: no file {value!r}, and not a verifier key")
    return Verifier.from_vkey(value)


def _report_json(report: Report) -> dict[str, Any]:
    out = asdict(report)
    out["problem"] = (
        None if report.problem is None else asdict(report.problem) | {"text": str(report.problem)}
    )
    return out


def _finish(report: Report, json_output: bool) -> None:
    if json_output:
        print_json(_report_json(report))
    elif report.ok:
        console.print(
            f"[green]verified[/green]: {report.records} records "
            f"(seq {report.start_size + 1}..{report.size}, {report.redacted} without body), "
            f"{report.checkpoints} signed checkpoints"
            + (f" ({report.witnessed} also held by a witness)" if report.witnessed else "")
            + (f", {report.cosigned} witness cosignatures" if report.cosigned else "")
            + f", root {report.root}",
            highlight=False,
        )
        for note in report.notes:
            console.print(f"note: {note}", highlight=False)
    if not report.ok:
        if not json_output:
            errors.print(f"[red]verification FAILED[/red]: {report.problem}", highlight=False)
        raise typer.Exit(EXIT_FAILED)


def _held_notes(paths: list[Path]) -> list[SignedNote]:
    """Checkpoints kept outside the log: a file holds one signed note (a witness's answer,
    a ``checkpoint_dir`` file, a syslog message's text)."""
    from meshclaw.audit.verify import SignedNote

    held = []
    for path in paths:
        if not path.is_file():
            raise UserError(f"--held: no file {path}")
        held.append(SignedNote(note=path.read_text(encoding="utf-8"), held_by=f"file {path}"))
    return held


@audit_app.command("verify")
@handle_errors
def verify(
    bundle: Path | None = typer.Option(
        None, "--bundle", help="Verify an exported bundle offline instead of the store."
    ),
    public_key: str | None = typer.Option(
        None, "--public-key", help="Verifier key, or a file holding it (required with --bundle)."
    ),
    held: list[Path] = typer.Option(
        [],
        "--held",
        help="A signed checkpoint kept outside the log (witness, syslog, checkpoint_dir); "
        "the log must agree with it. Repeatable.",
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=1,
        help="Processes that check records (default: the audit.verify_workers setting).",
    ),
    witnesses: bool = typer.Option(
        True, "--witnesses/--no-witnesses", help="Compare with what each HTTP witness holds."
    ),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Recompute the Merkle tree and check every signed checkpoint; name the first bad record."""
    outside = _held_notes(held)
    if bundle is not None:
        from meshclaw.audit.bundle import verify_bundle

        if public_key is None:
            raise UserError("--bundle needs --public-key (from `meshclaw audit public-key`)")
        if not bundle.is_file():
            raise UserError(f"--bundle: no file {bundle}")
        _finish(
            verify_bundle(bundle, _load_verifier(public_key), outside, workers=workers),
            json_output,
        )
        return
    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        verifier = _load_verifier(public_key) if public_key else None
        with Progress(console=errors, transient=True, disable=json_output) as bar:
            task = bar.add_task("verifying", total=None)

            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            report = platform.audit_log.verify(
                caller,
                verifier,
                progress=advance,
                workers=workers,
                witnesses=witnesses,
                held=outside,
            )
    _finish(report, json_output)


@audit_app.command("log")
@handle_errors
def log(
    actor: str | None = typer.Option(None, help="User handle, user id or agent id."),
    action: str | None = typer.Option(None, help="Exact action, or a prefix ending in '*'."),
    resource: str | None = typer.Option(None, help="Exact resource, or a prefix ending in '*'."),
    outcome: str | None = typer.Option(None, help="ok, error, denied, ..."),
    since: str | None = typer.Option(None, help="ISO 8601 start (UTC if no zone)."),
    until: str | None = typer.Option(None, help="ISO 8601 end, exclusive."),
    after: int = typer.Option(0, help="Show records after this seq (the paging cursor)."),
    before: int | None = typer.Option(
        None, help="Show the page just before this seq (page backwards; not with --after)."
    ),
    limit: int = typer.Option(50, help="Records per page (1..1000)."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Query the log (auditors only); oldest first, paged by sequence number."""
    start, end = _time(since, "--since"), _time(until, "--until")
    with open_platform() as platform:
        page = platform.audit_log.query(
            resolve_caller(platform, token),
            actor=actor,
            action=action,
            resource=resource,
            outcome=outcome,
            since=start,
            until=end,
            after=after,
            before=before,
            limit=limit,
        )
    if json_output:
        cursors = {"next_after": page.next_after, "next_before": page.next_before}
        print_json({"entries": page.entries, **cursors})
        return
    table = Table("seq", "time", "actor", "agent", "action", "resource", "outcome")
    for e in page.entries:
        table.add_row(
            str(e.seq),
            f"{e.ts:%Y-%m-%d %H:%M:%S}",
            e.actor_user_id or "",
            e.actor_agent_id or "",
            e.action,
            "[redacted]" if e.redacted else e.resource,
            e.outcome,
        )
    console.print(table)
    if page.next_after is not None:
        console.print(f"more: --after {page.next_after}")
    if page.next_before is not None:
        console.print(f"earlier: --before {page.next_before}")


@audit_app.command("export")
@handle_errors
def export(
    since: str | None = typer.Option(None, help="ISO 8601: start at the first record since."),
    since_seq: int | None = typer.Option(None, help="Start at this sequence number."),
    output: Path | None = typer.Option(None, "--output", "-o", help="File (default: stdout)."),
    token: str | None = TokenOption,
) -> None:
    """Write a bundle that `audit verify --bundle` checks offline with only the public key."""
    start = _time(since, "--since")
    if since_seq is not None and since_seq < 1:
        raise UserError("--since-seq must be >= 1")
    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        if output is None:
            summary = platform.audit_log.export(
                caller, sys.stdout, since=start, since_seq=since_seq
            )
        else:
            with output.open("w", encoding="utf-8") as f:
                summary = platform.audit_log.export(caller, f, since=start, since_seq=since_seq)
    errors.print(
        f"exported seq {summary.start_seq}..{summary.end_seq}: {summary.records} records "
        f"({summary.withheld} bodies withheld: other orgs), {summary.checkpoints} checkpoints",
        highlight=False,
    )


@audit_app.command("checkpoint")
@handle_errors
def checkpoint(token: str | None = TokenOption, json_output: bool = JsonOption) -> None:
    """Sign a checkpoint of the current tree now."""
    with open_platform() as platform:
        info = platform.audit_log.checkpoint(resolve_caller(platform, token))
    if json_output:
        print_json(info)
    else:
        print(info.note, end="")


@audit_app.command("public-key")
@handle_errors
def public_key(
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file."),
) -> None:
    """Print the verifier key auditors check checkpoints with (creates the key pair once)."""
    with open_platform() as platform:
        vkey = platform.audit_log.public_key()
    if output is None:
        print(vkey)
    else:
        output.write_text(vkey + "\n")


@audit_app.command("prove")
@handle_errors
def prove(
    seq: int | None = typer.Option(None, help="Inclusion proof for this record."),
    size: int | None = typer.Option(None, help="...in the checkpoint of this tree size."),
    old: int | None = typer.Option(None, help="Consistency proof from this checkpoint size..."),
    new: int | None = typer.Option(None, help="...to this one."),
    token: str | None = TokenOption,
) -> None:
    """Print an inclusion proof (--seq) or a consistency proof (--old, --new) as JSON."""
    if (seq is None) == (old is None or new is None):
        raise UserError("give either --seq, or both --old and --new")
    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        if seq is not None:
            print_json(platform.audit_log.inclusion_proof(caller, seq, size))
        else:
            assert old is not None and new is not None
            print_json(platform.audit_log.consistency_proof(caller, old, new))


@audit_app.command("redact")
@handle_errors
def redact(
    before: str = typer.Option(..., help="Redact bodies of records older than this (ISO 8601)."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Retention: remove personal data of old records, keeping their hashes (platform admins)."""
    cutoff = _time(before, "--before")
    assert cutoff is not None
    with open_platform() as platform:
        count = platform.audit_log.redact(resolve_caller(platform, token), cutoff)
    if json_output:
        print_json({"redacted": count, "before": cutoff})
    else:
        console.print(f"redacted {count} records older than {cutoff.isoformat()}")
