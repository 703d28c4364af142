"""Shared fixtures: real stores (SQLite, PostgreSQL), the scripted model server, platforms."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from meshclaw.accounts.service import Caller
from meshclaw.config import ProviderConfig, Settings
from meshclaw.connectors.registry import ConnectorRegistry
from meshclaw.platform import Platform
from meshclaw.policy.authorizer import Authorizer
from meshclaw.providers.scripted import Script, ScriptedServer
from meshclaw.runtime.gateway import RetryPolicy
from meshclaw.runtime.service import RunInfo
from meshclaw.spec.loader import parse_spec

PG_ADMIN_URL = os.environ.get(
    "MESHCLAW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.01)
IN_CI = os.environ.get("CI", "").lower() == "true"


def _pg_available() -> str | None:
    """None if PostgreSQL answers, else the reason it does not."""
    engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        return None
    except Exception as exc:
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}"
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    reason = _pg_available()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true requires PostgreSQL: {reason}")
        pytest.skip(reason)
    return PG_ADMIN_URL


@contextmanager
def _database(admin_url: str, prefix: str, template: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database (a copy of ``template`` if given); its name is yielded
    and it is dropped afterwards, connections and all."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _url_of(admin_url: str, name: str) -> str:
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    with _database(pg_admin_url, "meshclaw_test") as name:
        yield _url_of(pg_admin_url, name)


TEST_STORE = os.environ.get("MESHCLAW_TEST_STORE", "sqlite")
"""The store ``make_world`` builds its platforms on: ``sqlite`` (a file under the test's
tmp dir) or ``postgresql`` (a fresh database per test, copied from a migrated template).
``make test`` runs the store-dependent tests once more with ``postgresql``."""


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str) -> Iterator[str]:
    """A migrated, empty PostgreSQL database that per-test databases are copied from
    (``CREATE DATABASE ... TEMPLATE``: a file copy, much faster than migrating each)."""
    from meshclaw.store.db import migrate

    with _database(pg_admin_url, "meshclaw_tpl") as name:
        migrate(_url_of(pg_admin_url, name))
        yield name


@pytest.fixture
def pg_world_url(pg_admin_url: str, pg_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database with every migration applied, dropped afterwards."""
    with _database(pg_admin_url, "meshclaw_test", template=pg_template) as name:
        yield _url_of(pg_admin_url, name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs on both engines."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def scripted() -> Iterator[Callable[[dict[str, Any]], ScriptedServer]]:
    """Start scripted model servers from dict scripts; all are stopped after the test."""
    servers: list[ScriptedServer] = []

    def start(script: dict[str, Any]) -> ScriptedServer:
        server = ScriptedServer(Script.model_validate(script))
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@dataclass
class World:
    """A platform with one org, two teams and three people, ready to run agents."""

    platform: Platform
    alice: Caller
    bob: Caller
    admin: Caller

    def save_agent(self, yaml_text: str, caller: Caller | None = None) -> str:
        agent, _ = self.platform.agents.save(caller or self.alice, parse_spec(yaml_text))
        return agent.id

    def start_run(self, agent: str, user_input: str = "go") -> str:
        info = self.platform.runs.create(self.alice, agent, user_input)
        assert self.platform.runs.claim(info.id)
        return info.id

    def run(
        self,
        agent: str,
        user_input: str = "go",
        *,
        connectors: ConnectorRegistry | None = None,
        authorizer: Authorizer | None = None,
    ) -> RunInfo:
        """Run an agent to its end in this thread, with fast retries."""
        run_id = self.start_run(agent, user_input)
        asyncio.run(self.execute(run_id, connectors=connectors, authorizer=authorizer))
        return self.platform.runs.get(self.alice, run_id)

    async def execute(
        self,
        run_id: str,
        *,
        connectors: ConnectorRegistry | None = None,
        authorizer: Authorizer | None = None,
    ) -> None:
        gateway = self.platform.build_gateway(
            retry=FAST_RETRY, connectors=connectors, authorizer=authorizer
        )
        try:
            await self.platform.executor(gateway).execute(run_id)
        finally:
            await gateway.aclose()


def agent_yaml(
    name: str = "helper",
    tools: tuple[tuple[str, str], ...] = (("clock.now", "read"), ("notes.write", "write")),
    max_steps: int = 10,
    timeout: float = 30,
    extra: str = "",
) -> str:
    """A minimal valid spec for the scripted provider."""
    tool_lines = "".join(f"\n  - {{name: {t}, scope: {s}}}" for t, s in tools)
    return (
        f"name: {name}\nowner: alice\n"
        "model: {provider: scripted, model: test-model}\n"
        "instructions: You help.\n"
        f"tools:{tool_lines or ' []'}\n"
        f"budget: {{max_steps: {max_steps}, timeout_seconds: {timeout}{extra}}}\n"
    )


@pytest.fixture
def world_store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The store a test's platforms are built on: None (SQLite under the test's home), or
    in the PostgreSQL pass a fresh PostgreSQL database. Fixtures that build platforms
    take it before building, so the database is dropped only after every platform (and
    any worker thread a fixture built on them) is closed; a test that takes it runs in
    both passes."""
    store = request.getfixturevalue("pg_world_url") if TEST_STORE == "postgresql" else None
    if store is not None:
        _STORES[tmp_path] = store
    yield store
    _STORES.pop(tmp_path, None)


def _shared_store(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if TEST_STORE != "postgresql":
        yield None
        return
    admin: str = request.getfixturevalue("pg_admin_url")
    template: str = request.getfixturevalue("pg_template")
    with _database(admin, "meshclaw_test", template=template) as name:
        yield _url_of(admin, name)


@pytest.fixture(scope="module")
def module_store(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """``world_store`` for a module-scoped platform (one seeded store shared by a module's
    tests): None on SQLite, in the PostgreSQL pass a database of its own."""
    yield from _shared_store(request)


@pytest.fixture(scope="package")
def package_store(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """``module_store`` for a package-scoped platform (the browser tests' live one)."""
    yield from _shared_store(request)


@pytest.fixture
def make_world(tmp_path: Path, world_store: str | None) -> Iterator[Callable[..., World]]:
    platforms: list[Platform] = []

    def build(model_url: str | None = None, database_url: str | None = None) -> World:
        database_url = database_url or world_store
        providers = {}
        if model_url is not None:
            providers["scripted"] = ProviderConfig(base_url=model_url, timeout_seconds=10)
        settings = Settings(
            home=tmp_path / "var",
            database_url=database_url,
            embedded_model_server=False,
            providers=providers,
        )
        platform = Platform(settings)
        platforms.append(platform)
        accounts = platform.accounts
        org = accounts.create_org("acme")
        eng = accounts.create_team(org.id, "eng")
        ops = accounts.create_team(org.id, "ops")
        alice = accounts.create_user(org.id, "alice", team_id=eng.id)
        bob = accounts.create_user(org.id, "bob", team_id=ops.id)
        admin = accounts.create_user(org.id, "root", role="platform_admin")
        return World(
            platform=platform,
            alice=accounts.caller_for(alice),
            bob=accounts.caller_for(bob),
            admin=accounts.caller_for(admin),
        )

    yield build
    for platform in platforms:
        platform.close()


_STORES: dict[Path, str] = {}
_SHARED_STORES = frozenset({"world_store", "module_store", "package_store"})
"""Fixtures a test's platforms are built on; a test using one runs in the PostgreSQL pass."""


def store_url_of(tmp_path: Path) -> str | None:
    """The database of the world ``make_world`` built under ``tmp_path``, for a CLI run
    against it (``MESHCLAW_DATABASE_URL``): None on SQLite, whose file is under the home."""
    return _STORES.get(tmp_path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``MESHCLAW_TEST_STORE=postgresql``, only the tests whose platforms are built on
    one of ``_SHARED_STORES`` run (the store-dependent ones; those taking ``database_url``
    already run on both engines in the SQLite pass)."""
    if TEST_STORE != "postgresql":
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        names = getattr(item, "fixturenames", ())
        on_world = (
            bool(_SHARED_STORES.intersection(names))
            and "database_url" not in names
            and item.get_closest_marker("sqlite_only") is None
        )
        (kept if on_world else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
