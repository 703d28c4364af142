"""The Jira fake's search: Cloud's enhanced ``/search/jql`` (and ``approximate-count``),
Data Center's ``/search``, each answering the other flavour as the real one does (410 Gone
on Cloud's removed ``/search``; 404 for ``/search/jql`` on Data Center)."""

from __future__ import annotations

from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from meshclaw.connectors.fakes._jira_http import (
    GONE,
    api_url,
    body_of,
    caller,
    count,
    error,
    expansions,
    refused,
    role,
    wanted_fields,
)
from meshclaw.connectors.fakes._jira_jql import JqlError, Query, matches, parse
from meshclaw.connectors.fakes._jira_state import API, CATEGORIES, JiraIssue, JiraState, JiraUser


def _sort_key(name: str, issue: JiraIssue) -> tuple[str, int]:
    """What ``ORDER BY name`` compares (the key sorts by project, then number)."""
    if name in ("key", "issuekey"):
        return issue.project, issue.id
    return str(getattr(issue, name, "") or ""), issue.id


def search_routes(state: JiraState) -> list[Route]:
    def query_of(jql: str) -> Query | JSONResponse:
        try:
            query = parse(jql)
        except JqlError as exc:
            return error(400, str(exc))
        for clause in query.clauses:
            value = clause.value or ""
            known: list[str] = []
            if clause.field == "status":
                known = list(state.statuses)
            elif clause.field == "statuscategory":
                known = [*CATEGORIES, *(c[1] for c in CATEGORIES.values())]
            elif clause.field == "project":
                known = list(state.projects)
            elif clause.field == "resolution":
                known = [*state.resolutions, "Unresolved", "EMPTY"]
            if (
                clause.value is not None
                and known
                and value.lower() not in {k.lower() for k in known}
            ):
                return error(400, f"The value '{value}' does not exist for the field "
                                   f"'{clause.field}'.")  # fmt: skip
        return query

    def run(user: JiraUser, query: Query) -> list[JiraIssue]:
        found = [
            issue for issue in state.issues.values()
            if role(state, user, issue.project) and matches(query, partial(state.value_of, issue))
        ]  # fmt: skip
        for name, descending in reversed(query.order or (("key", True),)):
            found.sort(key=partial(_sort_key, name), reverse=descending)
        return found

    async def params(request: Request) -> dict[str, Any] | None:
        if request.method == "GET":
            return dict(request.query_params)
        return await body_of(request)

    async def search_jql(request: Request) -> JSONResponse:
        if state.flavor != "cloud":
            return error(404, "null for uri: " + str(request.url))
        user = caller(state, request)
        if user is None:
            return refused()
        given = await params(request)
        if given is None:
            return error(400, "Can not deserialize the request body.")
        query = query_of(str(given.get("jql") or ""))
        if isinstance(query, JSONResponse):
            return query
        if not query.bounded:
            return error(400, "Unbounded JQL queries are not allowed here. Please add a search "
                               "restriction to your query.")  # fmt: skip
        limit = count(given.get("maxResults"), 50)
        if limit is None:
            return error(400, "maxResults: not a number")
        limit = max(1, min(limit, 5000))
        token = str(given.get("nextPageToken") or "")
        start = int(token.removeprefix("page-")) if token.startswith("page-") else 0
        found = run(user, query)
        page = found[start : start + limit]
        wanted = wanted_fields(given.get("fields"), {"id"})
        expand = expansions(given.get("expand"))
        issues = []
        for issue in page:
            shaped = state.issue_json(issue, api_url(request), wanted, expand)
            issues.append({"id": shaped["id"]} if wanted == {"id"} else shaped)
        answer: dict[str, Any] = {"issues": issues, "isLast": start + limit >= len(found)}
        if not answer["isLast"]:
            answer["nextPageToken"] = f"page-{start + limit}"
        return JSONResponse(answer)

    async def approximate_count(request: Request) -> JSONResponse:
        if state.flavor != "cloud":
            return error(404, "null for uri: " + str(request.url))
        user = caller(state, request)
        if user is None:
            return refused()
        query = query_of(str((await body_of(request) or {}).get("jql") or ""))
        if isinstance(query, JSONResponse):
            return query
        return JSONResponse({"count": len(run(user, query))})

    async def search_legacy(request: Request) -> JSONResponse:
        if state.flavor == "cloud":
            return error(410, GONE)
        user = caller(state, request)
        if user is None:
            return refused()
        given = await params(request)
        if given is None:
            return error(400, "Can not deserialize the request body.")
        query = query_of(str(given.get("jql") or ""))
        if isinstance(query, JSONResponse):
            return query
        start, limit = count(given.get("startAt"), 0), count(given.get("maxResults"), 50)
        if start is None or limit is None:
            return error(400, "startAt and maxResults must be numbers")
        start, limit = max(0, start), max(0, min(limit, 1000))
        found = run(user, query)
        wanted = wanted_fields(given.get("fields"), None)
        expand = expansions(given.get("expand"))
        return JSONResponse({
            "expand": "schema,names", "startAt": start, "maxResults": limit, "total": len(found),
            "issues": [state.issue_json(i, api_url(request), wanted, expand)
                       for i in found[start:start + limit]],
        })  # fmt: skip

    return [
        Route(f"{API}/search/jql", search_jql, methods=["GET", "POST"]),
        Route(f"{API}/search/approximate-count", approximate_count, methods=["POST"]),
        Route(f"{API}/search", search_legacy, methods=["GET", "POST"]),
    ]
