"""A small CI/CD pipeline service for the deploy server's tests: a real HTTP server.

``POST /pipelines`` with ``{"ref", "commit"}`` starts a run (it "builds" by checking
that the commit exists in the repository), ``GET /pipelines/{id}`` reports it. A bearer
token is required when one is set.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from meshclaw._loopback import LoopbackServer


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Dev", "-c", "user.email=dev@acme.test", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def seeded_repo(folder: Path, name: str, path: str, content: str, message: str) -> Path:
    """A bare repository ``folder/name`` with one commit on main adding ``path``."""
    bare = folder / name
    git(folder, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    work = folder / "seed"
    git(folder, "clone", "--quiet", str(bare), str(work))
    (work / path).write_text(content)
    git(work, "add", path)
    git(work, "commit", "--quiet", "-m", message)
    git(work, "push", "--quiet", "origin", "HEAD:main")
    return bare


@dataclass
class PipelineService:
    repo: Path
    token: str | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _loopback: LoopbackServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _app(self) -> Starlette:
        def authorised(request: Request) -> bool:
            return (
                self.token is None or request.headers.get("authorization") == f"Bearer {self.token}"
            )

        async def create(request: Request) -> JSONResponse:
            if not authorised(request):
                return JSONResponse({"error": "unauthorised"}, status_code=401)
            body = await request.json()
            known = (
                subprocess.run(
                    ["git", "cat-file", "-e", f"{body['commit']}^{{commit}}"],
                    cwd=self.repo,
                    check=False,
                ).returncode
                == 0
            )
            run = {
                "id": len(self.runs) + 1,
                "ref": body["ref"],
                "commit": body["commit"],
                "status": "success" if known else "failed",
            }
            self.runs.append(run)
            return JSONResponse(run, status_code=201)

        async def show(request: Request) -> JSONResponse:
            if not authorised(request):
                return JSONResponse({"error": "unauthorised"}, status_code=401)
            index = int(request.path_params["id"]) - 1
            if not 0 <= index < len(self.runs):
                return JSONResponse({"error": "not found"}, status_code=404)
            return JSONResponse(self.runs[index])

        return Starlette(
            routes=[
                Route("/pipelines", create, methods=["POST"]),
                Route("/pipelines/{id:int}", show, methods=["GET"]),
            ]
        )

    def start(self) -> PipelineService:
        loopback = LoopbackServer(self._app(), name="pipeline service")
        self._loopback = loopback.start()
        self.port = loopback.port
        return self

    def stop(self) -> None:
        if self._loopback is not None:
            self._loopback.stop()
            self._loopback = None
