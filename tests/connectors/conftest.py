"""Connector fixtures: a store for approvals, the fixture MCP server over stdio and HTTP,
a real Matrix homeserver (Synapse)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from meshclaw.connectors.approvals import ToolApprovals
from meshclaw.connectors.base import ToolContext
from meshclaw.connectors.config import ConnectorConfig
from meshclaw.store.db import Database, migrate
from tests.connectors.synapsepeer import Synapse, install_synapse, start_synapse

HERE = Path(__file__).parent
FIXTURE_SERVER = HERE / "fixture_server.py"
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip locally when a peer is missing, but fail under CI=true (CI must install it)."""
    if not condition:
        if IN_CI:
            pytest.fail(f"CI=true requires it: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    """A real Matrix homeserver, booted once per test session (per xdist worker), with
    the users ``bot`` and ``carol``; installed into ``tests/.cache`` on first use."""
    problem = install_synapse()
    require(problem is None, f"Synapse is not installed: {problem}")
    with start_synapse(tmp_path_factory.mktemp("synapse")) as server:
        server.register("bot")
        server.register("carol")
        yield server


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'connectors.db'}"
    migrate(url)
    database = Database(url)
    yield database
    database.dispose()


@pytest.fixture
def approvals(db: Database) -> ToolApprovals:
    return ToolApprovals(db)


def fixture_config(**overrides: Any) -> ConnectorConfig:
    """The fixture server over stdio."""
    values: dict[str, Any] = {"command": sys.executable, "args": [str(FIXTURE_SERVER)]}
    values.update(overrides)
    return ConnectorConfig.model_validate(values)


def wait_for_file(path: Path, process: subprocess.Popen[bytes], timeout: float = 20.0) -> str:
    """Poll with a deadline until a started server wrote ``path``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready")
        time.sleep(0.02)  # polling a file the child writes; bounded by the deadline
    raise TimeoutError(f"{path} not written within {timeout:g} s")


@pytest.fixture
def http_fixture_server(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start the fixture server over streamable HTTP on a free port; returns its /mcp URL."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str] | None = None) -> str:
        port_file = tmp_path / f"port-{len(processes)}"
        process = subprocess.Popen(
            [sys.executable, str(FIXTURE_SERVER), "--http", str(port_file)],
            env=os.environ | (env or {}),
        )
        processes.append(process)
        port = wait_for_file(port_file, process)
        # The port is bound before uvicorn serves: wait until it answers.
        _wait_http(f"http://127.0.0.1:{port}/mcp", process)
        return f"http://127.0.0.1:{port}/mcp"

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.02)
    raise TimeoutError(f"{url} did not answer within {timeout:g} s")


def ctx(step: str) -> ToolContext:
    """The context a gateway gives one tool call of step ``step`` (its idempotency key)."""
    return ToolContext(
        org_id="org_1",
        user_id="usr_1",
        agent_id="agt_1",
        run_id="run_1",
        step_id=step,
        idempotency_key=f"idem_{step}",
    )
