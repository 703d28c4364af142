"""`make run` as a user gets it: the real server process, HTTP, the worker, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshclaw.providers.scripted import ScriptedServer
from meshclaw.providers.scripted.tokens import completion_tokens, prompt_tokens
from tests.serve_process import MESHCLAW, serve_demo

SPEC = """
name: e2e-agent
owner: alice
model: {provider: scripted, model: e2e-model}
instructions: Tell the time.
tools:
  - {name: clock.now, scope: read}
budget: {max_steps: 5, timeout_seconds: 30}
"""


@pytest.fixture
def model(scripted: Callable[[dict[str, Any]], ScriptedServer]) -> ScriptedServer:
    return scripted(
        {
            "turns": [
                {
                    "reply": {
                        "content": "checking",
                        "tool_calls": [{"name": "clock.now", "arguments": {"tz": "UTC"}}],
                    }
                },
                {"reply": {"content": "It is now.", "reasoning_tokens": 4}},
            ]
        }
    )


@pytest.fixture
def env(tmp_path: Path, model: ScriptedServer, world_store: str | None) -> dict[str, str]:
    """The processes' environment; in the PostgreSQL pass they share that test database."""
    store = {"MESHCLAW_DATABASE_URL": world_store} if world_store else {}
    return (
        os.environ
        | store
        | {
            "MESHCLAW_HOME": str(tmp_path / "var"),
            "MESHCLAW_PROVIDERS": json.dumps({"scripted": {"base_url": model.base_url}}),
            "MESHCLAW_CONFIG": str(tmp_path / "absent.toml"),
        }
    )


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    with serve_demo(env, tmp_path, start_seconds=60) as (address, _):
        yield address


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MESHCLAW, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_serve_create_over_http_run_and_read_exact_usage_in_the_cli(
    server: str, env: dict[str, str], tmp_path: Path, model: ScriptedServer
) -> None:
    token = (tmp_path / "var" / "cli-token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server, headers=headers, timeout=10) as http:
        assert http.get("/health").json()["status"] == "ok"
        created = http.post("/v1/agents", json={"spec_yaml": SPEC})
        assert created.status_code == 201, created.text
        run_id = http.post("/v1/runs", json={"agent": "e2e-agent", "input": "time?"}).json()["id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            run = http.get(f"/v1/runs/{run_id}").json()
            if run["status"] not in ("queued", "running"):
                break
            time.sleep(0.05)
    assert run["status"] == "succeeded", run
    assert [s["name"] for s in run["steps"]] == ["e2e-model", "clock.now", "e2e-model"]

    served_in = sum(prompt_tokens(body) for body in model.requests)
    args = json.dumps({"tz": "UTC"})
    served_out = completion_tokens("checking", [("clock__now", args)]) + completion_tokens(
        "It is now.", reasoning_tokens=4
    )

    shown = cli(env, tmp_path, "runs", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert (detail["input_tokens"], detail["output_tokens"]) == (served_in, served_out)
    assert len(detail["steps"]) == 3

    usage = cli(env, tmp_path, "usage", "--by", "agent", "--json")
    assert usage.returncode == 0, usage.stderr
    rows = {r["key"]: r for r in json.loads(usage.stdout)["rows"]}
    row = rows["e2e-agent"]
    assert (row["input_tokens"], row["output_tokens"], row["reasoning_tokens"]) == (
        served_in,
        served_out,
        4,
    )
    # scripted price: $0.50 / M input, $1.50 / M output
    expected = (served_in * 0.5 + served_out * 1.5) / 1_000_000
    assert abs(float(row["cost_usd"]) - expected) < 1e-12
    assert float(detail["cost_usd"]) == float(row["cost_usd"])


@pytest.mark.slow
def test_cli_run_follow_exit_codes(env: dict[str, str], tmp_path: Path) -> None:
    assert cli(env, tmp_path, "demo", "seed").returncode == 0
    spec = tmp_path / "agent.yaml"
    spec.write_text(SPEC)
    assert cli(env, tmp_path, "agent", "create", str(spec)).returncode == 0

    followed = cli(env, tmp_path, "run", "e2e-agent", "--input", "time?", "--follow", "--json")
    assert followed.returncode == 0, followed.stderr
    lines = followed.stdout.splitlines()
    first = json.loads(lines[0])
    assert (first["seq"], first["kind"]) == (1, "model")

    # Each run starts at the script's first turn again: a second run succeeds too.
    again = cli(env, tmp_path, "run", "e2e-agent", "--input", "again")
    assert again.returncode == 0, again.stdout

    # A run that fails exits 1: one model turn allowed, and the script's first turn is a
    # tool call, so the run stops at its step limit.
    spec.write_text(SPEC.replace("e2e-agent", "e2e-short").replace("max_steps: 5", "max_steps: 1"))
    assert cli(env, tmp_path, "agent", "create", str(spec)).returncode == 0
    failed = cli(env, tmp_path, "run", "e2e-short", "--input", "time?")
    assert failed.returncode == 1, (failed.stdout, failed.stderr)
    assert "failed" in failed.stdout

    missing = cli(env, tmp_path, "run", "no-such-agent")
    assert missing.returncode == 2
    assert "no agent 'no-such-agent'" in missing.stderr
