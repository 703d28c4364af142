"""People's mail addresses: set through the directory API and the CLI, checked, unique per
org whatever the case, and seeded for the demo org."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from meshclaw.accounts.service import email_problem
from meshclaw.api.app import create_app
from meshclaw.cli.main import app as cli
from meshclaw.config import Settings
from meshclaw.errors import ConflictError, UserError
from meshclaw.platform import Platform
from tests.conftest import World, store_url_of


@pytest.fixture
def api(make_world: Callable[..., World]) -> Iterator[tuple[World, TestClient, dict[str, str]]]:
    world = make_world()
    token = world.platform.accounts.issue_token(world.admin.user_id, "t")
    with TestClient(create_app(world.platform)) as client:
        yield world, client, {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("dana@acme.test", None),
        ("Dana.O'Neil+ops@Mail.Acme.TEST", None),
        ("", "enter a mail address"),
        ("dana", "a mail address looks like name@example.com"),
        ("dana@", "a mail address looks like name@example.com"),
        ("dana@acme", "the domain after @ must be a name like example.com"),
        ("dana@-acme.test", "the domain after @ must be a name like example.com"),
        ("da..na@acme.test", "the part before @"),
        ("Dana <dana@acme.test>", "the part before @"),
        ("x" * 65 + "@acme.test", "the part before @"),
        ("d@" + "a" * 250 + ".test", "at most 254 characters"),
    ],
)
def test_what_counts_as_a_mail_address(address: str, problem: str | None) -> None:
    found = email_problem(address)
    assert (found is None) if problem is None else (found or "").startswith(problem)


def test_the_directory_api_sets_checks_and_clears_addresses(
    api: tuple[World, TestClient, dict[str, str]],
) -> None:
    _, client, admin = api
    made = client.post(
        "/v1/users", json={"handle": "dana", "email": " Dana@Acme.TEST "}, headers=admin
    )
    assert made.status_code == 201, made.text
    assert made.json()["email"] == "dana@acme.test"  # kept lower-case
    # Taken whatever the case: 409; not an address: 422 naming the field.
    taken = client.post("/v1/users", json={"handle": "dana2", "email": "DANA@acme.test"},
                        headers=admin)  # fmt: skip
    assert taken.status_code == 409 and "already someone's" in taken.json()["detail"]
    bad = client.post("/v1/users", json={"handle": "erin", "email": "erin@"}, headers=admin)
    assert bad.status_code == 422
    assert [e["path"] for e in bad.json()["errors"]] == ["body.email"] or "email" in bad.text
    no_address = client.post("/v1/users", json={"handle": "frank"}, headers=admin)
    assert no_address.status_code == 201 and no_address.json()["email"] is None

    changed = client.patch("/v1/users/bob", json={"email": "Bob@acme.test"}, headers=admin)
    assert changed.status_code == 200 and changed.json()["email"] == "bob@acme.test"
    clash = client.patch("/v1/users/alice", json={"email": "bob@ACME.test"}, headers=admin)
    assert clash.status_code == 409
    bad_change = client.patch("/v1/users/alice", json={"email": "alice"}, headers=admin)
    assert bad_change.status_code == 422
    # A role change leaves the address alone; null clears it.
    kept = client.patch("/v1/users/bob", json={"role": "team_admin"}, headers=admin)
    assert kept.json()["email"] == "bob@acme.test"
    found = client.get("/v1/users", params={"q": "bob@acme"}, headers=admin).json()
    assert [p["handle"] for p in found["people"]] == ["bob"]
    cleared = client.patch("/v1/users/bob", json={"email": None}, headers=admin)
    assert cleared.status_code == 200 and cleared.json()["email"] is None
    assert client.get("/v1/users/dana", headers=admin).json()["email"] == "dana@acme.test"


def test_an_address_is_unique_per_org_not_per_install(make_world: Callable[..., World]) -> None:
    platform = make_world().platform
    acme = platform.accounts.org_by_name("acme")
    assert acme is not None
    platform.accounts.set_email(acme.id, "alice", "alice@shared.test")
    with pytest.raises(ConflictError, match="already someone else's"):
        platform.accounts.set_email(acme.id, "bob", "ALICE@shared.test")
    with pytest.raises(UserError, match="email: the domain after @"):
        platform.accounts.set_email(acme.id, "bob", "bob@localhost")
    globex = platform.accounts.create_org("globex")
    other = platform.accounts.create_user(globex.id, "alice", email="Alice@Shared.test")
    assert other.email == "alice@shared.test"


@pytest.fixture
def meshclaw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    monkeypatch.chdir(tmp_path)
    env: dict[str, Any] = {
        "MESHCLAW_HOME": str(tmp_path / "var"),
        "MESHCLAW_EMBEDDED_MODEL_SERVER": "false",
        "MESHCLAW_BROKER_URL": None,
        "MESHCLAW_CONFIG": None,
        "MESHCLAW_TOKEN": None,
    }

    def invoke(*args: str) -> Result:
        # Asked now, not when the fixture was made: the world may be built after it.
        store = {"MESHCLAW_DATABASE_URL": store_url_of(tmp_path)}
        return CliRunner().invoke(cli, list(args), env=env | store)

    return invoke


def test_the_demo_org_has_addresses_and_the_cli_changes_them(
    meshclaw: Callable[..., Result], tmp_path: Path
) -> None:
    assert meshclaw("demo", "seed").exit_code == 0
    result = meshclaw("user", "set-email", "--user", "erin", "--org", "acme",
                      "--email", "Erin.Sales@ACME.example")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "erin@" not in result.output and "erin.sales@acme.example" in result.output
    taken = meshclaw("user", "set-email", "--user", "dave", "--org", "acme",
                     "--email", "alice@acme.example")  # fmt: skip
    assert taken.exit_code == 2 and "already someone else's" in taken.output
    bad = meshclaw("user", "set-email", "--user", "dave", "--org", "acme", "--email", "dave")
    assert bad.exit_code == 2 and "email:" in bad.output
    neither = meshclaw("user", "set-email", "--user", "dave", "--org", "acme")
    assert neither.exit_code == 2 and "--email ADDRESS or --clear" in neither.output
    cleared = meshclaw("user", "set-email", "--user", "dave", "--org", "acme", "--clear")
    assert cleared.exit_code == 0 and "no mail address" in cleared.output

    platform = Platform(Settings(home=tmp_path / "var", embedded_model_server=False))
    try:
        org = platform.accounts.org_by_name("acme")
        assert org is not None
        emails = {
            h: platform.accounts.user_by_handle(org.id, h).email
            for h in ("alice", "bob", "dave", "erin")
        }
    finally:
        platform.close()
    assert emails == {
        "alice": "alice@acme.example", "bob": "bob@acme.example", "dave": None,
        "erin": "erin.sales@acme.example",
    }  # fmt: skip
