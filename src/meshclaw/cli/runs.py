"""``meshclaw run AGENT`` and ``meshclaw runs ...``: start, follow, inspect, cancel runs."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

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
from meshclaw.cli._output import console, money, print_json, to_jsonable

if TYPE_CHECKING:
    from meshclaw.platform import Platform
    from meshclaw.runtime.service import RunInfo, StepInfo

runs_app = typer.Typer(help="Inspect and cancel runs.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")

FOLLOW_POLL_SECONDS = 0.1


def _step_line(step: StepInfo) -> str:
    if step.kind == "model":
        usage = (step.response or {}).get("usage", {})
        calls = [c["name"] for c in (step.response or {}).get("tool_calls", [])]
        what = f"calls {', '.join(calls)}" if calls else "answers"
        tokens = f"{usage.get('input_tokens', 0)} in / {usage.get('output_tokens', 0)} out"
        return (
            f"#{step.seq} model {step.name} {what} [{step.status}] {tokens} {money(step.cost_usd)}"
        )
    detail = step.error or ((step.response or {}).get("content") or "")
    return f"#{step.seq} tool {step.name} [{step.status}] {detail[:80]}"


def _run_dict(info: RunInfo, steps: list[StepInfo] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = to_jsonable(info)
    if steps is not None:
        data["steps"] = to_jsonable(steps)
    return data


async def _execute(platform: Platform, run_id: str, on_step: Any) -> None:
    gateway = platform.build_gateway()
    try:
        task = asyncio.create_task(platform.executor(gateway).execute(run_id))
        seen = 0
        while True:
            done = task.done()
            for step in _steps_after(platform, run_id, seen):
                on_step(step)
                seen = step.seq
            if done:
                break
            await asyncio.wait({task}, timeout=FOLLOW_POLL_SECONDS)
        task.result()
    finally:
        await gateway.aclose()


def _steps_after(platform: Platform, run_id: str, seen: int) -> list[StepInfo]:
    # Only finished steps are printed, so each line is final.
    steps = platform.runs.steps_unchecked(run_id, after_seq=seen)
    out = []
    for step in steps:
        if step.ended_at is None:
            break
        out.append(step)
    return out


@app.command("run")
@handle_errors
def run(
    agent: str,
    input_text: str = typer.Option("", "--input", "-i", help="The task for the agent."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream steps as they happen."),
    detach: bool = typer.Option(False, "--detach", help="Queue for the server's worker and exit."),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Run an agent now, in this process (or queue it with --detach)."""
    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        if not detach:
            platform.start_embedded_model_server()
        # Run here: created already running, so a server's worker sharing the store does
        # not take it first (it only claims queued runs) and --follow has steps to show.
        info = platform.runs.create(caller, agent, input_text, trigger="manual", claimed=not detach)
        if detach:
            from meshclaw.workers.dispatch import broker_dispatcher

            # With a broker, send it to the workers; else a server's worker claims it.
            broker = broker_dispatcher(platform)
            if broker is not None:
                broker.dispatch(info.id)
                broker.close()
            print_json(_run_dict(info)) if json_output else console.print(f"queued {info.id}")
            return

        def on_step(step: StepInfo) -> None:
            if not follow:
                return
            if json_output:
                print(json.dumps(to_jsonable(step)), flush=True)
            else:
                console.print(escape(_step_line(step)), highlight=False)

        if not json_output and follow:
            console.print(f"run {info.id} of {agent} v{info.agent_version}")
        asyncio.run(_execute(platform, info.id, on_step))
        final = platform.runs.get(caller, info.id)
        steps = platform.runs.steps(caller, info.id)
    if json_output:
        print_json(_run_dict(final, steps))
    else:
        _print_summary(final)
    if final.status != "succeeded":
        raise typer.Exit(EXIT_FAILED)


def _print_summary(info: RunInfo) -> None:
    colour = {
        "succeeded": "green",
        "failed": "red",
        "cancelled": "yellow",
        "waiting_approval": "yellow",
    }.get(info.status, "white")
    console.print(
        f"[{colour}]{info.status}[/{colour}] {info.id}: {info.step_count} steps, "
        f"{info.input_tokens} in / {info.output_tokens} out tokens, cost {money(info.cost_usd)}"
    )
    if info.output:
        console.print(escape(info.output), highlight=False)
    if info.error:
        console.print(f"[red]{escape(info.error)}[/red]", highlight=False)
    if info.status == "waiting_approval":
        console.print("a tool call waits for approval: see `meshclaw approval list`")
    if info.finished:
        console.print(_outcomes_line(info), highlight=False)


def _outcomes_line(info: RunInfo) -> str:
    """Whether the ended run's outcomes can be read yet (``meshclaw outcomes list``)."""
    if info.outcomes_settled_at is None:
        return "outcomes: recording… (the run has ended; they are being verified)"
    when = info.outcomes_settled_at.isoformat(timespec="seconds")
    if info.outcomes_error:
        return f"[red]outcomes: recording failed at {when}: {escape(info.outcomes_error)}[/red]"
    return f"outcomes: recorded {when}"


@runs_app.command("list")
@handle_errors
def list_runs(
    agent: str | None = typer.Option(None, help="Only this agent's runs."),
    status: str | None = typer.Option(
        None, help="queued, running, waiting_approval, succeeded, failed, cancelled."
    ),
    limit: int = typer.Option(20, min=1, max=500),
    token: str | None = TokenOption,
    json_output: bool = JsonOption,
) -> None:
    """Your latest runs (admins: the org's)."""
    with open_platform() as platform:
        runs = platform.runs.find(
            resolve_caller(platform, token), agent=agent, status=status, limit=limit
        )
    if json_output:
        print_json([_run_dict(r) for r in runs])
        return
    table = Table("run", "agent", "v", "trigger", "status", "steps", "cost", "created")
    for r in runs:
        table.add_row(
            r.id,
            r.agent_name,
            str(r.agent_version),
            r.trigger,
            r.status,
            str(r.step_count),
            money(r.cost_usd),
            r.created_at.isoformat(timespec="seconds"),
        )
    console.print(table)


@runs_app.command("show")
@handle_errors
def show_run(run_id: str, token: str | None = TokenOption, json_output: bool = JsonOption) -> None:
    """A run with every step: model turns, tool calls, decisions and cost."""
    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        info = platform.runs.get(caller, run_id)
        steps = platform.runs.steps(caller, run_id)
    if json_output:
        print_json(_run_dict(info, steps))
        return
    for step in steps:
        console.print(escape(_step_line(step)), highlight=False)
    _print_summary(info)


@runs_app.command("cancel")
@handle_errors
def cancel_run(
    run_id: str, token: str | None = TokenOption, json_output: bool = JsonOption
) -> None:
    """Ask a queued or running run to stop."""
    with open_platform() as platform:
        info = platform.runs.cancel(resolve_caller(platform, token), run_id)
    if json_output:
        print_json(_run_dict(info))
    else:
        console.print(f"cancel requested for {info.id} (status {info.status})")
