"""Pull requests in the GitHub fake, in GitHub's REST shapes.

``GET/POST /repos/{o}/{r}/pulls``, ``GET .../pulls/{n}``, ``PUT .../pulls/{n}/merge``
(200 ``{sha, merged, message}``; 405 when it cannot be merged, 409 when ``sha`` is not
the head any more, 422 for an unknown ``merge_method``) and ``GET/POST
.../pulls/{n}/reviews`` (``APPROVE``, ``REQUEST_CHANGES``, ``COMMENT``; an author cannot
approve their own pull request: 422).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from meshclaw.connectors.fakes.github import FakeIssue, GitHubState, _error, _now

Login = Callable[[Request], str | None]
Find = Callable[[Request], tuple[str, FakeIssue | None] | None]
REVIEW_STATES = {
    "APPROVE": "APPROVED",
    "REQUEST_CHANGES": "CHANGES_REQUESTED",
    "COMMENT": "COMMENTED",
}


def pull_json(state: GitHubState, repo: str, issue: FakeIssue, api: str) -> dict[str, Any]:
    pull = issue.pull_request or {}
    merged_by = pull.get("merged_by")
    return {
        "number": issue.number,
        "title": issue.title,
        "body": issue.body,
        "state": issue.state,
        "draft": pull.get("draft", False),
        "user": {"login": issue.user},
        "head": {"ref": pull.get("head"), "sha": pull.get("head_sha")},
        "base": {"ref": pull.get("base")},
        "merged": bool(pull.get("merged")),
        "mergeable": pull.get("mergeable") if not pull.get("merged") else None,
        "merged_by": {"login": merged_by} if merged_by else None,
        "merged_at": pull.get("merged_at"),
        "merge_commit_sha": pull.get("merge_commit_sha"),
        "html_url": f"{state.web_url}/{repo}/pull/{issue.number}",
        "url": f"{api}/repos/{repo}/pulls/{issue.number}",
        "created_at": issue.created_at,
        "updated_at": issue.updated_at,
        "closed_at": issue.updated_at if issue.state == "closed" else None,
    }


def pull_routes(state: GitHubState, login: Login, find: Find) -> list[Route]:
    def api(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def pull_of(request: Request) -> tuple[str, FakeIssue] | Response:
        if login(request) is None:
            return _error(401, "Bad credentials")
        found = find(request)
        if found is None or found[1] is None or found[1].pull_request is None:
            return _error(404, "Not Found")
        return found[0], found[1]

    async def pulls(request: Request) -> Response:
        user = login(request)
        if user is None:
            return _error(401, "Bad credentials")
        found = find(request)
        if found is None:
            return _error(404, "Not Found")
        repo = found[0]
        if request.method == "GET":
            wanted = request.query_params.get("state", "open")
            listed = [
                i
                for i in state.repos[repo]
                if i.pull_request is not None and wanted in ("all", i.state)
            ]
            per_page = int(request.query_params.get("per_page", 30))
            return JSONResponse(
                [pull_json(state, repo, i, api(request)) for i in reversed(listed)][:per_page]
            )
        body = await request.json()
        missing = [f for f in ("title", "head", "base") if not str(body.get(f) or "").strip()]
        if missing:
            return _error(
                422,
                "Validation Failed",
                errors=[{"field": f, "code": "missing_field"} for f in missing],
            )
        issue = state.add_pull(
            repo,
            title=str(body["title"]),
            user=user,
            head=str(body["head"]),
            base=str(body["base"]),
            body=str(body.get("body") or ""),
        )
        return JSONResponse(pull_json(state, repo, issue, api(request)), status_code=201)

    async def pull(request: Request) -> Response:
        found = pull_of(request)
        if isinstance(found, Response):
            return found
        return JSONResponse(pull_json(state, *found, api(request)))

    async def merge(request: Request) -> Response:
        found = pull_of(request)
        if isinstance(found, Response):
            return found
        repo, issue = found
        user = login(request)
        body = await request.json() if await request.body() else {}
        method = body.get("merge_method", "merge")
        if method not in ("merge", "squash", "rebase"):
            return _error(
                422, "Validation Failed", errors=[{"field": "merge_method", "code": "invalid"}]
            )
        with state.lock:
            pr = issue.pull_request
            assert pr is not None
            if issue.state != "open" or pr.get("merged") or not pr.get("mergeable", True):
                return _error(405, "Pull Request is not mergeable")
            if body.get("sha") and body["sha"] != pr.get("head_sha"):
                return _error(409, "Head branch was modified. Review and try the merge again.")
            sha = hashlib.sha1(f"{repo}:{issue.number}:{method}:merged".encode()).hexdigest()
            pr.update(merged=True, merged_by=user, merged_at=_now(), merge_commit_sha=sha)
            issue.state, issue.state_reason, issue.updated_at = "closed", None, _now()
        return JSONResponse(
            {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}
        )

    async def reviews(request: Request) -> Response:
        found = pull_of(request)
        if isinstance(found, Response):
            return found
        _, issue = found
        pr = issue.pull_request
        assert pr is not None
        if request.method == "GET":
            return JSONResponse(pr.get("reviews", []))
        user = login(request)
        body = await request.json()
        event = body.get("event")
        if event not in REVIEW_STATES:
            return _error(422, "Validation Failed", errors=[{"field": "event", "code": "invalid"}])
        if user == issue.user and event != "COMMENT":
            verb = "approve" if event == "APPROVE" else "request changes on"
            return _error(
                422, "Unprocessable Entity", errors=[f"Can not {verb} your own pull request"]
            )
        with state.lock:
            review = {
                "id": state.next_comment_id(),
                "user": {"login": user},
                "body": str(body.get("body") or ""),
                "state": REVIEW_STATES[event],
                "commit_id": pr.get("head_sha"),
                "submitted_at": _now(),
            }
            pr.setdefault("reviews", []).append(review)
        return JSONResponse(review)

    prefix = "/repos/{owner}/{repo}/pulls"
    return [
        Route(prefix, pulls, methods=["GET", "POST"]),
        Route(prefix + "/{number:int}", pull, methods=["GET"]),
        Route(prefix + "/{number:int}/merge", merge, methods=["PUT"]),
        Route(prefix + "/{number:int}/reviews", reviews, methods=["GET", "POST"]),
    ]
