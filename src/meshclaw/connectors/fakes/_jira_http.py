"""The Jira fake's request side: who is calling, what they may see, Jira's error body and
the query parameters every endpoint shares."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from meshclaw.connectors.fakes._jira_state import JiraIssue, JiraState, JiraUser

GONE = ("The requested API has been removed. Please migrate to the /rest/api/3/search/jql "
        "API. A full migration guideline is available at "
        "https://developer.atlassian.com/changelog/#CHANGE-2046")  # fmt: skip
HIDDEN = "Issue does not exist or you do not have permission to see it."


def error(
    status: int,
    *messages: str,
    errors: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Jira's error body: ``{"errorMessages": [...], "errors": {field: message}}``."""
    return JSONResponse(
        {"errorMessages": list(messages), "errors": errors or {}},
        status_code=status,
        headers=headers,
    )


def api_url(request: Request) -> str:
    """The server's own base URL, for ``self`` links."""
    return str(request.base_url).rstrip("/")


def caller(state: JiraState, request: Request) -> JiraUser | None:
    """The user the request authenticates as (basic or bearer), or None."""
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and secret:
        return next((u for u in state.users.values() if u.pat == secret), None)
    if scheme.lower() != "basic":
        return None
    try:
        login, _, token = base64.b64decode(secret, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return next(
        (u for u in state.users.values()
         if login in (u.name, u.email) and u.api_token and u.api_token == token),
        None,
    )  # fmt: skip


def refused() -> JSONResponse:
    """Jira's 401."""
    return error(
        401,
        "You are not authenticated. Authentication required to perform this operation.",
        headers={"X-Seraph-LoginReason": "AUTHENTICATED_FAILED",
                 "WWW-Authenticate": 'Basic realm="protected-area"'},
    )  # fmt: skip


def role(state: JiraState, user: JiraUser, project: str) -> str | None:
    found = state.projects.get(project)
    return found.roles.get(user.name) if found is not None else None


def visible(state: JiraState, user: JiraUser, key: str) -> JiraIssue | None:
    issue = state.issues.get(key.upper()) or next(
        (i for i in state.issues.values() if str(i.id) == key), None
    )
    return issue if issue is not None and role(state, user, issue.project) else None


async def body_of(request: Request) -> dict[str, Any] | None:
    try:
        found = await request.json()
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def wanted_fields(raw: Any, default: set[str] | None) -> set[str] | None:
    names = raw if isinstance(raw, list) else str(raw).split(",") if raw else None
    if names is None:
        return default
    picked = {str(n).strip() for n in names if str(n).strip()}
    return None if picked & {"*all", "*navigable"} else picked


def count(raw: Any, default: int) -> int | None:
    try:
        return int(raw) if raw not in (None, "") else default
    except (TypeError, ValueError):
        return None


def expansions(raw: Any) -> set[str]:
    names = raw if isinstance(raw, list) else str(raw or "").split(",")
    return {str(n).strip() for n in names if str(n).strip()}


def may_write(state: JiraState, user: JiraUser, project: str) -> bool:
    """Only a ``member`` writes (comments, transitions); ``browse`` reads."""
    return role(state, user, project) == "member"


def issue_request(state: JiraState, request: Request) -> tuple[JiraUser, JiraIssue] | JSONResponse:
    """The preamble of every ``/issue/{key}...`` endpoint: the caller (else a 401) and the
    issue they can see (else Jira's 404, which does not tell hidden from missing)."""
    user = caller(state, request)
    if user is None:
        return refused()
    issue = visible(state, user, request.path_params["key"])
    if issue is None:
        return error(404, HIDDEN)
    return user, issue
