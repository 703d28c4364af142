"""The built-in ``deploy`` MCP server: changes in a git repository and a CI/CD pipeline.

Settings come from ``MESHCLAW_DEPLOY_*`` (``DeploySettings``). Git is the real ``git``
command: a write works on a fresh clone (nothing of an earlier call in its way); a read
on this process's mirror of the repository, cloned once and fetched before each read
(the outcome re-checks read a pipeline's rollback status often). The pipeline is any
HTTP service with a small REST shape: ``POST {pipeline_url}/pipelines`` with
``{"ref", "commit"}`` answers ``{"id", "status", ...}``, and ``GET
{pipeline_url}/pipelines/{id}`` reports its status.

Writes return **evidence**: branch and commit SHA of a change, the merge commit, the
pipeline id and status, the revert commit of a rollback. Opening a change is idempotent
per run step: the branch name comes from the caller's idempotency key. A pipeline run's
status also names the commit that later reverted its commit (``reverted_by``), so a
deploy rolled back after the fact is seen by the outcome's durability re-check.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import anyio
import httpx
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

IDEMPOTENCY_META_KEY = "io.meshclaw/idempotency-key"
READ = ToolAnnotations(read_only_hint=True, open_world_hint=True)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=True)
SHA = re.compile(r"^[0-9a-f]{7,40}$")

T = TypeVar("T")


class DeploySettings(BaseSettings):
    """Which repository and pipeline (``MESHCLAW_DEPLOY_*``)."""

    model_config = SettingsConfigDict(env_prefix="MESHCLAW_DEPLOY_")

    repo: str
    """A git URL or path the server may clone from and push to."""
    branch: str = "main"
    pipeline_url: str
    """Base URL of the CI/CD service."""
    pipeline_token: SecretStr | None = None
    author_name: str = "MeshClaw agent"
    author_email: str = "agent@meshclaw.invalid"
    timeout_seconds: float = 60.0


class DeployError(ToolError):
    """A deploy operation failed; the text reaches the agent (never a token)."""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "change"


def _relative(path: str) -> str:
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or pure.parts[0] == ".git":
        raise DeployError(f"not a path inside the repository: {path!r}")
    return str(pure)


class Repo:
    """Git operations: writes on a fresh clone per call, reads on a fetched mirror."""

    def __init__(self, settings: DeploySettings) -> None:
        self.settings = settings
        self._mirror_lock = threading.Lock()
        self._mirror_dir: tempfile.TemporaryDirectory[str] | None = None

    def _git(self, cwd: Path | None, *args: str) -> str:
        s = self.settings
        env = os.environ | {
            "GIT_AUTHOR_NAME": s.author_name,
            "GIT_AUTHOR_EMAIL": s.author_email,
            "GIT_COMMITTER_NAME": s.author_name,
            "GIT_COMMITTER_EMAIL": s.author_email,
            "GIT_TERMINAL_PROMPT": "0",
        }
        try:
            done = subprocess.run(
                ["git", *args],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=s.timeout_seconds,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DeployError(f"git {args[0]} took longer than {s.timeout_seconds:g} s") from None
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise DeployError(f"git {args[0]} failed: {detail[-1] if detail else done.returncode}")
        return done.stdout.strip()

    def _with_clone(self, work: Callable[[Path], T]) -> T:
        with tempfile.TemporaryDirectory(prefix="meshclaw-deploy-") as scratch:
            clone = Path(scratch) / "repo"
            self._git(None, "clone", "--quiet", self.settings.repo, str(clone))
            return work(clone)

    def _with_mirror(self, work: Callable[[Path], T]) -> T:
        """``work`` on this process's bare mirror of the repository: cloned at the first
        read, fetched (pruned) before every later one, so a read sees the remote as it is
        now without copying it again. One read at a time (a fetch rewrites refs)."""
        with self._mirror_lock:
            if self._mirror_dir is None:
                scratch = tempfile.TemporaryDirectory(prefix="meshclaw-deploy-mirror-")
                try:
                    mirror = Path(scratch.name) / "repo.git"
                    self._git(None, "clone", "--quiet", "--mirror", self.settings.repo, str(mirror))
                except BaseException:
                    scratch.cleanup()
                    raise
                self._mirror_dir = scratch
            else:
                mirror = Path(self._mirror_dir.name) / "repo.git"
                self._git(mirror, "fetch", "--quiet", "--prune", "origin")
            return work(mirror)

    def log(self, limit: int) -> list[dict[str, str]]:
        def work(clone: Path) -> list[dict[str, str]]:
            # --topo-order: a change before what it built on, even when both were made in
            # the same second (date order alone leaves such ties to chance).
            out = self._git(
                clone, "log", "--topo-order", f"-{limit}", "--format=%H%x1f%s%x1f%an%x1f%aI",
                self.settings.branch,
            )  # fmt: skip
            commits = []
            for line in filter(None, out.splitlines()):
                sha, subject, author, date = line.split("\x1f")
                commits.append({"commit": sha, "subject": subject, "author": author, "date": date})
            return commits

        return self._with_mirror(work)

    def open_change(self, branch: str, title: str, files: dict[str, str]) -> dict[str, Any]:
        def work(clone: Path) -> dict[str, Any]:
            remote = self._git(clone, "ls-remote", "--heads", "origin", branch)
            if remote:
                return {"branch": branch, "commit": remote.split()[0], "duplicate": True}
            self._git(clone, "checkout", "--quiet", "-b", branch, f"origin/{self.settings.branch}")
            for path, content in files.items():
                target = clone / _relative(path)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
                self._git(clone, "add", "--", _relative(path))
            if not self._git(clone, "status", "--porcelain"):
                raise DeployError("the change is empty: the files already have that content")
            self._git(clone, "commit", "--quiet", "-m", title)
            self._git(clone, "push", "--quiet", "origin", branch)
            commit = self._git(clone, "rev-parse", "HEAD")
            return {"branch": branch, "commit": commit, "files": sorted(files), "duplicate": False}

        return self._with_clone(work)

    def merge(self, branch: str) -> dict[str, Any]:
        main = self.settings.branch

        def work(clone: Path) -> dict[str, Any]:
            if not self._git(clone, "ls-remote", "--heads", "origin", branch):
                raise DeployError(f"no branch {branch!r}")
            self._git(clone, "checkout", "--quiet", main)
            head = self._git(clone, "rev-parse", f"origin/{branch}")
            merged = self._git(clone, "branch", "--quiet", "-r", "--contains", head)
            if f"origin/{main}" in merged.split():
                return {
                    "branch": branch,
                    "commit": self._git(clone, "rev-parse", "HEAD"),
                    "duplicate": True,
                }
            self._git(
                clone, "merge", "--quiet", "--no-ff", "-m", f"Merge {branch}", f"origin/{branch}"
            )
            self._git(clone, "push", "--quiet", "origin", main)
            return {
                "branch": branch,
                "commit": self._git(clone, "rev-parse", "HEAD"),
                "duplicate": False,
            }

        return self._with_clone(work)

    def head(self) -> str:
        out = self._git(None, "ls-remote", self.settings.repo, f"refs/heads/{self.settings.branch}")
        if not out:
            raise DeployError(f"the repository has no branch {self.settings.branch!r}")
        return out.split()[0]

    def reverted_by(self, commit: str) -> str | None:
        """The commit on the deployed branch that reverts ``commit`` (``git revert``'s
        "This reverts commit <sha>." line), if any: a rollback after the fact."""
        if not SHA.match(commit):
            return None

        def work(clone: Path) -> str | None:
            found = self._git(
                clone, "log", "-n", "1", "--format=%H", "--fixed-strings",
                f"--grep=This reverts commit {commit}", self.settings.branch,
            )  # fmt: skip
            return found or None

        return self._with_mirror(work)

    def revert(self, commit: str | None) -> dict[str, Any]:
        main = self.settings.branch

        def work(clone: Path) -> dict[str, Any]:
            self._git(clone, "checkout", "--quiet", main)
            target = commit or self._git(clone, "rev-parse", "HEAD")
            if not SHA.match(target):
                raise DeployError(f"not a commit SHA: {target!r}")
            parents = self._git(clone, "rev-list", "--parents", "-n", "1", target).split()
            args = ["revert", "--no-edit"] + (["-m", "1"] if len(parents) > 2 else [])
            self._git(clone, *args, target)
            self._git(clone, "push", "--quiet", "origin", main)
            return {"reverted": target, "commit": self._git(clone, "rev-parse", "HEAD")}

        return self._with_clone(work)


class Pipeline:
    def __init__(self, settings: DeploySettings) -> None:
        self.settings = settings
        self.base = settings.pipeline_url.rstrip("/")

    def _client(self) -> httpx.AsyncClient:
        token = self.settings.pipeline_token
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
        return httpx.AsyncClient(headers=headers, timeout=self.settings.timeout_seconds)

    async def _send(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            async with self._client() as client:
                response = await client.request(method, f"{self.base}{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise DeployError(
                f"cannot reach the pipeline at {self.base}: {type(exc).__name__}"
            ) from None
        if response.status_code in (401, 403):
            raise DeployError(f"the pipeline at {self.base} refused the credentials")
        if response.status_code == 404:
            raise DeployError(f"the pipeline has no {path}")
        if response.status_code >= 400:
            raise DeployError(f"the pipeline answered {response.status_code}")
        data: dict[str, Any] = response.json()
        return data

    async def trigger(self, ref: str, commit: str) -> dict[str, Any]:
        return await self._send("POST", "/pipelines", json={"ref": ref, "commit": commit})

    async def status(self, pipeline_id: str) -> dict[str, Any]:
        return await self._send("GET", f"/pipelines/{pipeline_id}")


def _key(ctx: Context[Any, Any]) -> str | None:
    meta = ctx.request_context.meta or {}
    key = meta.get(IDEMPOTENCY_META_KEY) if isinstance(meta, dict) else None
    return key if isinstance(key, str) else None


async def _run(call: Callable[[], T]) -> T:
    return await anyio.to_thread.run_sync(call)


def _pipeline_evidence(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "pipeline_id": str(run.get("id")),
        "status": run.get("status"),
        "commit": run.get("commit"),
    }


def build(settings: DeploySettings | None = None) -> MCPServer:
    cfg = settings or DeploySettings()  # read from the environment
    repo, pipeline = Repo(cfg), Pipeline(cfg)
    server = MCPServer(
        "meshclaw-deploy",
        instructions="Code changes in a git repository and the pipeline that deploys them.",
        log_level="WARNING",
    )

    @server.tool(description="The latest commits on the deployed branch.", annotations=READ)
    async def list_changes(limit: int = 10) -> dict[str, Any]:
        return {
            "branch": cfg.branch,
            "commits": await _run(partial(repo.log, max(1, min(limit, 100)))),
        }

    @server.tool(
        description="Open a change: a new branch with these files (path -> full content).",
        annotations=WRITE,
    )
    async def open_change(
        title: str, files: dict[str, str], ctx: Context[Any, Any]
    ) -> dict[str, Any]:
        if not files:
            raise DeployError("a change needs at least one file")
        for path in files:
            _relative(path)
        key = _key(ctx)
        suffix = key[-8:] if key else os.urandom(4).hex()
        branch = f"meshclaw/{_slug(title)}-{suffix}"
        return {"evidence": await _run(partial(repo.open_change, branch, title, files))}

    @server.tool(description="Merge a change's branch into the deployed branch.", annotations=WRITE)
    async def merge_change(branch: str) -> dict[str, Any]:
        return {"evidence": await _run(partial(repo.merge, branch))}

    @server.tool(description="Run the pipeline for the deployed branch's head.", annotations=WRITE)
    async def trigger_pipeline() -> dict[str, Any]:
        commit = await _run(repo.head)
        return {"evidence": _pipeline_evidence(await pipeline.trigger(cfg.branch, commit))}

    @server.tool(
        description="A pipeline run's status, and the commit that rolled its commit back "
        "(reverted_by), if one did.",
        annotations=READ,
    )
    async def pipeline_status(pipeline_id: str) -> dict[str, Any]:
        run = await pipeline.status(pipeline_id)
        commit = run.get("commit")
        rolled_back = await _run(partial(repo.reverted_by, commit)) if commit else None
        return run | ({"reverted_by": rolled_back} if rolled_back else {})

    @server.tool(
        description="Roll back: revert a commit (default: the latest) and run the pipeline.",
        annotations=DESTRUCTIVE,
    )
    async def rollback(commit: str | None = None) -> dict[str, Any]:
        reverted = await _run(partial(repo.revert, commit))
        run = await pipeline.trigger(cfg.branch, reverted["commit"])
        return {"evidence": reverted | _pipeline_evidence(run)}

    return server
