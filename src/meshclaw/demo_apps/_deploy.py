"""Deploy for the demo: a local bare git repository and a small CI/CD pipeline service.

The repository is real ``git`` (``<demo home>/deploy/app.git``, made on first start with
one commit on ``main``). The pipeline speaks the REST shape the built-in ``deploy``
server expects: ``POST /pipelines`` with ``{"ref", "commit"}`` "builds" by checking that
the commit exists in the repository and answers the run; ``GET /pipelines/{id}``
reports it. Runs are kept in ``pipelines.json`` across restarts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from meshclaw._loopback import LoopbackServer
from meshclaw.demo_apps._base import (
    PortBook,
    Secrets,
    StandIn,
    StandInError,
    read_json,
    write_json,
)

AUTHOR = {
    "GIT_AUTHOR_NAME": "Alice",
    "GIT_AUTHOR_EMAIL": "alice@acme.example",
    "GIT_COMMITTER_NAME": "Alice",
    "GIT_COMMITTER_EMAIL": "alice@acme.example",
}


def _git(cwd: Path | None, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=os.environ | AUTHOR | {"GIT_TERMINAL_PROMPT": "0"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StandInError(f"git {args[0]} failed: {exc}") from None
    if done.returncode != 0:
        raise StandInError(f"git {args[0]} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout.strip()


def _make_repo(bare: Path) -> None:
    """A bare repository with one commit on ``main``: the app the demo deploys."""
    bare.parent.mkdir(parents=True, exist_ok=True)
    _git(None, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    with tempfile.TemporaryDirectory(prefix="meshclaw-demo-repo-") as scratch:
        work = Path(scratch) / "app"
        _git(None, "clone", "--quiet", str(bare), str(work))
        _git(work, "checkout", "--quiet", "-b", "main")
        (work / "README.md").write_text("# acme web app\n\nDeployed by the pipeline.\n")
        (work / "VERSION").write_text("1.0.0\n")
        _git(work, "add", "README.md", "VERSION")
        _git(work, "commit", "--quiet", "-m", "acme web app 1.0.0")
        _git(work, "push", "--quiet", "origin", "main")


class DeployApp:
    """The deploy stand-in: the repository and the pipeline service (in-process)."""

    name = "deploy"

    def __init__(self, folder: Path, ports: PortBook, secrets: Secrets) -> None:
        self._folder = folder / "deploy"
        self._ports = ports
        self._token = secrets.get("pipeline-token")
        self._runs_file = self._folder / "pipelines.json"
        self._runs: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: LoopbackServer | None = None
        self.repo = (self._folder / "app.git").resolve()

    def start(self) -> StandIn:
        if shutil.which("git") is None:
            raise StandInError("git is not installed (the deploy stand-in is a git repository)")
        if not (self.repo / "HEAD").exists():
            _make_repo(self.repo)
        runs = read_json(self._runs_file).get("runs")
        self._runs = list(runs) if isinstance(runs, list) else []
        server = LoopbackServer(self._app(), port=self._ports.port(self.name), name="pipeline")
        self._server = server.start()
        return StandIn(
            connector=self.name,
            title="git repository + pipeline service",
            address=server.url,
            detail=f"repository {self.repo}, branch main",
            env={
                "MESHCLAW_DEPLOY_REPO": str(self.repo),
                "MESHCLAW_DEPLOY_BRANCH": "main",
                "MESHCLAW_DEPLOY_PIPELINE_URL": server.url,
                "MESHCLAW_DEPLOY_AUTHOR_NAME": "MeshClaw agent",
                "MESHCLAW_DEPLOY_AUTHOR_EMAIL": "agent@acme.example",
            },
            credential={"token": self._token},
            credential_env={"MESHCLAW_DEPLOY_PIPELINE_TOKEN": "token"},
        )

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.stop()
        self._server = None
        with self._lock:
            write_json(self._runs_file, {"runs": self._runs})

    def _app(self) -> Starlette:
        def authorised(request: Request) -> bool:
            return request.headers.get("authorization") == f"Bearer {self._token}"

        async def create(request: Request) -> JSONResponse:
            if not authorised(request):
                return JSONResponse({"error": "unauthorised"}, status_code=401)
            body = await request.json()
            commit = str(body.get("commit") or "")
            known = bool(commit) and (
                subprocess.run(
                    ["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=self.repo, check=False
                ).returncode
                == 0
            )
            with self._lock:
                run = {
                    "id": len(self._runs) + 1,
                    "ref": str(body.get("ref") or ""),
                    "commit": commit,
                    "status": "success" if known else "failed",
                    "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                }
                self._runs.append(run)
            return JSONResponse(run, status_code=201)

        async def show(request: Request) -> JSONResponse:
            if not authorised(request):
                return JSONResponse({"error": "unauthorised"}, status_code=401)
            index = int(request.path_params["id"]) - 1
            with self._lock:
                if not 0 <= index < len(self._runs):
                    return JSONResponse({"error": "not found"}, status_code=404)
                return JSONResponse(self._runs[index])

        return Starlette(
            routes=[
                Route("/pipelines", create, methods=["POST"]),
                Route("/pipelines/{id:int}", show, methods=["GET"]),
            ]
        )
