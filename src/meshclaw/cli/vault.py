"""``meshclaw vault ...``: delegated credentials, encrypted at rest; values are never shown.

Everything acts in the caller's org: ``put``/``delete`` change its entries, ``list``
shows them (each org has its own defaults, e.g. its own ``mail``). ``rotate`` changes the
install's key-encryption key, so it re-wraps every org's entries: it is the install
operator's (no API token, no org, no Cedar action; docs/policy.md), not an org admin's.

Values are read from standard input as a JSON object (``--stdin``) or prompted for
without echo (``--field NAME``), never taken as command-line arguments (they would stay
in the shell history and the process list).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

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
from meshclaw.cli._output import console, print_json, to_jsonable
from meshclaw.errors import ConfigError, PermissionDenied

if TYPE_CHECKING:
    from meshclaw.accounts.service import Caller
    from meshclaw.platform import Platform
    from meshclaw.policy.api import ApiResource

vault_app = typer.Typer(
    help="Delegated credentials, encrypted at rest: put, list, delete, rotate the key.",
    no_args_is_help=True,
)
app.add_typer(vault_app, name="vault")

UserOption = typer.Option(
    None, "--user", help="Whose delegated credential (handle); default: the shared default."
)


def _subject(
    platform: Platform, caller: Caller, handle: str | None
) -> tuple[str | None, ApiResource]:
    """(user id or None for the default, the resource ``credential.manage`` is asked on)."""
    from meshclaw.policy.api import ApiResource

    if handle is None:
        return None, ApiResource.org(caller.org_id)
    user = platform.accounts.user_by_handle(caller.org_id, handle)
    return user.id, ApiResource.person(
        id=user.id, org_id=user.org_id, team_id=user.team_id, role=user.role
    )


def _read_values(stdin: bool, fields: list[str]) -> dict[str, str]:
    if stdin == bool(fields):
        raise ConfigError("give either --stdin (a JSON object) or one --field NAME per value")
    if stdin:
        try:
            data = json.loads(sys.stdin.read())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"standard input is not JSON: {exc.msg}") from None
        if (
            not isinstance(data, dict)
            or not data
            or not all(isinstance(v, str) for v in data.values())
        ):
            raise ConfigError(
                'standard input must be a JSON object of strings, e.g. {"token": "…"}'
            )
        return {str(k): v for k, v in data.items()}
    return {name: typer.prompt(name, hide_input=True) for name in fields}


@vault_app.command("put")
@handle_errors
def put(
    ref: str,
    user: str | None = UserOption,
    stdin: bool = typer.Option(False, "--stdin", help="Read the values as JSON from stdin."),
    field: list[str] = typer.Option([], "--field", help="Prompt for this field (repeatable)."),
    token: str | None = TokenOption,
) -> None:
    """Store (or replace) a credential under REF, encrypted with a fresh data key."""
    values = _read_values(stdin, field)
    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        user_id, resource = _subject(platform, caller, user)
        platform.access.require(caller, "credential.manage", resource)
        platform.vault.put(ref, values, org_id=caller.org_id, user_id=user_id)
    who = f" for {user}" if user else " (default)"
    console.print(f"stored {ref}{who}: fields {', '.join(sorted(values))}")


@vault_app.command("list")
@handle_errors
def list_entries(token: str | None = TokenOption, json_output: bool = JsonOption) -> None:
    """References, whose they are and their field names: never the values."""
    from sqlalchemy import select

    from meshclaw.policy.api import ApiResource
    from meshclaw.store.models import User

    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        sees_defaults = platform.access.authorize_api(
            caller, "credential.manage", ApiResource.org(caller.org_id)
        ).allowed
        with platform.db.session() as session:
            people = {
                u.id: u for u in session.scalars(select(User).where(User.org_id == caller.org_id))
            }
        visible = []
        for entry in platform.vault.entries(org_id=caller.org_id):
            if entry.user_id is None:
                if sees_defaults:
                    visible.append(entry)
                continue
            person = people.get(entry.user_id)
            if person is None:  # a person no longer here
                continue
            resource = ApiResource.person(
                id=person.id, org_id=person.org_id, team_id=person.team_id, role=person.role
            )
            if platform.access.authorize_api(caller, "credential.manage", resource).allowed:
                visible.append(entry)
    if json_output:
        print_json(to_jsonable(visible))
        return
    table = Table("ref", "user", "fields", "key", "bound to")
    for e in visible:
        bound = "org" if e.org_bound else "ref+user (vault rotate re-binds)"
        table.add_row(e.ref, e.user_id or "(default)", ", ".join(e.fields), e.kek_id, bound)
    console.print(table)


@vault_app.command("delete")
@handle_errors
def delete(ref: str, user: str | None = UserOption, token: str | None = TokenOption) -> None:
    """Remove a credential."""
    with open_platform() as platform:
        caller = resolve_caller(platform, token)
        user_id, resource = _subject(platform, caller, user)
        platform.access.require(caller, "credential.manage", resource)
        if not platform.vault.delete(ref, org_id=caller.org_id, user_id=user_id):
            raise ConfigError(f"no vault entry {ref!r}" + (f" for {user}" if user else ""))
    console.print(f"deleted {ref}")


@vault_app.command("generate-key")
@handle_errors
def generate_key(file: Path) -> None:
    """Write a new random key-encryption key to FILE (mode 0600; never overwrites)."""
    from meshclaw.policy.vault import Kek, write_key_file

    kek = Kek.generate()
    write_key_file(file, kek)
    console.print(f"wrote key {kek.id} to {file}")


@vault_app.command("rotate")
@handle_errors
def rotate(
    new_key_file: Path, token: str | None = TokenOption, json_output: bool = JsonOption
) -> None:
    """Re-wrap every data key under the key in NEW_KEY_FILE, all or nothing (the install
    operator's: run it on the server, without an API token).

    Every org's entries are re-wrapped (the key is the install's); entries from before
    the vault was per org are re-encrypted bound to their org. Afterwards point
    ``vault_key_file`` (or ``$MESHCLAW_VAULT_KEY``) at the new key; the old one can then
    be destroyed.
    """
    if token:
        # No org's person may re-key every org's entries: an API token (of any role,
        # in any org) authorises nothing here, so refuse it rather than seem to use it.
        raise PermissionDenied(
            "vault rotate is the install operator's, not an org's: run it on the server "
            "without an API token (unset MESHCLAW_TOKEN, drop --token)"
        )
    from meshclaw.policy.vault import read_key_file

    new = read_key_file(new_key_file)
    with open_platform() as platform:
        old = platform.vault.kek_id
        count = platform.vault.rotate(new, audit=platform.audit)
    if json_output:
        print_json({"rewrapped": count, "old_key": old, "new_key": new.id})
    else:
        console.print(f"re-wrapped {count} entries from key {old} to key {new.id}")
        console.print(f"now set vault_key_file to {new_key_file}; then destroy the old key")
