"""The built-in deploy MCP server against real git (local bare repository) and a pipeline."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshclaw.connectors.approvals import ToolApprovals
from meshclaw.connectors.base import ToolResult
from meshclaw.connectors.config import ConnectorConfig
from meshclaw.connectors.credentials import MemoryCredentialStore
from meshclaw.connectors.mcp import McpConnector
from tests.connectors.conftest import ctx, require
from tests.connectors.pipeline_service import PipelineService, git, seeded_repo


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A bare repository with one commit on main, like a team's service repo."""
    require(shutil.which("git") is not None, "git is not installed")
    return seeded_repo(tmp_path, "billing.git", "app.py", "VERSION = 1\n", "Initial")


@pytest.fixture
def pipeline(origin: Path) -> Iterator[PipelineService]:
    service = PipelineService(repo=origin, token="ci-Token-1").start()
    yield service
    service.stop()


def deploy_connector(
    origin: Path, pipeline: PipelineService, approvals: ToolApprovals, token: str = "ci-Token-1"
) -> McpConnector:
    store = MemoryCredentialStore({"ci": {"default": {"token": token}}})
    config = ConnectorConfig(
        command=sys.executable,
        args=["-m", "meshclaw.connectors.servers", "deploy"],
        env={"MESHCLAW_DEPLOY_REPO": str(origin), "MESHCLAW_DEPLOY_PIPELINE_URL": pipeline.url},
        credentials="ci",
        credential_env={"MESHCLAW_DEPLOY_PIPELINE_TOKEN": "token"},
        approval="first_use",
    )
    return McpConnector("deploy", config, approvals=approvals, credentials=store)


def test_open_merge_deploy_watch_and_roll_back(
    origin: Path, pipeline: PipelineService, approvals: ToolApprovals
) -> None:
    conn = deploy_connector(origin, pipeline, approvals)
    results: dict[str, ToolResult] = {}

    async def scenario() -> None:
        async def call(
            key: str, tool: str, step: str | None = None, **arguments: Any
        ) -> dict[str, Any]:
            results[key] = await conn.call_tool(tool, arguments, ctx(step or key))
            return results[key].data or {}

        try:
            change = {"title": "Bump version", "files": {"app.py": "VERSION = 2\n"}}
            opened = (await call("open", "open_change", **change))["evidence"]
            await call("open-again", "open_change", step="open", **change)
            await call("merge", "merge_change", branch=opened["branch"])
            run = (await call("deploy", "trigger_pipeline"))["evidence"]
            await call("status", "pipeline_status", pipeline_id=run["pipeline_id"])
            await call("log", "list_changes", limit=5)
            await call("rollback", "rollback")
            await call("status-after", "pipeline_status", pipeline_id=run["pipeline_id"])
            await call("escape", "open_change", title="x", files={"../evil": "x"})
            await call("missing", "merge_change", branch="nope")
        finally:
            await conn.aclose()

    asyncio.run(scenario())
    failed = {k: r.content for k, r in results.items() if r.is_error}
    assert set(failed) == {"escape", "missing"}
    assert "not a path inside the repository" in failed["escape"]
    assert "no branch 'nope'" in failed["missing"]

    def evidence(key: str) -> dict[str, Any]:
        data = results[key].data
        assert data is not None
        found: dict[str, Any] = data.get("evidence") or data["structured"]
        return found

    opened = evidence("open")
    assert opened["branch"] == "meshclaw/bump-version-dem_open"
    assert opened["duplicate"] is False and len(opened["commit"]) == 40
    assert evidence("open-again") == {
        "branch": opened["branch"],
        "commit": opened["commit"],
        "duplicate": True,
    }
    merged = evidence("merge")
    assert git(origin, "rev-parse", "main") != opened["commit"]  # a merge commit
    deployed = evidence("deploy")
    assert deployed["status"] == "success" and deployed["commit"] == merged["commit"]
    assert evidence("status")["status"] == "success"
    assert "reverted_by" not in evidence("status")
    subjects = [c["subject"] for c in evidence("log")["commits"]]
    assert subjects[:3] == [f"Merge {opened['branch']}", "Bump version", "Initial"]
    rolled = evidence("rollback")
    assert rolled["reverted"] == merged["commit"] and rolled["status"] == "success"
    assert git(origin, "show", "main:app.py") == "VERSION = 1"
    assert [r["commit"] for r in pipeline.runs] == [merged["commit"], rolled["commit"]]
    # The deployed run, read again later, names the commit that rolled it back.
    assert evidence("status-after")["reverted_by"] == rolled["commit"]


def test_a_refused_pipeline_token_is_clear(
    origin: Path, pipeline: PipelineService, approvals: ToolApprovals
) -> None:
    conn = deploy_connector(origin, pipeline, approvals, token="wrong-Token-9")

    async def scenario() -> ToolResult:
        try:
            return await conn.call_tool("trigger_pipeline", {}, ctx("t"))
        finally:
            await conn.aclose()

    result = asyncio.run(scenario())
    assert result.is_error and "refused the credentials" in result.content
    assert "wrong-Token-9" not in result.content and pipeline.runs == []


def test_reads_share_one_mirror_fetched_before_each_read(origin: Path, tmp_path: Path) -> None:
    """Reads (the commit list, a rollback's revert) are made on this process's mirror:
    cloned once, fetched before every read, so each sees what was pushed since."""
    from meshclaw.connectors.servers.deploy import DeploySettings, Repo

    repo = Repo(DeploySettings(repo=str(origin), pipeline_url="http://127.0.0.1:9"))
    commands: list[str] = []
    run_git = repo._git

    def counted(cwd: Path | None, *args: str) -> str:
        commands.append(args[0])
        return run_git(cwd, *args)

    repo._git = counted  # type: ignore[method-assign]
    [first] = repo.log(10)
    assert first["subject"] == "Initial"
    work = tmp_path / "elsewhere"
    git(tmp_path, "clone", "--quiet", str(origin), str(work))
    git(work, "revert", "--no-edit", "HEAD")
    git(work, "push", "--quiet", "origin", "HEAD:main")

    assert [c["subject"] for c in repo.log(10)][1] == "Initial"
    assert repo.reverted_by(first["commit"]) == repo.log(1)[0]["commit"]
    assert commands.count("clone") == 1 and commands.count("fetch") == 3
