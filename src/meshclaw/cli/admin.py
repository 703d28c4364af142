"""Host-local administration: database, demo data, tokens, passwords, the scripted model."""

from __future__ import annotations

from pathlib import Path

import typer

from meshclaw.cli._app import JsonOption, app, handle_errors, open_platform
from meshclaw.cli._output import console, print_json
from meshclaw.errors import NotFoundError, UserError

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
demo_app = typer.Typer(help="Demo org.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (run on the server host).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(demo_app, name="demo")
user_app = typer.Typer(
    help="Dashboard sign-in and mail address (run on the server host).", no_args_is_help=True
)
app.add_typer(token_app, name="token")
app.add_typer(user_app, name="user")


@db_app.command("upgrade")
@handle_errors
def db_upgrade() -> None:
    """Apply Alembic migrations to the configured database."""
    from meshclaw.config import Settings
    from meshclaw.store.db import migrate

    url = Settings().resolved_database_url()
    migrate(url)
    console.print("database is at the latest schema")


@demo_app.command("seed")
@handle_errors
def demo_seed(json_output: bool = JsonOption) -> None:
    """Create the demo org (teams, users, agents) if the store is empty."""
    from meshclaw.demo import seed_demo

    with open_platform() as platform:
        created = seed_demo(platform)
    if json_output:
        print_json({"created": created})
    else:
        console.print("demo org created" if created else "store not empty: demo seed skipped")


@token_app.command("create")
@handle_errors
def token_create(
    user: str = typer.Option(..., help="User handle."),
    org: str = typer.Option(..., help="Org name."),
    name: str = typer.Option("cli", help="A label for the token."),
) -> None:
    """Issue an API token for a user; the secret is printed once and never stored."""
    with open_platform() as platform:
        found = platform.accounts.org_by_name(org)
        if found is None:
            raise NotFoundError(f"no org {org!r}")
        person = platform.accounts.user_by_handle(found.id, user)
        print(platform.accounts.issue_token(person.id, name))


@user_app.command("set-password")
@handle_errors
def user_set_password(
    user: str = typer.Option(..., help="User handle."),
    org: str = typer.Option(..., help="Org name."),
    password: str = typer.Option(
        ...,
        prompt=True,
        hide_input=True,
        confirmation_prompt=True,
        envvar="MESHCLAW_NEW_PASSWORD",
        help="Asked for when not given (never put it on a shared command line).",
    ),
) -> None:
    """Set a person's dashboard password; it ends every session they have open."""
    with open_platform() as platform:
        found = platform.accounts.org_by_name(org)
        if found is None:
            raise NotFoundError(f"no org {org!r}")
        person = platform.accounts.user_by_handle(found.id, user)
        platform.signin.set_password(person.id, password)
        console.print(f"password set for {user}; their open sessions were ended")


@user_app.command("set-email")
@handle_errors
def user_set_email(
    user: str = typer.Option(..., help="User handle."),
    org: str = typer.Option(..., help="Org name."),
    email: str | None = typer.Option(None, help="The mail address (unique in the org)."),
    clear: bool = typer.Option(False, "--clear", help="Remove the person's address."),
) -> None:
    """Set a person's mail address (how outcomes tell who received a mail); audited."""
    if (email is None) == (not clear):
        raise UserError("give --email ADDRESS or --clear")
    with open_platform() as platform:
        found = platform.accounts.org_by_name(org)
        if found is None:
            raise NotFoundError(f"no org {org!r}")
        person = platform.accounts.set_email(found.id, user, email)
        console.print(f"{user}: {person.email or 'no mail address'}")


@app.command("model-server")
@handle_errors
def model_server(
    script: Path = typer.Option(..., "--script", help="Scripted turns (YAML or JSON)."),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8001),
) -> None:
    """Serve an OpenAI-compatible API that replays scripted turns (tests and demos)."""
    from meshclaw.providers.scripted.server import serve

    serve(str(script), host, port)
