"""A protocol-level fake of GitHub's REST API for issues: a real HTTP server on loopback.

Shapes follow GitHub's published REST API: ``POST/GET/PATCH
/repos/{owner}/{repo}/issues[/{number}]``, ``GET/POST .../issues/{number}/comments``
and ``GET /search/issues?q=``; pull requests (``_github_pulls``): ``GET/POST .../pulls``,
``GET .../pulls/{number}``, ``PUT .../pulls/{number}/merge``, ``GET/POST
.../pulls/{number}/reviews``. As on GitHub, a pull request is also an issue (one
numbering, its issue carries ``pull_request``). Errors are GitHub's too: 401 ``Bad
credentials``, 404 ``Not Found``, 405 ``Pull Request is not mergeable``, 409 (head
moved), 422 ``Validation Failed``. The search understands ``repo:o/r``,
``is:issue``/``is:pr``, ``is:open``/``is:closed``/``is:merged``, ``label:X`` and free
words (in title or body).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from meshclaw._loopback import ServedFake


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FakeIssue:
    number: int
    title: str
    body: str
    user: str
    labels: list[str] = field(default_factory=list)
    state: str = "open"
    state_reason: str | None = None
    comments: list[dict[str, Any]] = field(default_factory=list)
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)
    pull_request: dict[str, Any] | None = None
    """Set on a pull request: ``head``, ``base``, ``head_sha``, ``draft``, ``mergeable``,
    ``merged``, ``merged_by``, ``merged_at``, ``merge_commit_sha``, ``reviews``."""


class GitHubState:
    """Repositories' issues and the tokens that may use them."""

    def __init__(self, *, web_url: str = "https://github.example") -> None:
        self.web_url = web_url
        self.tokens: dict[str, str] = {}
        self.repos: dict[str, list[FakeIssue]] = {}
        self.lock = threading.Lock()
        self._comment_ids = 1000

    def add_token(self, token: str, login: str) -> None:
        self.tokens[token] = login

    def add_repo(self, full_name: str) -> None:
        self.repos.setdefault(full_name, [])

    def add_pull(
        self, repo: str, *, title: str, user: str, head: str, base: str = "main", body: str = ""
    ) -> FakeIssue:
        """A new open pull request (what ``POST .../pulls`` makes)."""
        with self.lock:
            listed = self.repos[repo]
            number = len(listed) + 1
            issue = FakeIssue(
                number=number, title=title, body=body, user=user,
                pull_request={
                    "head": head, "base": base, "draft": False, "mergeable": True,
                    "head_sha": hashlib.sha1(f"{repo}:{head}:{number}".encode()).hexdigest(),
                    "merged": False, "merged_by": None, "merged_at": None,
                    "merge_commit_sha": None, "reviews": [],
                },
            )  # fmt: skip
            listed.append(issue)
        return issue

    def issue_json(self, repo: str, issue: FakeIssue, api: str) -> dict[str, Any]:
        pull = (
            {"pull_request": {"url": f"{api}/repos/{repo}/pulls/{issue.number}",
                              "merged_at": issue.pull_request.get("merged_at")}}
            if issue.pull_request is not None else {}
        )  # fmt: skip
        return pull | {
            "number": issue.number,
            "title": issue.title,
            "body": issue.body,
            "state": issue.state,
            "state_reason": issue.state_reason,
            "labels": [{"name": name} for name in issue.labels],
            "user": {"login": issue.user},
            "comments": len(issue.comments),
            "html_url": f"{self.web_url}/{repo}/issues/{issue.number}",
            "url": f"{api}/repos/{repo}/issues/{issue.number}",
            "repository_url": f"{api}/repos/{repo}",
            "created_at": issue.created_at,
            "updated_at": issue.updated_at,
            "closed_at": issue.updated_at if issue.state == "closed" else None,
        }

    def next_comment_id(self) -> int:
        self._comment_ids += 1
        return self._comment_ids


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    body = {"message": message, "documentation_url": "https://docs.github.com/rest"} | extra
    return JSONResponse(body, status_code=status)


def _app(state: GitHubState) -> Starlette:
    from meshclaw.connectors.fakes._github_pulls import pull_routes

    def login(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        token = header.split(" ", 1)[1] if " " in header else ""
        return state.tokens.get(token)

    def api(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def find(request: Request) -> tuple[str, FakeIssue | None] | None:
        repo = f"{request.path_params['owner']}/{request.path_params['repo']}"
        if repo not in state.repos:
            return None
        number = request.path_params.get("number")
        if number is None:
            return repo, None
        issue = next((i for i in state.repos[repo] if i.number == int(number)), None)
        return (repo, issue) if issue is not None else None

    async def issues(request: Request) -> JSONResponse:
        user = login(request)
        if user is None:
            return _error(401, "Bad credentials")
        found = find(request)
        if found is None:
            return _error(404, "Not Found")
        repo, _ = found
        if request.method == "GET":
            listed = [i for i in state.repos[repo] if i.state == "open"]
            return JSONResponse([state.issue_json(repo, i, api(request)) for i in reversed(listed)])
        body = await request.json()
        title = str(body.get("title") or "").strip()
        if not title:
            return _error(
                422, "Validation Failed", errors=[{"field": "title", "code": "missing_field"}]
            )
        with state.lock:
            issue = FakeIssue(
                number=len(state.repos[repo]) + 1,
                title=title,
                body=str(body.get("body") or ""),
                user=user,
                labels=[str(x) for x in body.get("labels") or []],
            )
            state.repos[repo].append(issue)
        return JSONResponse(state.issue_json(repo, issue, api(request)), status_code=201)

    async def issue(request: Request) -> JSONResponse:
        if login(request) is None:
            return _error(401, "Bad credentials")
        found = find(request)
        if found is None or found[1] is None:
            return _error(404, "Not Found")
        repo, item = found[0], found[1]
        if request.method == "PATCH":
            body = await request.json()
            if "state" in body:
                if body["state"] not in ("open", "closed"):
                    return _error(
                        422, "Validation Failed", errors=[{"field": "state", "code": "invalid"}]
                    )
                item.state = body["state"]
                item.state_reason = body.get("state_reason") or (
                    "completed" if item.state == "closed" else "reopened"
                )
            for key in ("title", "body"):
                if key in body:
                    setattr(item, key, str(body[key]))
            if "labels" in body:
                item.labels = [str(x) for x in body["labels"]]
            item.updated_at = _now()
        return JSONResponse(state.issue_json(repo, item, api(request)))

    async def comments(request: Request) -> JSONResponse:
        user = login(request)
        if user is None:
            return _error(401, "Bad credentials")
        found = find(request)
        if found is None or found[1] is None:
            return _error(404, "Not Found")
        repo, item = found[0], found[1]
        if request.method == "GET":
            return JSONResponse(item.comments)
        text = str((await request.json()).get("body") or "")
        if not text:
            return _error(
                422, "Validation Failed", errors=[{"field": "body", "code": "missing_field"}]
            )
        comment_id = state.next_comment_id()
        comment = {
            "id": comment_id,
            "body": text,
            "user": {"login": user},
            "html_url": f"{state.web_url}/{repo}/issues/{item.number}#issuecomment-{comment_id}",
            "created_at": _now(),
        }
        item.comments.append(comment)
        item.updated_at = _now()
        return JSONResponse(comment, status_code=201)

    async def search(request: Request) -> JSONResponse:
        if login(request) is None:
            return _error(401, "Bad credentials")
        terms = request.query_params.get("q", "").split()
        repos = [t[5:] for t in terms if t.startswith("repo:")]
        kinds = [t[3:] for t in terms if t in ("is:issue", "is:pr")]
        states = [t[3:] for t in terms if t.startswith("is:") and t[3:] not in ("issue", "pr")]
        labels = [t[6:] for t in terms if t.startswith("label:")]
        qualifiers = ("repo:", "is:", "label:", "in:", "state:", "type:")
        words = [t.strip('"').lower() for t in terms if not t.startswith(qualifiers)]
        items = []
        for repo, listed in state.repos.items():
            if repos and repo not in repos:
                continue
            for item in listed:
                text = f"{item.title}\n{item.body}".lower()
                if kinds and ("pr" if item.pull_request else "issue") not in kinds:
                    continue
                merged = bool(item.pull_request and item.pull_request.get("merged"))
                if any(s != item.state and not (s == "merged" and merged) for s in states):
                    continue
                if any(label not in item.labels for label in labels):
                    continue
                if all(word in text for word in words):
                    items.append(state.issue_json(repo, item, api(request)))
        per_page = int(request.query_params.get("per_page", 30))
        return JSONResponse(
            {"total_count": len(items), "incomplete_results": False, "items": items[:per_page]}
        )

    return Starlette(
        routes=[
            Route("/repos/{owner}/{repo}/issues", issues, methods=["GET", "POST"]),
            Route("/repos/{owner}/{repo}/issues/{number:int}", issue, methods=["GET", "PATCH"]),
            Route(
                "/repos/{owner}/{repo}/issues/{number:int}/comments",
                comments,
                methods=["GET", "POST"],
            ),
            Route("/search/issues", search, methods=["GET"]),
            *pull_routes(state, login, find),
        ]
    )


class GitHubFake(ServedFake):
    """Serves a ``GitHubState`` on loopback (port from the OS) in a background thread.
    ``port`` 0: a port from the OS (the demo asks for the one it used last time)."""

    name = "GitHub fake"

    def __init__(self, state: GitHubState | None = None, *, port: int = 0) -> None:
        super().__init__(port=port)
        self.state = state or GitHubState()

    def _app(self) -> Starlette:
        return _app(self.state)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
