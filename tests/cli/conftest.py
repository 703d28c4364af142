"""CLI tests on a world's store: the real Typer app, as one of the world's people."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from meshclaw.accounts.service import Caller
from meshclaw.cli.main import app
from tests.conftest import World, store_url_of

WorldCli = Callable[..., Result]


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    return make_world()


@pytest.fixture
def world_cli(world: World, tmp_path: Path) -> WorldCli:
    """``meshclaw ARGS`` as ``who`` (default alice), on the world's store; ``env`` adds
    settings (``MESHCLAW_…`` variables)."""
    runner = CliRunner()

    def invoke(*args: str, who: Caller | None = None, env: dict[str, str] | None = None) -> Result:
        token = world.platform.accounts.issue_token((who or world.alice).user_id, "cli")
        base = {
            "MESHCLAW_HOME": str(tmp_path / "var"),  # the world's store
            "MESHCLAW_EMBEDDED_MODEL_SERVER": "false",
            "MESHCLAW_DATABASE_URL": store_url_of(tmp_path),
            "MESHCLAW_CONFIG": None,
            "MESHCLAW_TOKEN": token,
        }
        return runner.invoke(app, list(args), env=base | (env or {}))

    return invoke
