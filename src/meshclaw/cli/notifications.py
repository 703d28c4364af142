"""``meshclaw notifications ...``: what the platform told you (or your org's people), and
marking yours read.

``list`` reads like ``GET /v1/notifications`` (your own by default; ``--org`` the whole
org's, for whoever Cedar lets read them; ``--recipient`` one person's of those);
``read ID...`` / ``read --all`` and ``unread ID...`` change your own read state. A
notification not addressed to you is "not found" (exit 2), whoever asks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from meshclaw.cli._app import (
    EXIT_BAD_INPUT,
    JsonOption,
    TokenOption,
    app,
    handle_errors,
    open_platform,
    resolve_caller,
)
from meshclaw.cli._output import console, errors, print_json, to_jsonable
from meshclaw.errors import NotFoundError, UserError
from meshclaw.notify.limits import MAX_PAGE, STATUSES

if TYPE_CHECKING:
    from meshclaw.notify.service import NotificationPage, NotificationView

notifications_app = typer.Typer(
    help="Notifications: list yours (or your org's), mark them read.", no_args_is_help=True
)
app.add_typer(notifications_app, name="notifications")


def _status(view: NotificationView) -> str:
    """The status, with when it went out, its next try, or why it was not sent."""
    if view.status == "sent" and view.sent_at is not None:
        return f"sent {view.sent_at:%Y-%m-%d %H:%M}"
    if view.status == "pending":
        return f"pending, next try {view.due_at:%Y-%m-%d %H:%M}"
    return f"{view.status}: {view.last_error}" if view.last_error else view.status


def _table(page: NotificationPage) -> Table:
    org = page.scope == "org"
    table = Table(title="Notifications")
    table.add_column("id", no_wrap=True)  # whole, to copy into `notifications read`
    table.add_column("created")
    table.add_column("subject")
    if org:
        table.add_column("for")
    table.add_column("status")
    table.add_column("read")
    for n in page.notifications:
        subject = escape(n.subject)
        read = "\N{EN DASH}" if n.read is None else ("read" if n.read else "[bold]unread[/bold]")
        cells = [n.id, f"{n.created_at:%Y-%m-%d %H:%M}",
                 f"[bold]{subject}[/bold]" if n.read is False else subject]  # fmt: skip
        if org:
            cells.append(escape(", ".join(n.recipient_handles)))
        table.add_row(*cells, escape(_status(n)), read)
    return table


@notifications_app.command("list")
@handle_errors
def list_notifications(
    org: bool = typer.Option(False, "--org", help="Every notification of your org (if you may)."),
    status: str | None = typer.Option(None, "--status", help=", ".join(STATUSES) + "."),
    unread: bool = typer.Option(False, "--unread", help="Only yours that you have not read."),
    recipient: str | None = typer.Option(
        None, "--recipient", help="Only those for this person (handle or id); implies --org."
    ),
    limit: int = typer.Option(50, "--limit", help=f"How many (1..{MAX_PAGE})."),
    offset: int = typer.Option(0, "--offset", help="How many to skip (newest first)."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Your notifications, newest first (``--org``: your org's); unread ones in bold."""
    with open_platform() as platform:
        page = platform.notifications.find(
            resolve_caller(platform, token),
            scope="org" if org or recipient else "mine",
            status=status, unread=unread, recipient=recipient, limit=limit, offset=offset,
        )  # fmt: skip
    if json_output:
        print_json(to_jsonable(page))
        return
    if not page.notifications:
        console.print("no notifications match")
    else:
        console.print(_table(page))
    more = f"; next page: --offset {page.next_offset}" if page.next_offset is not None else ""
    console.print(f"{page.total} notification(s), {page.unread} unread{more}", highlight=False)


@notifications_app.command("read")
@handle_errors
def mark_read(
    ids: list[str] = typer.Argument(None, help="Notification ids (yours).", show_default=False),
    all_: bool = typer.Option(False, "--all", help="Mark every notification of yours read."),
    through: str | None = typer.Option(
        None,
        "--through",
        help="With --all: only up to this notification of yours (the newest you listed), "
        "so what arrived since stays unread.",
    ),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Mark notifications of yours read (``--all``: every one, or up to ``--through``)."""
    if bool(ids) == all_:
        raise UserError("name the notifications to mark read, or pass --all (not both)")
    if through is not None and not all_:
        raise UserError("--through goes with --all")
    if all_:
        with open_platform() as platform:
            caller = resolve_caller(platform, token)
            marked = platform.notifications.mark_all_read(caller, through=through)
            left = platform.notifications.unread_count(caller) or 0
        if json_output:
            print_json({"marked": marked, "unread": left})
        else:
            console.print(f"marked {marked} notification(s) read; {left} unread", highlight=False)
        return
    _mark(ids, read=True, token=token, json_output=json_output)


@notifications_app.command("unread")
@handle_errors
def mark_unread(
    ids: list[str] = typer.Argument(..., help="Notification ids (yours)."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Mark notifications of yours unread again."""
    _mark(ids, read=False, token=token, json_output=json_output)


def _mark(ids: list[str], *, read: bool, token: str | None, json_output: bool) -> None:
    """Mark each id; the ones not found are reported and make the exit code 2, after the
    others are marked (marking is idempotent: run it again once fixed)."""
    done: list[NotificationView] = []
    missing: list[str] = []
    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        for notification_id in dict.fromkeys(ids):
            try:
                done.append(platform.notifications.mark_read(caller, notification_id, read=read))
            except NotFoundError:
                missing.append(notification_id)
    word = "read" if read else "unread"
    if json_output:
        print_json({"notifications": to_jsonable(done), "not_found": missing})
    else:
        for view in done:
            console.print(f"{escape(view.id)}: {word}  {escape(view.subject)}", highlight=False)
    for notification_id in missing:
        errors.print(
            f"[red]error:[/red] no notification {escape(notification_id)!r} addressed to you",
            highlight=False,
        )
    if missing:
        raise typer.Exit(EXIT_BAD_INPUT)
