"""``meshclaw outcomes ...`` (records, feedback, weights, cost, re-checks) and
``meshclaw analytics ...`` (boards, drill-downs, opt-in) against the configured store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from meshclaw.cli._app import JsonOption, TokenOption, app, handle_errors, open_platform
from meshclaw.cli._app import resolve_caller as _resolve
from meshclaw.cli._output import console, print_json, to_jsonable
from meshclaw.errors import UserError

if TYPE_CHECKING:
    from meshclaw.accounts.service import Caller
    from meshclaw.outcomes.cost import CostBy
    from meshclaw.outcomes.service import OutcomeInfo
    from meshclaw.platform import Platform

outcomes_app = typer.Typer(help="Outcomes: verified, accepted, durable work.", no_args_is_help=True)
analytics_app = typer.Typer(
    help="Leaderboards and adoption under privacy tiers.", no_args_is_help=True
)
app.add_typer(outcomes_app, name="outcomes")
app.add_typer(analytics_app, name="analytics")

T = TypeVar("T")


def _with(token: str | None, work: Callable[[Platform, Caller], T]) -> T:
    with open_platform() as platform:
        return work(platform, _resolve(platform, token))


def _outcome_table(rows: list[OutcomeInfo]) -> Table:
    table = Table("id", "type", "ref", "state", "verified", "feedback", "created")
    for o in rows:
        table.add_row(
            o.id, o.type, escape(o.ref[:40]), o.state, "yes" if o.verified else "no",
            str(len(o.feedback)), f"{o.created_at:%Y-%m-%d %H:%M}",
        )  # fmt: skip
    return table


@outcomes_app.command("list")
@handle_errors
def list_command(
    to_review: bool = typer.Option(False, "--to-review", help="Outcomes addressed to you."),
    state: str | None = typer.Option(
        None, "--state", help="credited, unaccepted, self, unverified or undone"
    ),
    limit: int = typer.Option(100, "--limit", min=1, max=500),
    offset: int = typer.Option(0, "--offset", min=0, help="Skip this many (newest first)."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Your outcomes, or the ones waiting for your verdict, newest first."""
    rows = _with(
        token,
        lambda p, c: p.outcomes.list_outcomes(
            c, to_review=to_review, state=state, limit=limit, offset=offset
        ),
    )
    if json_output:
        print_json(to_jsonable(rows))
    else:
        console.print(_outcome_table(rows))


@outcomes_app.command("show")
@handle_errors
def show_command(
    outcome_id: str, token: str | None = TokenOption, json_output: bool = JsonOption
) -> None:
    """One outcome with its evidence check and every verdict."""
    info = _with(token, lambda p, c: p.outcomes.get(c, outcome_id))
    if json_output:
        print_json(to_jsonable(info))
        return
    console.print(_outcome_table([info]))
    console.print(f"verification: {escape(str(info.verification))}", highlight=False)
    for f in info.feedback:
        note = f" ({escape(f.note)})" if f.note else ""
        console.print(f"{f.created_at:%Y-%m-%d %H:%M} {f.by} {f.verdict} via {f.via}{note}")


def _verdict(
    outcome_id: str, verdict: str, note: str | None, token: str | None, as_json: bool
) -> None:
    info = _with(
        token, lambda p, c: p.outcomes.feedback(c, outcome_id, verdict, note=note, via="cli")
    )
    if as_json:
        print_json(to_jsonable(info))
    else:
        console.print(f"{info.id}: {verdict}; now [bold]{info.state}[/bold]", highlight=False)


NoteOption = typer.Option(None, "--note", help="Why (kept with the verdict).")


@outcomes_app.command("accept")
@handle_errors
def accept_command(
    outcome_id: str,
    note: str | None = NoteOption,
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Accept an outcome you received (your own acceptance never counts)."""
    _verdict(outcome_id, "accepted", note, token, json_output)


@outcomes_app.command("reject")
@handle_errors
def reject_command(
    outcome_id: str,
    note: str | None = NoteOption,
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Reject an outcome you received: it earns nothing."""
    _verdict(outcome_id, "rejected", note, token, json_output)


@outcomes_app.command("link")
@handle_errors
def link_command(
    outcome_id: str,
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """A signed one-click link (path under the API) for your verdict on an outcome you got."""

    def work(p: Platform, c: Caller) -> str:
        return p.outcomes.link_for_self(c, outcome_id)

    signed = _with(token, work)
    path = f"/v1/feedback/{signed}"
    if json_output:
        print_json({"token": signed, "path": path})
    else:
        console.print(path, highlight=False, soft_wrap=True)


@outcomes_app.command("weights")
@handle_errors
def weights_command(
    set_: list[str] = typer.Option([], "--set", help="TYPE=WEIGHT (platform admins)."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Outcome type weights in your org; platform admins change them with --set."""
    changes: list[tuple[str, float]] = []
    for item in set_:
        name, _, value = item.partition("=")
        try:
            changes.append((name.strip(), float(value)))
        except ValueError:
            raise UserError(f"--set: expected TYPE=WEIGHT, not {item!r}") from None

    def work(p: Platform, c: Caller) -> dict[str, float]:
        for name, weight in changes:
            p.outcomes.set_weight(c, name, weight)
        return p.outcomes.weights(c.org_id)

    weights = _with(token, work)
    if json_output:
        print_json(weights)
        return
    table = Table("type", "weight")
    for name, weight in sorted(weights.items()):
        table.add_row(name, f"{weight:g}")
    console.print(table)


@outcomes_app.command("cost")
@handle_errors
def cost_command(
    by: str = typer.Option("agent", "--by", help="agent, user or team."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Cost per accepted, durable outcome (tokens only as cost)."""
    if by not in ("agent", "user", "team"):
        raise UserError(f"--by: must be agent, user or team, not {by!r}")
    group: CostBy = by  # type: ignore[assignment]
    rows = _with(token, lambda p, c: p.analytics.cost_per_outcome(c, by=group))
    if json_output:
        print_json(to_jsonable(rows))
        return
    table = Table(by, "cost", "credited outcomes", "cost / outcome")
    for r in rows:
        per = "-" if r.cost_per_outcome is None else f"${r.cost_per_outcome:.6f}"
        table.add_row(r.key, f"${r.cost_usd:.6f}", str(r.credited), per)
    console.print(table)


@outcomes_app.command("recheck")
@handle_errors
def recheck_command(token: str | None = TokenOption, json_output: bool = JsonOption) -> None:
    """Run your org's due durability re-checks now (the scheduler runs every org's)."""

    def work(p: Platform, c: Caller) -> Any:
        return asyncio.run(p.recheck_outcomes(c))  # Cedar decides (``outcome.recheck``)

    summary = _with(token, work)
    if json_output:
        print_json(to_jsonable(summary))
    else:
        console.print(
            f"checked {summary.checked}, undone {summary.undone}, "
            f"accepted by silence {summary.silently_accepted}"
        )


@analytics_app.command("board")
@handle_errors
def board_command(
    by: str = typer.Option("team", "--by", help="team (default) or user (opt-in only)."),
    top: int | None = typer.Option(None, "--top", min=0),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """The leaderboard: teams (at least k people) or opted-in individuals."""
    if by not in ("team", "user"):
        raise UserError(f"--by: must be team or user, not {by!r}")
    board = _with(
        token,
        lambda p, c: (
            p.analytics.team_board(c, top=top)
            if by == "team"
            else p.analytics.people_board(c, top=top)
        ),
    )
    if json_output:
        print_json(
            {
                "entries": [
                    {"rank": e.rank, by: e.id, "score": e.score, "pending_review": e.pending}
                    for e in board.entries
                ]
            }
        )
        return
    table = Table("rank", by, "score", "pending review")
    for e in board.entries:
        table.add_row(str(e.rank), e.id, f"{e.score:.3f}", f"{e.pending:.3f}" if e.pending else "")
    console.print(table)


@analytics_app.command("person")
@handle_errors
def person_command(
    user_id: str,
    reason: str | None = typer.Option(None, "--reason", help="Required for someone else."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Your numbers, or (team/platform admins) someone's as an audited drill-down."""
    data = _with(token, lambda p, c: p.analytics.person(c, user_id, reason=reason))
    if json_output:
        print_json(data)
        return
    console.print(
        f"{user_id}: score {data['score']:.3f}, pending review {data['pending_review']:.3f}, "
        f"outcomes {data['outcomes']}",
        highlight=False,
    )


@analytics_app.command("views")
@handle_errors
def views_command(
    limit: int = typer.Option(100, "--limit", min=1, max=500),
    offset: int = typer.Option(0, "--offset", min=0, help="Skip this many (newest first)."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Who looked at my numbers, when and why, newest first."""
    rows = _with(token, lambda p, c: p.analytics.views_of(c, limit=limit, offset=offset))
    if json_output:
        print_json(to_jsonable(rows))
        return
    table = Table("when", "who", "reason")
    for r in rows:
        table.add_row(f"{r.created_at:%Y-%m-%d %H:%M}", r.viewer_id, escape(r.reason))
    console.print(table)


@analytics_app.command("opt-in")
@handle_errors
def opt_in_command(
    off: bool = typer.Option(False, "--off", help="Leave individual boards."),
    token: str | None = TokenOption,
) -> None:
    """Appear on individual leaderboards (where the org has them); --off to leave."""
    on = _with(token, lambda p, c: p.analytics.opt_in(c, not off))
    console.print("opted in" if on else "opted out")


@analytics_app.command("settings")
@handle_errors
def settings_command(
    k: int | None = typer.Option(None, "--k", help="Smallest group shown (k-anonymity)."),
    individual_boards: bool | None = typer.Option(
        None, "--individual-boards/--no-individual-boards", help="Allow opt-in individual boards."
    ),
    cutoff_weekday: int | None = typer.Option(None, "--cutoff-weekday", help="0=Mon ... 6=Sun."),
    cutoff_hour: int | None = typer.Option(None, "--cutoff-hour", help="UTC hour."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """The org's analytics settings; platform admins change them with the options."""
    changes = {
        "k": k, "individual_boards": individual_boards,
        "cutoff_weekday": cutoff_weekday, "cutoff_hour": cutoff_hour,
    }  # fmt: skip

    def work(p: Platform, c: Caller) -> dict[str, Any]:
        if any(v is not None for v in changes.values()):
            return p.analytics.update_settings(c, **changes)
        return p.analytics.settings(c)

    data = _with(token, work)
    if json_output:
        print_json(data)
    else:
        for key, value in data.items():
            console.print(f"{key}: {value}", highlight=False)
