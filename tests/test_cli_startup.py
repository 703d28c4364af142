"""The CLI starts without the heavy parts of the platform.

Every ``meshclaw`` command, worker and test subprocess pays for what ``meshclaw.cli.main``
imports. Commands import the platform, analytics and integrity when they run, so
``--help`` and offline commands such as ``agent validate`` never load them. A new
top-level import of one of these modules in ``meshclaw/cli`` makes these tests fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

HEAVY = (
    "polars",
    "numpy",
    "mcp",
    "uvicorn",
    "fastapi",
    "celery",
    "httpx",
    "meshclaw.platform",
    "meshclaw.analytics",
    "meshclaw.integrity",
    "meshclaw.events",
    "sqlalchemy",
    "cedarpy",
)
"""Modules that must stay unloaded until a command needs them."""

# Runs the real app in a fresh interpreter, then reports which HEAVY modules it loaded.
PROBE = """
import json, sys
from meshclaw.cli.main import app
heavy, args = json.loads(sys.argv[1]), sys.argv[2:]
code = None
if args:
    try:
        app(args)
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"exit": code, "loaded": [m for m in heavy if m in sys.modules]}))
"""


def _probe(*args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_importing_the_cli_loads_no_heavy_module() -> None:
    assert _probe()["loaded"] == []


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["agent", "--help"],
        ["agent", "validate", str(ROOT / "examples" / "mail-triage.yaml")],
    ],
)
def test_light_commands_load_no_heavy_module(args: list[str]) -> None:
    result = _probe(*args)
    assert result["exit"] == 0
    assert result["loaded"] == []


def test_a_command_that_needs_the_platform_imports_it_when_it_runs(tmp_path: Path) -> None:
    """The lazy import happens: ``token create`` reaches the store (and says what is
    missing) instead of failing on a name that was moved out of the module top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHCLAW_")}
    done = subprocess.run(
        [sys.executable, "-m", "meshclaw", "token", "create", "--user", "nobody", "--org", "none"],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # no meshclaw.toml here: a fresh SQLite store under MESHCLAW_HOME
        env=env | {"MESHCLAW_HOME": str(tmp_path / "home")},
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "no org 'none'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_typed_event_reader_does_not_load_polars() -> None:
    """Ingest workers and the typed reader need msgspec (and NumPy for fingerprints), not
    the columnar reader's Polars: it loads on first use of ``map_frames`` and kin."""
    probe = (
        "import sys; from meshclaw.events import EventReader, EventWriter; "
        "loaded = 'polars' in sys.modules; from meshclaw.events import map_frames; "
        "print(loaded, 'polars' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.split() == ["False", "True"]


def test_the_platform_loads_polars_and_the_mcp_sdk_only_when_used() -> None:
    """Every command that opens the platform, and every worker, imports it: analytics
    (Polars) is built on first use and the MCP SDK loads with the first connector."""
    probe = (
        "import sys, meshclaw.platform; "
        "print(sorted(m for m in ('polars', 'numpy', 'mcp') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip() == "[]"
