"""A real MeshClaw on loopback and Debian's Chromium driven by Playwright.

One platform per session, wired as ``meshclaw serve`` wires it (``cli/serve.py``): a
temporary home on SQLite, the demo org, the scripted model server, the in-process worker
and the API with the dashboard, served by ``LoopbackServer`` on a port the OS picks.
Added for the scenario (``_scenario.py``): an org policy file, the built-in ``mail`` MCP
server against dovecot and aiosmtpd on loopback, the mailbox's credential in the vault,
and fiona (user name ``fiona@acme.test``), who receives the agent's mail.

Playwright cannot download its own browser here: it launches ``/usr/bin/chromium``
(``MESHCLAW_CHROMIUM`` overrides the path). Without Chromium or dovecot the suite skips
with the reason, except under ``CI=true`` (``.ci/run`` installs both), where it fails.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from argon2 import PasswordHasher
from playwright.sync_api import ViewportSize
from sqlalchemy import select

from meshclaw._loopback import LoopbackServer
from meshclaw.accounts import signin as signin_module
from meshclaw.accounts.service import Caller
from meshclaw.api.app import create_app
from meshclaw.config import ProviderConfig, Settings
from meshclaw.connectors.config import ConnectorConfig
from meshclaw.demo import DEMO_PASSWORD, seed_demo
from meshclaw.platform import Platform
from meshclaw.providers.scripted import Script, ScriptedServer
from meshclaw.store.models import Team
from meshclaw.workers.inprocess import InProcessWorker
from tests.browser._scenario import BENEFICIARY, POLICY, SCRIPT
from tests.connectors.mailpeers import (
    ImapAccount,
    SmtpServer,
    dovecot_available,
    start_dovecot,
    start_smtp,
)

CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = Path(os.environ.get("MESHCLAW_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
PASSWORD = DEMO_PASSWORD


def require(condition: bool, reason: str) -> None:
    """Skip locally when something the suite needs is missing; fail under CI=true."""
    if not condition:
        if IN_CI:
            pytest.fail(f"CI=true requires it: {reason}")
        pytest.skip(reason)


def wait_until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy, within a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)  # polling a worker thread, bounded by the deadline


@dataclass
class Live:
    """The running platform, its address, the people of the demo org and the mail peers."""

    platform: Platform
    url: str
    people: dict[str, Caller]
    smtp: SmtpServer
    _clients: dict[str, httpx.Client] = field(default_factory=dict)

    def api(self, handle: str) -> httpx.Client:
        """An HTTP client for the JSON API, with an API token of ``handle`` (one each)."""
        if handle not in self._clients:
            user_id = self.people[handle].user_id
            token = self.platform.accounts.issue_token(user_id, "browser suite")
            self._clients[handle] = httpx.Client(
                base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
            )
        return self._clients[handle]

    def wait_for_run(self, run_id: str, *statuses: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll ``GET /v1/runs/{id}`` (as the owner) until the run reaches one of ``statuses``."""
        client = self.api("alice")

        def reached() -> dict[str, Any] | None:
            run: dict[str, Any] = client.get(f"/v1/runs/{run_id}").raise_for_status().json()
            return run if run["status"] in statuses else None

        result: dict[str, Any] = wait_until(reached, f"run {run_id} to be {statuses}", timeout)
        return result

    def wait_for_outcome(self, run_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """The one outcome of ``run_id`` (as its owner), once the run says its outcomes are
        recorded (``outcomes_settled_at``: they are verified just after the run's end)."""
        client = self.api("alice")

        def settled() -> dict[str, Any] | None:
            run: dict[str, Any] = client.get(f"/v1/runs/{run_id}").raise_for_status().json()
            return run if run["outcomes_settled_at"] else None

        run = wait_until(settled, f"the outcomes of run {run_id} to be recorded", timeout)
        assert run["outcomes_error"] is None, run["outcomes_error"]
        outcomes = client.get("/v1/outcomes").raise_for_status().json()
        (outcome,) = [o for o in outcomes if o["run_id"] == run_id]
        return cast(dict[str, Any], outcome)

    def team_id(self, name: str) -> str:
        with self.platform.db.session() as session:
            team_id: str = session.scalars(select(Team.id).where(Team.name == name)).one()
            return team_id

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


def _mail_connector(account: ImapAccount, smtp: SmtpServer) -> ConnectorConfig:
    """The built-in mail server over stdio, as a platform admin would configure it."""
    return ConnectorConfig(
        command=sys.executable,
        args=["-m", "meshclaw.connectors.servers", "mail"],
        env={
            "MESHCLAW_MAIL_IMAP_HOST": account.host,
            "MESHCLAW_MAIL_IMAP_PORT": str(account.port),
            "MESHCLAW_MAIL_IMAP_SSL": "false",
            "MESHCLAW_MAIL_SMTP_HOST": smtp.host,
            "MESHCLAW_MAIL_SMTP_PORT": str(smtp.port),
            "MESHCLAW_MAIL_SMTP_STARTTLS": "false",
            "MESHCLAW_MAIL_SMTP_AUTH": "false",
        },
        credentials="mail",
        credential_env={"MESHCLAW_MAIL_USERNAME": "username", "MESHCLAW_MAIL_PASSWORD": "password"},
        approval="first_use",
        untrusted=True,
    )


@pytest.fixture(scope="package")
def live(tmp_path_factory: pytest.TempPathFactory, package_store: str | None) -> Iterator[Live]:
    require(dovecot_available(), "dovecot is not installed: apt-get install dovecot-imapd")
    home = tmp_path_factory.mktemp("meshclaw-browser")
    with ExitStack() as stack:
        # Cheap argon2 parameters: the suite hashes six passwords and signs in a dozen
        # times, and the real parameters cost up to a second each on a busy machine.
        # Stored hashes carry their parameters, so signing in works the same way.
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        patch.setattr(signin_module, "_hasher", CHEAP_HASHER)
        dummy = CHEAP_HASHER.hash("not a password")
        patch.setattr(signin_module, "_dummy_hash", lambda: dummy)
        account = stack.enter_context(start_dovecot("alice@acme.test", "wonderland"))
        smtp = stack.enter_context(start_smtp(account))
        model = ScriptedServer(Script.model_validate(SCRIPT))
        model.start()
        stack.callback(model.stop)
        settings = Settings(
            home=home / "var",
            database_url=package_store,
            embedded_model_server=False,
            providers={"scripted": ProviderConfig(base_url=model.base_url, timeout_seconds=10)},
            connectors={"mail": _mail_connector(account, smtp)},
        )
        platform = Platform(settings)
        stack.callback(platform.close)
        people = _seed(platform, account)
        worker = InProcessWorker(platform, concurrency=2, poll_seconds=0.1)
        worker.start()
        stack.callback(worker.stop)
        server = LoopbackServer(create_app(platform, worker), name="meshclaw-dashboard")
        server.start()
        stack.callback(server.stop)
        live = Live(platform=platform, url=server.url, people=people, smtp=smtp)
        stack.callback(live.close)
        yield live


def _seed(platform: Platform, account: ImapAccount) -> dict[str, Caller]:
    """The demo org, plus fiona, the mail credential and k = 2 for the team board."""
    assert seed_demo(platform)
    accounts = platform.accounts
    org = accounts.org_by_name("acme")
    assert org is not None
    with platform.db.session() as session:
        support = session.scalars(
            select(Team.id).where(Team.org_id == org.id, Team.name == "support")
        ).one()
    fiona = accounts.create_user(
        org.id, BENEFICIARY, team_id=support, display_name="Fiona", role="employee",
        job_function="Customer success manager",
    )  # fmt: skip
    platform.signin.set_password(fiona.id, PASSWORD)
    people = {
        handle: accounts.caller_for(accounts.user_by_handle(org.id, handle))
        for handle in ("alice", "bob", "carol", "dave", "erin", BENEFICIARY)
    }
    # The mailbox's credential, encrypted in the vault. It is the reference's default, not
    # alice's own entry: listing a connector's tools resolves the credential without a user
    # (``McpConnector.list_tools``), so an owner-only entry fails before the first call.
    platform.vault.put(
        "mail", {"username": account.username, "password": account.password}, org_id=org.id
    )
    # The scenario's policy is the org's own (saved as its platform admin would), not the
    # operator's install-wide file: the admin page shows and edits the org's text.
    platform.org_policies.save(people["carol"], POLICY, note="browser scenario")
    # The demo org's teams have two people at most: let the team board show teams of two.
    platform.analytics.update_settings(people["carol"], k=2)
    return people


@pytest.fixture(scope="package")
def chromium() -> Iterator[Any]:
    # Package scope, not session: Playwright's sync API keeps an event loop running in the
    # main thread while it is open, and later tests that call asyncio.run() would fail.
    """Debian's Chromium, headless, through Playwright's sync API."""
    require(CHROMIUM.exists(), f"Chromium is not installed at {CHROMIUM}: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
