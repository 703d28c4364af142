"""The Typer app and what every command shares.

Exit codes: 0 ok, 1 run/runtime failure, 2 bad input.

Commands act as the user whose API token is given by ``--token``, ``$MESHCLAW_TOKEN``
or ``<home>/cli-token`` (written by the demo seed), against the configured store.

Command modules import the platform, the store, analytics and the like inside the
commands that use them (names for annotations under ``TYPE_CHECKING``): every command,
worker and test subprocess imports all command modules, and ``--help`` should not take
seconds. ``tests/test_cli_startup.py`` fails on a new heavy top-level import.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.markup import escape

from meshclaw.cli._output import errors
from meshclaw.errors import MeshClawError, UserError

if TYPE_CHECKING:
    from meshclaw.accounts.service import Caller
    from meshclaw.platform import Platform

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

app = typer.Typer(
    name="meshclaw",
    help="MeshClaw: workplace AI agents measured by verified outcomes, not tokens.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Map MeshClaw errors to a message on stderr and a trustworthy exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            errors.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except MeshClawError as exc:
            errors.print(f"[red]failed:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_FAILED) from None

    return wrapper  # type: ignore[return-value]


def open_platform() -> Platform:
    # Imported here, not at the top: the platform (store, connectors, analytics) takes
    # about a second to import, which `--help` and offline commands should not pay.
    from meshclaw.config import Settings
    from meshclaw.platform import Platform

    return Platform(Settings())


def resolve_caller(platform: Platform, token: str | None) -> Caller:
    secret = token or os.environ.get("MESHCLAW_TOKEN")
    if not secret:
        token_file = platform.settings.home / "cli-token"
        if token_file.exists():
            secret = token_file.read_text().strip()
    if not secret:
        from meshclaw.errors import AuthError

        raise AuthError(
            "no API token: pass --token, set MESHCLAW_TOKEN, or run `meshclaw demo seed`"
        )
    return platform.accounts.authenticate(secret)


TokenOption = typer.Option(None, "--token", envvar="MESHCLAW_TOKEN", help="API token.")
JsonOption = typer.Option(False, "--json", help="Print JSON for scripts.")
